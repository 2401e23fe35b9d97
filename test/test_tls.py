"""The encrypted, authenticated WAN link (issue 9): `cloudseg certs`, the mutual-TLS gates
(`cloudseg.security.tls_gate`), the TLS Fast DDS profiles, and a vehicle and a cloud talking
through the gates while unauthorised peers get nothing and the wire shows no payload."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import stat
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cloudseg.bench.tls_link import (
    BACK_TOPIC,
    FRAMES_TOPIC,
    GatedLink,
    base_env,
    make_test_keys,
    peer_result,
    start_gate,
    start_peer,
)
from cloudseg.fastdds import TLS_DDS_PROFILES, dds_env
from cloudseg.graph import config_dir
from cloudseg.security import certs
from cloudseg.security.refusals import RefusalLog
from cloudseg.security.tls_context import client_context, server_context
from cloudseg.security.tls_gate import TlsGate
from support import wait_until

NS = {"d": "http://www.eprosima.com"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_test_keys(tmp_path_factory.mktemp("keys"))


# --- certificates ------------------------------------------------------------------------------


def test_certs_makes_a_ca_and_host_certificates(tmp_path, capsys):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID as EKU

    out = tmp_path / "keys"
    assert certs.main(["--out", str(out), "ca"]) == 0
    args = ["--out", str(out), "host", "cloud", "--ip", "203.0.113.7", "--dns", "cloud.example"]
    assert certs.main([*args, "--usage", "server"]) == 0
    assert certs.main(["--out", str(out), "host", "car1", "--usage", "client"]) == 0
    assert certs.main(["--out", str(out), "host", "both"]) == 0
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for name, usage in (
        ("cloud", [EKU.SERVER_AUTH]),
        ("car1", [EKU.CLIENT_AUTH]),
        ("both", [EKU.SERVER_AUTH, EKU.CLIENT_AUTH]),
    ):
        cert = x509.load_pem_x509_certificate((out / f"{name}.crt").read_bytes())
        ca.public_key().verify(
            cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
        )
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == usage
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert stat.S_IMODE((out / f"{name}.key").stat().st_mode) == 0o600
    san = x509.load_pem_x509_certificate((out / "cloud.crt").read_bytes()).extensions
    san = san.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["cloud", "cloud.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["203.0.113.7"]
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600
    capsys.readouterr()
    # refusals: one line each, exit 1
    assert certs.main(["--out", str(out), "host", "car1"]) == 1  # exists
    assert "--force" in capsys.readouterr().err
    assert certs.main(["--out", str(out), "--force", "host", "car1"]) == 0
    assert certs.main(["--out", str(tmp_path / "none"), "host", "car2"]) == 1
    assert "no CA" in capsys.readouterr().err
    assert certs.main(["--out", str(out), "host", "car3", "--ip", "300.1.1.1"]) == 1
    assert certs.main(["--out", str(out), "host", "../x"]) == 1
    assert not (out / "car3.crt").exists()


def test_gate_contexts_need_tls12_and_a_client_certificate(keys):
    server = server_context(keys.ca, *keys.cloud)
    assert server.verify_mode == ssl.CERT_REQUIRED
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    client = client_context(keys.ca, *keys.vehicle)
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname


# --- the gates in this process, no DDS -----------------------------------------------------------


async def _echo_server():
    connections = []

    async def echo(reader, writer):
        connections.append(writer.get_extra_info("peername"))
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


async def _gate(mode, to, ctx, **kw) -> TlsGate:
    gate = TlsGate(mode, ("127.0.0.1", 0), ("127.0.0.1", to), ctx, log_interval=0, **kw)
    await gate.start()
    gate._serve_task = asyncio.create_task(gate.serve_forever())
    return gate


async def _plain_roundtrip(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(len(data)), 5)
    except (OSError, asyncio.TimeoutError):
        return b""
    finally:
        writer.close()


def _tls_probe(port: int, ca: Path, cert: tuple[Path, Path] | None, data: bytes) -> bytes:
    """Connect with TLS (optionally presenting `cert`), send `data`; what came back (b"" when the
    gate closed the connection or the handshake failed)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    if cert:
        ctx.load_cert_chain(*cert)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                tls.sendall(data)  # TLS 1.3: the client learns of the refusal on its next read
                return tls.recv(65536)
        except (ssl.SSLError, OSError):
            return b""


def _plain_probe(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
            return sock.recv(65536)
        except OSError:
            return b""


def test_gates_carry_bytes_and_refuse_unauthorised_peers(keys, caplog):
    caplog.set_level(logging.INFO, logger="cloudseg.tls_gate")

    async def scenario():
        echo, echo_port, upstream = await _echo_server()
        server = await _gate("server", echo_port, server_context(keys.ca, *keys.cloud))
        client = await _gate("client", server.listen[1], client_context(keys.ca, *keys.vehicle))
        through = await _plain_roundtrip(client.listen[1], b"hello through both gates")
        loop = asyncio.get_running_loop()
        port = server.listen[1]
        probes = {
            "no certificate": await loop.run_in_executor(
                None, _tls_probe, port, keys.ca, None, b"ROGUE-NO-CERT"
            ),
            "other CA": await loop.run_in_executor(
                None, _tls_probe, port, keys.ca, keys.rogue, b"ROGUE-OTHER-CA"
            ),
            "plain TCP": await loop.run_in_executor(None, _plain_probe, port, b"RTPS ROGUE"),
        }
        good = await loop.run_in_executor(None, _tls_probe, port, keys.ca, keys.vehicle, b"ok")
        for gate in (client, server):
            await gate.close()
        echo.close()
        return through, probes, good, upstream, server.stats

    through, probes, good, upstream, stats = asyncio.run(scenario())
    assert through == b"hello through both gates"
    assert good == b"ok"  # a vehicle certificate straight to the server gate works too
    for what, answer in probes.items():
        assert answer == b"", f"{what}: got {answer!r}"
    assert len(upstream) == 2, "only the two authorised connections reached the upstream"
    assert stats.accepted == 2 and stats.refused == 3
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert len(refusals) == 3, refusals
    text = "\n".join(refusals)
    assert "no client certificate" in text
    assert "certificate verify failed" in text
    assert "not TLS" in text


def test_server_gate_allow_list(keys, caplog):
    caplog.set_level(logging.INFO, logger="cloudseg.tls_gate")

    async def scenario():
        echo, echo_port, upstream = await _echo_server()
        ctx = server_context(keys.ca, *keys.cloud)
        server = await _gate("server", echo_port, ctx, allow=["car2"])
        loop = asyncio.get_running_loop()
        got = await loop.run_in_executor(
            None, _tls_probe, server.listen[1], keys.ca, keys.vehicle, b"car1 here"
        )
        await server.close()
        echo.close()
        return got, upstream

    got, upstream = asyncio.run(scenario())
    assert got == b"" and upstream == []
    assert any("not in --allow" in r.getMessage() for r in caplog.records)


def test_client_gate_verifies_the_cloud(keys, tmp_path, caplog):
    """The vehicle's gate refuses a cloud with a certificate from another CA, one for another
    name, and a client-only certificate (a vehicle's) posing as the cloud."""
    caplog.set_level(logging.INFO, logger="cloudseg.tls_gate")
    impostor = certs.make_host(keys.dir, "impostor", ips=["127.0.0.1"], usage="client")

    async def scenario():
        echo, echo_port, upstream = await _echo_server()
        results = {}
        for what, cloud_cert, server_name in (
            ("other CA", keys.rogue, None),
            ("wrong name", keys.cloud, "cloud.elsewhere.example"),
            ("client-only certificate", (impostor.cert, impostor.key), None),
        ):
            rogue_ca = keys.rogue_ca if what == "other CA" else keys.ca
            server = await _gate("server", echo_port, server_context(rogue_ca, *cloud_cert))
            client = await _gate(
                "client",
                server.listen[1],
                client_context(keys.ca, *keys.vehicle),
                server_name=server_name,
            )
            results[what] = await _plain_roundtrip(client.listen[1], b"frames")
            for gate in (client, server):
                await gate.close()
        echo.close()
        return results, upstream

    results, upstream = asyncio.run(scenario())
    assert results == dict.fromkeys(results, b"")
    assert upstream == []
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused cloud")]
    assert len(lines) == 3, lines
    other_ca, wrong_name, client_only = lines
    assert "certificate verify failed" in other_ca and "Hostname" not in other_ca
    assert "Hostname mismatch" in wrong_name
    assert "certificate purpose" in client_only  # OpenSSL: unsuitable/unsupported


def test_refusal_log_is_rate_limited(caplog):
    caplog.set_level(logging.INFO, logger="test.refusals")
    log = RefusalLog(interval=60, burst=3, log=logging.getLogger("test.refusals"))
    for _ in range(50):
        log("198.51.100.1:1234", "no client certificate")
    log("198.51.100.1:1234", "not TLS (plain TCP?)")
    for i in range(10):
        log(f"198.51.100.{i + 2}:1", "no client certificate")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines  # 1 + 1 for the first peer, then the burst cap
    assert lines[0] == "refused 198.51.100.1:1234: no client certificate"


def test_gate_cli_help_and_bad_arguments(keys, capsys):
    from cloudseg.security.tls_gate import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "client certificate" in capsys.readouterr().out
    bad = ["server", "--listen", "nowhere", "--to", "127.0.0.1:1", "--ca", str(keys.ca)]
    assert main([*bad, "--cert", str(keys.cloud[0]), "--key", str(keys.cloud[1])]) == 1
    assert "HOST:PORT" in capsys.readouterr().err
    missing = ["client", "--listen", "127.0.0.1:1", "--to", "127.0.0.1:1", "--ca", "/nonexistent"]
    assert main([*missing, "--cert", str(keys.vehicle[0]), "--key", str(keys.vehicle[1])]) == 1
    assert "cannot load" in capsys.readouterr().err


# --- profiles and the --dds tls environment ----------------------------------------------------


def test_tls_profiles_keep_fast_dds_on_loopback():
    cloud = ET.parse(config_dir() / TLS_DDS_PROFILES["cloud"]).getroot()
    assert {t.text for t in cloud.iterfind(".//d:transport_descriptor/d:type", NS)} == {"TCPv4"}
    allow = cloud.find(".//d:interfaces/d:allowlist/d:interface", NS)
    assert allow is not None and allow.get("name") == "127.0.0.1"
    assert cloud.findtext(".//d:listening_ports/d:port", namespaces=NS) == "${CLOUDSEG_DDS_PORT}"
    assert cloud.findtext(".//d:wan_addr", namespaces=NS) == "${CLOUDSEG_DDS_ANNOUNCE_ADDRESS}"
    vehicle = ET.parse(config_dir() / TLS_DDS_PROFILES["vehicle"]).getroot()
    tcp = [
        d
        for d in vehicle.iterfind(".//d:transport_descriptor", NS)
        if d.findtext("d:type", namespaces=NS) == "TCPv4"
    ]
    assert len(tcp) == 1 and tcp[0].find("d:listening_ports", NS) is None
    allow = tcp[0].find("d:interfaces/d:allowlist/d:interface", NS)
    assert allow is not None and allow.get("name") == "127.0.0.1"
    peer = vehicle.find(".//d:initialPeersList/d:locator/d:tcpv4", NS)
    assert peer.findtext("d:address", namespaces=NS) == "${CLOUDSEG_DDS_PEER_ADDRESS}"


def test_dds_env_tls():
    cloud = dds_env("tls", "cloud", listen=7500)
    assert cloud["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("fastdds_tls_cloud.xml")
    assert (cloud["CLOUDSEG_DDS_PORT"], cloud["CLOUDSEG_DDS_ANNOUNCE_ADDRESS"]) == (
        "7500",
        "127.0.0.1",
    )
    vehicle = dds_env("tls", "vehicle")
    assert vehicle["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("fastdds_tls_vehicle.xml")
    assert (vehicle["CLOUDSEG_DDS_PEER_ADDRESS"], vehicle["CLOUDSEG_DDS_PEER_PORT"]) == (
        "127.0.0.1",
        "7410",
    )
    assert dds_env("tls", "vehicle", peer=":7500")["CLOUDSEG_DDS_PEER_PORT"] == "7500"
    with pytest.raises(ValueError, match="own TLS gate"):
        dds_env("tls", "vehicle", peer="198.51.100.2:7410")
    with pytest.raises(ValueError, match="public-ip"):
        dds_env("tls", "cloud", public_ip="203.0.113.7")


# --- real processes over Fast DDS ----------------------------------------------------------------

WANT = 5
SIZE = 20_000
SECONDS = 20.0
ATTEMPTS = 2  # Fast DDS TCP now and then never matches a pair (test_dds_profiles.py)

# A rogue vehicle: Fast DDS over TCP only (so that it cannot meet the real vehicle on this
# host over UDP or shared memory), through its own gate with a certificate from another CA.
ROGUE_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com"><profiles>
  <transport_descriptors><transport_descriptor>
    <transport_id>rogue_tcp</transport_id><type>TCPv4</type>
  </transport_descriptor></transport_descriptors>
  <participant profile_name="rogue" is_default_profile="true"><rtps>
    <builtin><initialPeersList><locator><tcpv4>
      <address>127.0.0.3</address><physical_port>${CLOUDSEG_DDS_PEER_PORT}</physical_port>
    </tcpv4></locator></initialPeersList></builtin>
    <userTransports><transport_id>rogue_tcp</transport_id></userTransports>
    <useBuiltinTransports>false</useBuiltinTransports>
  </rtps></participant>
</profiles></dds>
"""


def _exchange(keys, workdir: Path) -> dict:
    tag = uuid.uuid4().hex[:12]
    markers = {
        "vehicle": f"VEHICLE-SECRET-{tag}",
        "cloud": f"CLOUD-SECRET-{tag}",
        "rogue": f"ROGUE-{tag}",
        "probe": f"PROBE-{tag}",
    }
    env = base_env()
    out: dict = {"markers": markers}
    with GatedLink(keys, workdir, keep=True) as link:
        rogue_profile = workdir / "rogue.xml"
        rogue_profile.write_text(ROGUE_PROFILE)
        rogue_gate = start_gate(
            "client",
            f"127.0.0.3:{link.dds_port}",
            f"127.0.0.1:{link.gate_port}",
            keys.ca,  # it trusts the real cloud; its own certificate is from another CA
            *keys.rogue,
            workdir / "gate_rogue.log",
        )
        logs = {name: workdir / f"{name}.log" for name in ("cloud", "vehicle", "rogue")}
        common = ["--size", str(SIZE), "--rate", "20", "--seconds", str(SECONDS)]
        cloud_args = ["--sub", FRAMES_TOPIC, "--pub", BACK_TOPIC, "--marker", markers["cloud"]]
        vehicle_args = ["--sub", BACK_TOPIC, "--pub", FRAMES_TOPIC, "--marker", markers["vehicle"]]
        rogue_args = ["--sub", BACK_TOPIC, "--pub", FRAMES_TOPIC, "--marker", markers["rogue"]]
        procs = {
            "cloud": start_peer(
                [*cloud_args, "--want", str(WANT), *common],
                link.cloud_env(env),
                logs["cloud"],
            ),
            "rogue": start_peer(
                [*rogue_args, "--seconds", "14", "--size", "2000", "--rate", "10"],
                {
                    **env,
                    "FASTDDS_DEFAULT_PROFILES_FILE": str(rogue_profile),
                    "CLOUDSEG_DDS_PEER_PORT": str(link.dds_port),
                },
                logs["rogue"],
            ),
        }
        procs["vehicle"] = start_peer(
            [*vehicle_args, "--want", str(WANT), *common],
            link.vehicle_env(env),
            logs["vehicle"],
        )
        # peers without a valid client certificate, straight at the cloud's gate, while the
        # vehicle and the cloud exchange frames through the gates
        wait_until(lambda: '"event": "matched"' in logs["vehicle"].read_text(), 15)
        data = markers["probe"].encode()
        out["probes"] = {
            "no certificate": _tls_probe(link.gate_port, keys.ca, None, data),
            "other CA": _tls_probe(link.gate_port, keys.ca, keys.rogue, data),
            "plain TCP": _plain_probe(link.gate_port, b"RTPS" + data),
        }
        for name in ("cloud", "vehicle", "rogue"):
            if procs[name].wait_exit(SECONDS + 10) is None:
                procs[name].stop()
        rogue_gate.stop()
        out["results"] = {name: peer_result(log) for name, log in logs.items()}
        out["logs"] = {name: log.read_text()[-3000:] for name, log in logs.items()}
    out["gate_logs"] = {name: link.gate_log(name) for name in ("server", "client")}
    out["gate_logs"]["rogue"] = (workdir / "gate_rogue.log").read_text()
    out["tls"], out["plain"] = link.tls, link.plain
    return out


@pytest.mark.dds
def test_vehicle_and_cloud_talk_only_through_mutual_tls(keys, tmp_path):
    for attempt in range(ATTEMPTS):
        workdir = tmp_path / f"attempt{attempt}"
        workdir.mkdir()
        out = _exchange(keys, workdir)
        res = out["results"]
        if all((res[n] or {}).get("received", 0) >= WANT for n in ("cloud", "vehicle")):
            break
    m = {k: v.encode() for k, v in out["markers"].items()}
    res, tls, plain = out["results"], out["tls"], out["plain"]
    debug = f"{out['logs']}\n{out['gate_logs']}"
    # certificates from the same CA: frames one way, results the other, through both gates
    for name in ("cloud", "vehicle"):
        assert res[name] and res[name]["received"] >= WANT, f"{name}: {res[name]}\n{debug}"
    assert set(res["cloud"]["markers"]) == {out["markers"]["vehicle"]}, res["cloud"]
    assert set(res["vehicle"]["markers"]) == {out["markers"]["cloud"]}, res["vehicle"]
    # the payload crosses the plaintext leg (control) and not the TLS leg, which carried it all
    assert m["vehicle"] in plain.up and m["cloud"] in plain.down
    assert m["vehicle"] not in tls.up and m["cloud"] not in tls.down
    assert b"VEHICLE-SECRET" not in tls.up + tls.down and b"CLOUD-SECRET" not in tls.up + tls.down
    assert plain.n_up > WANT * SIZE and tls.n_up >= plain.n_up, (tls.n_up, plain.n_up)
    # every connection to Fast DDS came through an accepted TLS connection
    assert 1 <= plain.connections <= tls.connections, (plain.connections, tls.connections)
    # unauthorised peers: no answer, nothing reached Fast DDS, each refusal logged with a reason
    for what, answer in out["probes"].items():
        assert answer == b"", f"{what} got {answer!r}"
    assert m["probe"] not in plain.up and m["rogue"] not in plain.up
    assert res["rogue"] is not None and res["rogue"]["received"] == 0, res["rogue"]
    assert out["markers"]["rogue"] not in res["cloud"]["markers"]
    server_log = out["gate_logs"]["server"]
    assert "no client certificate" in server_log, server_log
    assert "certificate verify failed" in server_log, server_log
    assert "not TLS" in server_log, server_log
    assert "accepted" in server_log and "(car1)" in server_log


def test_tls_gate_module_runs_as_a_command():
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "cloudseg.security.tls_gate", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    assert done.returncode == 0 and "server" in done.stdout and "client" in done.stdout


@pytest.mark.dds
def test_deployment_setup_between_two_hosts(tmp_path):
    """`--dds tls` as deployed (gates at 127.0.0.1:7410 on the vehicle and <cloud>:7411 on the
    cloud, the cloud announcing 127.0.0.1) between two network namespaces; root only."""
    from cloudseg.bench.netem import check_privileges
    from cloudseg.bench.tls import measure_two_hosts

    reason = check_privileges()
    if reason:
        pytest.skip(reason)
    r = measure_two_hosts(30, 5000, 30.0, tmp_path)  # retries a pair that never matched
    assert r["plain_received"] > 0 and r["tls_received"] > 0, r
    assert r["tls_up"] > 30 * 5000 * 0.8, r  # the stream crossed the interface, with TLS
    assert abs(r["overhead_pct"]) < 10, r
