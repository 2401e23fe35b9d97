"""Mutual-TLS gates for the vehicle-cloud Fast DDS TCP link (Python's `ssl`, asyncio).

Fast DDS on both hosts speaks plain TCP to a gate on its own host; between the gates everything
is TLS 1.2+ with certificates checked in both directions:

    vehicle host                                         cloud host
    Fast DDS --TCP--> client gate ==== mutual TLS ====> server gate --TCP--> Fast DDS
    (tcp vehicle      127.0.0.1:7410    over the WAN     0.0.0.0:7411        127.0.0.1:7410
     profile)         cert car1.crt                      cert cloud.crt      (fastdds_tls_cloud.xml)

- `server` (cloud): listens on the public port, requires a client certificate signed by the CA
  (`ssl.CERT_REQUIRED`), optionally one of the `--allow` names, and only then opens the
  plaintext connection to Fast DDS on the loopback interface. A peer without a certificate, with
  one from another CA, an expired one, or plain TCP is refused before one byte reaches Fast DDS;
  each refusal is logged on one line with the peer and the reason (rate-limited per peer and
  reason).
- `client` (vehicle): accepts plain TCP on the loopback interface, connects out with TLS
  presenting the vehicle's certificate, and verifies the cloud's certificate against the CA and
  the cloud's name or address (`--server-name`, default: the host of `--to`).

Use the same port number on the vehicle's client gate and the cloud's Fast DDS listener (7410
above): the cloud announces its TCP locators as `127.0.0.1:<port>` (fastdds_tls_cloud.xml), and
on the vehicle that is the client gate. Each gate is one process:

    python -m cloudseg.security.tls_gate server --listen 0.0.0.0:7411 --to 127.0.0.1:7410 \\
        --ca keys/ca.crt --cert keys/cloud.crt --key keys/cloud.key
    python -m cloudseg.security.tls_gate client --listen 127.0.0.1:7410 \\
        --to cloud.example.com:7411 --ca keys/ca.crt --cert keys/car1.crt --key keys/car1.key
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cloudseg.security.refusals import LOG, LOG_INTERVAL_S, RefusalLog, refusal_reason
from cloudseg.security.tls_context import (
    GateError,
    client_context,
    format_address,
    is_loopback,
    parse_address,
    peer_name,
    peer_names,
    server_context,
)

__all__ = ["GateStats", "TlsGate", "main"]

CHUNK = 256 * 1024
HANDSHAKE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 64


@dataclass
class GateStats:
    accepted: int = 0
    refused: int = 0
    active: int = 0
    bytes_in: int = 0  # from the TLS side (server: from vehicles; client: from the cloud)
    bytes_out: int = 0  # to the TLS side (plaintext byte counts)
    reasons: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        why = ", ".join(f"{r}: {n}" for r, n in sorted(self.reasons.items()))
        return (
            f"accepted {self.accepted}, refused {self.refused}"
            + (f" ({why})" if why else "")
            + f", {self.bytes_in} bytes in, {self.bytes_out} bytes out (plaintext)"
        )


class TlsGate:
    """One gate: `mode` "server" (TLS in, plaintext out) or "client" (plaintext in, TLS out).

    `await start()` binds; `serve_forever()`; `close()`. Usable in-process (tests, benchmarks).
    """

    def __init__(
        self,
        mode: str,
        listen: tuple[str, int],
        to: tuple[str, int],
        context: ssl.SSLContext,
        server_name: str | None = None,
        allow: Sequence[str] = (),
        max_connections: int = MAX_CONNECTIONS,
        handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
        log_interval: float = LOG_INTERVAL_S,
    ) -> None:
        if mode not in ("server", "client"):
            raise GateError(f"mode must be server or client, not {mode!r}")
        self.mode = mode
        self.listen = listen
        self.to = to
        self.context = context
        self.server_name = server_name or to[0]
        self.allow = set(allow)
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.stats = GateStats()
        self.refusals = RefusalLog(log_interval)
        self.events = RefusalLog(log_interval)  # accepted peers: one line per peer per interval
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        if sys.version_info < (3, 11):  # StreamWriter.start_tls
            raise GateError("the TLS gate needs Python 3.11 or newer")
        handler = self._serve_tls_side if self.mode == "server" else self._serve_plain_side
        try:
            self._server = await asyncio.start_server(
                handler, self.listen[0], self.listen[1], reuse_address=True, backlog=128
            )
        except OSError as exc:
            raise GateError(
                f"cannot listen on {format_address(self.listen)}: {exc.strerror}"
            ) from exc
        port = self._server.sockets[0].getsockname()[1]
        self.listen = (self.listen[0], port)
        if self.mode == "client" and not is_loopback(self.listen[0]):
            LOG.warning(
                "client gate listens on %s, not a loopback address: whoever reaches it talks "
                "to the cloud with this vehicle's certificate",
                format_address(self.listen),
            )
        LOG.info(
            "%s gate: %s %s -> %s %s",
            self.mode,
            "TLS" if self.mode == "server" else "TCP",
            format_address(self.listen),
            "TCP" if self.mode == "server" else f"TLS (expecting {self.server_name})",
            format_address(self.to),
        )

    async def serve_forever(self) -> None:
        assert self._server is not None, "call start() first"
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- per connection ----------------------------------------------------------------------

    def _refuse(self, peer: str, reason: str) -> None:
        self.stats.refused += 1
        key = reason.split(":")[0]
        self.stats.reasons[key] = self.stats.reasons.get(key, 0) + 1
        self.refusals(peer, reason)

    def _track(self) -> bool:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self.stats.active >= self.max_connections:
            return False
        self.stats.active += 1
        return True

    async def _serve_tls_side(self, reader, writer) -> None:
        """Server mode: a connection from the WAN."""
        peer = format_address(writer.get_extra_info("peername"))
        if not self._track():
            self._refuse(peer, f"too many connections ({self.max_connections})")
            await _close(writer)
            return
        upstream_w = None
        try:
            try:
                await writer.start_tls(self.context, ssl_handshake_timeout=self.handshake_timeout)
            except Exception as exc:
                self._refuse(peer, refusal_reason(exc))
                return
            cert = writer.get_extra_info("peercert")
            name = peer_name(cert)
            if self.allow and not (peer_names(cert) & self.allow):
                self._refuse(f"{peer} ({name})", "certificate name not in --allow")
                return
            try:
                upstream_r, upstream_w = await asyncio.wait_for(
                    asyncio.open_connection(*self.to), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as exc:
                self.refusals(
                    format_address(self.to),
                    refusal_reason(exc, False),
                    what="cannot reach Fast DDS at",
                )
                return
            self.stats.accepted += 1
            self.events(
                f"{peer} ({name})",
                writer.get_extra_info("cipher")[1],
                logging.INFO,
                what="accepted",
            )
            await self._pump_both(reader, writer, upstream_r, upstream_w)
        finally:
            self.stats.active -= 1
            await _close(writer)
            if upstream_w is not None:
                await _close(upstream_w)

    async def _serve_plain_side(self, reader, writer) -> None:
        """Client mode: a local (Fast DDS) connection, to be carried to the cloud over TLS."""
        peer = format_address(writer.get_extra_info("peername"))
        if not self._track():
            self._refuse(peer, f"too many connections ({self.max_connections})")
            await _close(writer)
            return
        tls_w = None
        try:
            try:
                tls_r, tls_w = await asyncio.wait_for(
                    asyncio.open_connection(
                        *self.to,
                        ssl=self.context,
                        server_hostname=self.server_name,
                        ssl_handshake_timeout=self.handshake_timeout,
                    ),
                    CONNECT_TIMEOUT_S + self.handshake_timeout,
                )
            except Exception as exc:
                self._refuse(f"cloud {format_address(self.to)}", refusal_reason(exc))
                return
            self.stats.accepted += 1
            cert = tls_w.get_extra_info("peercert")
            self.events(
                f"{format_address(self.to)} ({peer_name(cert)})",
                tls_w.get_extra_info("cipher")[1],
                logging.INFO,
                what="connected to",
            )
            received, error = await self._pump_both(tls_r, tls_w, reader, writer)
            if not received:
                # TLS 1.3: the cloud checks our certificate after our side of the handshake has
                # completed, and its gate drops a refused peer without a word
                if isinstance(error, ssl.SSLError):
                    why = refusal_reason(error)
                else:
                    why = (
                        "closed before sending anything: this vehicle's certificate refused, "
                        "or Fast DDS down there (see the cloud gate's log)"
                    )
                self.refusals(f"cloud {format_address(self.to)}", why, what="connection to")
        finally:
            self.stats.active -= 1
            await _close(writer)
            if tls_w is not None:
                await _close(tls_w)

    async def _pump_both(self, tls_r, tls_w, plain_r, plain_w) -> tuple[int, BaseException | None]:
        """Copy both ways until either side closes, then close both. Returns the bytes read
        from the TLS side and the error that ended reading it (a TLS alert from the peer)."""
        tls_read: list = [0, None]

        async def pump(src, dst, counter: str, from_tls: bool) -> None:
            try:
                while data := await src.read(CHUNK):
                    dst.write(data)
                    setattr(self.stats, counter, getattr(self.stats, counter) + len(data))
                    if from_tls:
                        tls_read[0] += len(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError) as exc:  # ssl.SSLError is an OSError
                if from_tls:
                    tls_read[1] = exc
            finally:
                dst.close()

        await asyncio.gather(
            pump(tls_r, plain_w, "bytes_in", True), pump(plain_r, tls_w, "bytes_out", False)
        )
        return tls_read[0], tls_read[1]


async def _close(writer) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 2.0)


HELP_DESCRIPTION = """\
Mutual-TLS gate for the vehicle-cloud Fast DDS TCP link (TLS 1.2+, Python's ssl).

  server (cloud host): TLS on the public port; a client certificate signed by --ca is
    required and verified before anything is forwarded; plaintext to Fast DDS on 127.0.0.1.
    Refused peers are logged, one line each with the reason (rate-limited).
  client (vehicle host): plain TCP from Fast DDS on 127.0.0.1; TLS to the cloud gate with
    this vehicle's certificate; the cloud's certificate is checked against --ca and the
    cloud's name or address (--server-name, default: the host of --to).

The client gate listens on 127.0.0.1 at the port number of the cloud's Fast DDS listener
(fastdds_tls_cloud.xml announces 127.0.0.1:<that port>)."""

HELP_EPILOG = """\
examples:
  cloud:    python -m cloudseg.security.tls_gate server --listen 0.0.0.0:7411 \\
              --to 127.0.0.1:7410 --ca keys/ca.crt --cert keys/cloud.crt --key keys/cloud.key
            cloudseg run cloud --dds tls --listen 7410
  vehicle:  python -m cloudseg.security.tls_gate client --listen 127.0.0.1:7410 \\
              --to cloud.example.com:7411 --ca keys/ca.crt --cert keys/car1.crt \\
              --key keys/car1.key
            cloudseg run vehicle --dds tls
certificates: cloudseg certs --help; deployment: docs/deployment.md, "Encrypted, authenticated
WAN link"."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cloudseg.security.tls_gate",
        description=HELP_DESCRIPTION,
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("mode", choices=("server", "client"), help="server: cloud; client: vehicle")
    p.add_argument(
        "--listen",
        required=True,
        metavar="HOST:PORT",
        help="server: public address (e.g. 0.0.0.0:7411); client: 127.0.0.1:<cloud DDS port>",
    )
    p.add_argument(
        "--to",
        required=True,
        metavar="HOST:PORT",
        help="server: Fast DDS on this host (127.0.0.1:7410); client: the cloud gate",
    )
    p.add_argument("--ca", type=Path, required=True, help="CA certificate (ca.crt)")
    p.add_argument("--cert", type=Path, required=True, help="this host's certificate")
    p.add_argument("--key", type=Path, required=True, help="this host's private key")
    p.add_argument(
        "--server-name",
        help="client: name or IP the cloud's certificate must carry (default: host of --to)",
    )
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="NAME",
        help="server: accept only client certificates with this common/DNS name (repeatable; "
        "default: any certificate signed by the CA)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=MAX_CONNECTIONS,
        metavar="N",
        help=f"connections at once; more are refused (default {MAX_CONNECTIONS})",
    )
    p.add_argument(
        "--handshake-timeout",
        type=float,
        default=HANDSHAKE_TIMEOUT_S,
        metavar="S",
        help=f"drop peers that do not finish the handshake in time (default {HANDSHAKE_TIMEOUT_S})",
    )
    p.add_argument(
        "--log-interval",
        type=float,
        default=LOG_INTERVAL_S,
        metavar="S",
        help="at most one line per peer and reason in this many seconds",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="log refusals and errors only")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s tls_gate[" + args.mode + "] %(message)s",
        stream=sys.stderr,
    )
    try:
        listen = parse_address(args.listen, "--listen")
        to = parse_address(args.to, "--to")
        make = server_context if args.mode == "server" else client_context
        ctx = make(args.ca, args.cert, args.key)
        if args.server_name and args.mode == "server":
            raise GateError("--server-name is for the client gate")
        if args.allow and args.mode == "client":
            raise GateError("--allow is for the server gate")
        gate = TlsGate(
            args.mode,
            listen,
            to,
            ctx,
            server_name=args.server_name,
            allow=args.allow,
            max_connections=args.max_connections,
            handshake_timeout=args.handshake_timeout,
            log_interval=args.log_interval,
        )
        return asyncio.run(_run(gate))
    except GateError as exc:
        print(f"tls_gate: {exc}", file=sys.stderr)
        return 1


async def _run(gate: TlsGate) -> int:
    await gate.start()
    print(f"listening on {format_address(gate.listen)}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    serve = asyncio.create_task(gate.serve_forever())
    await stop.wait()
    serve.cancel()
    await gate.close()
    with contextlib.suppress(asyncio.CancelledError):
        await serve
    LOG.warning("stopped: %s", gate.stats.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
