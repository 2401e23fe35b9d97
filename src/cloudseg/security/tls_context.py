"""Mutual-TLS contexts, peer identities and addresses for the gates (Python's `ssl`)."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

__all__ = [
    "GateError",
    "client_context",
    "format_address",
    "is_loopback",
    "parse_address",
    "peer_name",
    "peer_names",
    "server_context",
]


class GateError(RuntimeError):
    """The gate cannot start (bad address, unreadable certificate, port in use); one line."""


def parse_address(text: str, what: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise GateError(f"{what}: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _tls_base(ctx: ssl.SSLContext, ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(cafile=ca)  # this CA only, never the system's
    except (OSError, ssl.SSLError) as exc:
        raise GateError(f"cannot load {cert} / {key} / CA {ca}: {exc}") from exc
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """The cloud side: present `cert`, require a client certificate signed by `ca`."""
    return _tls_base(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), ca, cert, key)


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """The vehicle side: present `cert`, require a server certificate signed by `ca` for the
    name or address connected to (host name check on)."""
    ctx = _tls_base(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), ca, cert, key)
    ctx.check_hostname = True
    return ctx


def peer_name(cert: dict | None) -> str:
    """The common name of a verified peer certificate (`SSLObject.getpeercert()`)."""
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return "?"


def peer_names(cert: dict | None) -> set[str]:
    names = {peer_name(cert)}
    names.update(v for k, v in (cert or {}).get("subjectAltName", ()) if k == "DNS")
    return names


def format_address(addr) -> str:
    """`host:port` (`[v6]:port`) of a socket address, "?" when there is none."""
    if not addr:
        return "?"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
