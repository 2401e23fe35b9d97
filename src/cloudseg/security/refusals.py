"""Why a gate refused a peer, and a rate-limited log of refusals."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

__all__ = ["LOG", "LOG_INTERVAL_S", "RefusalLog", "refusal_reason"]

LOG = logging.getLogger("cloudseg.tls_gate")  # both gates and their refusals
LOG_INTERVAL_S = 10.0


def refusal_reason(exc: BaseException, handshake: bool = True) -> str:
    """A short reason for a failed handshake (or, `handshake` False, a failed connect)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.strerror or str(exc)
        return {
            "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
            "WRONG_VERSION_NUMBER": "not TLS (plain TCP?)",
            "HTTP_REQUEST": "not TLS (HTTP request)",
            "UNSUPPORTED_PROTOCOL": "TLS version below 1.2",
            "TLSV1_ALERT_UNKNOWN_CA": "peer does not trust our CA",
            "SSLV3_ALERT_BAD_CERTIFICATE": "peer refused our certificate",
            "TLSV13_ALERT_CERTIFICATE_REQUIRED": "peer requires a certificate",
        }.get(reason, reason.replace("_", " ").lower())
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    if isinstance(exc, ConnectionAbortedError) and "handshake" in str(exc):
        return "handshake timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if handshake and isinstance(exc, (ConnectionError, EOFError, asyncio.IncompleteReadError)):
        return f"connection closed during handshake ({type(exc).__name__})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"


class RefusalLog:
    """One log line per (peer address, reason) per `interval` seconds, and at most `burst`
    lines per interval in all; suppressed repeats are counted into the next line."""

    def __init__(self, interval: float = LOG_INTERVAL_S, burst: int = 20, log=LOG) -> None:
        self.interval = interval
        self.burst = burst
        self.log = log
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}
        self._window = (0.0, 0)  # (start, lines in it)
        self._dropped = 0

    def __call__(self, peer: str, reason: str, level: int = logging.WARNING, what="refused"):
        now = time.monotonic()
        host = peer.rsplit(":", 1)[0]
        key = (host, reason)
        if now - self._last.get(key, -1e9) < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        start, lines = self._window
        if now - start >= self.interval:
            start, lines = now, 0
            if self._dropped:
                self.log.warning("%d more lines suppressed (rate limit)", self._dropped)
                self._dropped = 0
        if lines >= self.burst:
            self._dropped += 1
            return
        self._window = (start, lines + 1)
        self._last[key] = now
        if len(self._last) > 4096:  # many peers: forget the oldest
            for old in sorted(self._last, key=self._last.get)[:2048]:
                self._last.pop(old, None)
                self._suppressed.pop(old, None)
        more = self._suppressed.pop(key, 0)
        extra = f" (+{more} like it since)" if more else ""
        self.log.log(level, "%s %s: %s%s", what, peer, reason, extra)
