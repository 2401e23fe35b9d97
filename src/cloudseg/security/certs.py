"""A private certificate authority and per-host certificates for the TLS link (`cloudseg certs`).

    cloudseg certs --out keys ca                                  # keys/ca.crt, keys/ca.key
    cloudseg certs --out keys host cloud --dns cloud.example.com --ip 203.0.113.7
    cloudseg certs --out keys host car1 --usage client            # keys/car1.crt, keys/car1.key

Every host gets an ECDSA P-256 key and a certificate signed by the CA, whose subject
alternative names are the host's name, its `--dns` names and its `--ip` addresses (what the
vehicle's gate checks the cloud against). `--usage` sets the extended key usage: `server` (the
cloud gate), `client` (a vehicle) or `both` (default). A client-only certificate cannot pose
as the cloud, even to a peer that checks the CA but not the host name.

Keys are written unencrypted with mode 0600; `ca.key` belongs offline (it signs new hosts).
Existing files are kept unless `--force`. Uses the `cryptography` package only (no `openssl`
command needed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CertError", "HostFiles", "main", "make_ca", "make_host"]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_DAYS = 3650
HOST_DAYS = 825  # the longest validity browsers and most TLS stacks accept for leaf certificates
USAGES = ("server", "client", "both")


class CertError(RuntimeError):
    """A certificate cannot be made (bad name or address, files exist, no CA); one line."""


@dataclass(frozen=True)
class HostFiles:
    cert: Path
    key: Path


def _crypto():
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:  # pragma: no cover - it is in requirements.txt
        raise CertError("the `cryptography` package is missing: pip install cryptography") from exc
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _check_free(paths: Sequence[Path], force: bool) -> None:
    if force:
        return
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise CertError(f"{', '.join(existing)} exist(s); use --force to replace")


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _new_key():
    _, _, _, ec, _, _ = _crypto()
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> bytes:
    _, _, serialization, _, _, _ = _crypto()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise CertError(f"--days must be >= 1, got {days}")
    now = dt.datetime.now(dt.timezone.utc)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)  # some clock skew


def make_ca(out: Path, name: str = "cloudseg CA", days: int = CA_DAYS, force: bool = False):
    """Write `out/ca.crt` and `out/ca.key` (a self-signed CA that signs host certificates only);
    returns their paths as HostFiles."""
    x509, hashes, _, _, _, NameOID = _crypto()
    files = HostFiles(out / CA_CERT, out / CA_KEY)
    _check_free((files.cert, files.key), force)
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start, end = _validity(days)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(files.key, _key_pem(key), private=True)
    _write(files.cert, cert.public_bytes(_crypto()[2].Encoding.PEM), private=False)
    return files


def _load_ca(ca_dir: Path):
    x509, _, serialization, _, _, _ = _crypto()
    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    if not cert_path.is_file() or not key_path.is_file():
        raise CertError(f"no CA in {ca_dir} (make one first: cloudseg certs --out {ca_dir} ca)")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return cert, key


def _check_name(name: str) -> None:
    if not name or any(c in name for c in "/\\ \t\n") or name in (".", "..") or name == "ca":
        raise CertError(f"bad host name {name!r} (a file name; not 'ca', no slashes or spaces)")


def make_host(
    out: Path,
    name: str,
    ips: Sequence[str] = (),
    dns: Sequence[str] = (),
    usage: str = "both",
    days: int = HOST_DAYS,
    ca_dir: Path | None = None,
    force: bool = False,
) -> HostFiles:
    """Write `out/NAME.crt` (signed by the CA in `ca_dir`, default `out`) and `out/NAME.key`.

    Subject alternative names: DNS `name` and `dns`, IP `ips`. `usage`: server, client or both.
    """
    x509, hashes, serialization, _, EKU, NameOID = _crypto()
    _check_name(name)
    if usage not in USAGES:
        raise CertError(f"usage must be one of {', '.join(USAGES)}, not {usage!r}")
    try:
        addresses = [ipaddress.ip_address(ip) for ip in ips]
    except ValueError as exc:
        raise CertError(f"--ip: {exc}") from exc
    files = HostFiles(out / f"{name}.crt", out / f"{name}.key")
    _check_free((files.cert, files.key), force)
    ca_cert, ca_key = _load_ca(ca_dir or out)
    key = _new_key()
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([name, *dns]):  # keep order, drop repeats
        try:
            names.append(x509.DNSName(host))
        except ValueError as exc:
            raise CertError(f"bad DNS name {host!r}: {exc}") from exc
    names += [x509.IPAddress(a) for a in addresses]
    ekus = {
        "server": [EKU.SERVER_AUTH],
        "client": [EKU.CLIENT_AUTH],
        "both": [EKU.SERVER_AUTH, EKU.CLIENT_AUTH],
    }[usage]
    start, end = _validity(days)
    end = min(end, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(files.key, _key_pem(key), private=True)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return files


def describe(cert_path: Path) -> str:
    """One line: subject, names, usages, validity of a certificate file."""
    x509, _, _, _, _, _ = _crypto()
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        names += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        usages = [getattr(u, "_name", u.dotted_string) for u in eku]
    except x509.ExtensionNotFound:
        usages = []
    return (
        f"{cert_path}: {cert.subject.rfc4514_string()}, issuer {cert.issuer.rfc4514_string()}, "
        f"names [{', '.join(names)}], usage [{', '.join(usages)}], "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cloudseg certs",
        description="Make the private CA and the per-host certificates of the TLS link "
        "(see docs/deployment.md, 'Encrypted, authenticated WAN link').",
        epilog="example: cloudseg certs --out keys ca; "
        "cloudseg certs --out keys host cloud --dns cloud.example.com --ip 203.0.113.7; "
        "cloudseg certs --out keys host car1 --usage client",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the files (the CA's)")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.add_argument("--days", type=int, help=f"validity (CA {CA_DAYS}, host {HOST_DAYS})")
    sub = p.add_subparsers(dest="what", required=True)
    ca = sub.add_parser("ca", help="make OUT/ca.crt and OUT/ca.key")
    ca.add_argument("--name", default="cloudseg CA", help="the CA's common name")
    host = sub.add_parser("host", help="make OUT/NAME.crt and OUT/NAME.key signed by the CA")
    host.add_argument("name", help="host name: file name, common name and first DNS name")
    host.add_argument("--ip", action="append", default=[], help="IP address (repeatable)")
    host.add_argument("--dns", action="append", default=[], help="DNS name (repeatable)")
    host.add_argument(
        "--usage", choices=USAGES, default="both", help="server (cloud), client (vehicle) or both"
    )
    host.add_argument("--ca", type=Path, help="folder holding ca.crt/ca.key (default: --out)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`cloudseg certs ...`: 0 on success, 1 with one line on stderr on failure."""
    args = build_parser().parse_args(argv)
    try:
        if args.what == "ca":
            files = make_ca(args.out, args.name, args.days or CA_DAYS, args.force)
        else:
            files = make_host(
                args.out,
                args.name,
                args.ip,
                args.dns,
                args.usage,
                args.days or HOST_DAYS,
                args.ca,
                args.force,
            )
    except (CertError, OSError, ValueError) as exc:
        print(f"cloudseg certs: {exc}", file=sys.stderr)
        return 1
    print(describe(files.cert))
    print(f"{files.key}: private key (mode 0600; keep it on this host only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
