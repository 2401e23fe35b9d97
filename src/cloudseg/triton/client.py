"""The cloud's Triton client: batches of LR frames to N Triton servers over gRPC, with failover.

:class:`TritonInference` has the interface of the cloud's local inference (``infer(lr, scale,
sr_bypass, want_restored, want_overlay) ->`` :class:`cloudseg.cloud.inference.BatchResult`,
labels only: the servers return no restored image, so no overlay either): each batch goes to one
server, picked round robin or by the fewest outstanding requests, as model
``cloudseg_x{scale}_{sr|bilinear}`` (``cloudseg export triton``). When a server stops answering
(connection refused, deadline passed, model gone) it is logged once and marked down, and the
batch is retried on another server: the caller's stream goes on, and only when every server is
down does the call raise :class:`NoServerError`. A health thread asks the down servers
``is_server_ready`` (and whether the models used so far are ready) every few seconds, on a fresh
channel, and puts them back. Errors of the request itself (a frame size the model was not
exported for) are not failures of a server: they raise :class:`TritonRequestError` at once.
Batches larger than the model's ``max_batch_size`` are split, and the parts sent at once.
``infer`` is thread-safe: a caller that keeps several batches in flight (one thread each) uses
several servers at a time; "least_outstanding" then sends each to the least busy one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from cloudseg.cloud.inference import BatchResult
from cloudseg.graph import TRITON_POLICIES

__all__ = [
    "POLICIES",
    "BatchResult",
    "NoServerError",
    "TritonInference",
    "TritonRequestError",
]

log = logging.getLogger(__name__)

POLICIES = TRITON_POLICIES
INPUT_NAME = "lr"
OUTPUT_NAME = "labels"
#: gRPC status codes that are the request's fault, not the server's (no failover).
_REQUEST_ERRORS = ("StatusCode.INVALID_ARGUMENT", "StatusCode.OUT_OF_RANGE")


class NoServerError(RuntimeError):
    """Every Triton server is down (or refused the batch)."""


class TritonRequestError(ValueError):
    """A server rejected the batch itself (shape, batch size): no other server would take it."""


def model_name(scale: int, sr_bypass: bool) -> str:
    """``cloudseg_x{scale}_{sr|bilinear}`` (as :func:`cloudseg.triton.export.model_name`)."""
    return f"cloudseg_x{int(scale)}_{'bilinear' if sr_bypass else 'sr'}"


class _Server:
    def __init__(self, url: str, client: Any) -> None:
        self.url = url
        self.client = client
        self.up = True
        self.outstanding = 0
        self.batches = 0
        self.frames = 0
        self.failures = 0
        self.last_error = ""


class TritonInference:
    """Batches to Triton servers with failover (see the module docstring).

    ``urls``: gRPC addresses ``host:port`` (or one string, comma-separated). ``policy``:
    "round_robin" or "least_outstanding" (ties go round robin). ``timeout_s``: the deadline of
    one request (a server that takes longer is marked down). ``health_interval_s``: how often
    down servers are asked whether they are back.
    """

    makes_images = False  # the servers return labels only

    def __init__(
        self,
        urls: Sequence[str] | str,
        policy: str = "round_robin",
        timeout_s: float = 10.0,
        *,
        health_interval_s: float = 2.0,
    ) -> None:
        import tritonclient.grpc as grpcclient  # lazy: only the Triton route needs it

        self._grpc = grpcclient
        if isinstance(urls, str):
            urls = [u.strip() for u in urls.split(",") if u.strip()]
        urls = list(dict.fromkeys(urls))
        if not urls:
            raise ValueError("TritonInference needs at least one server URL")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if timeout_s <= 0 or health_interval_s <= 0:
            raise ValueError("timeout_s and health_interval_s must be positive")
        self.policy = policy
        self.timeout_s = float(timeout_s)
        self.health_interval_s = float(health_interval_s)
        self._servers = [_Server(url, self._client(url)) for url in urls]
        self._lock = threading.Lock()
        self._next = 0
        self._models: set[str] = set()
        self._max_batch: dict[str, int] = {}
        self._pool = ThreadPoolExecutor(max_workers=2 * len(urls), thread_name_prefix="triton")
        self._stop = threading.Event()
        self._health = threading.Thread(target=self._health_loop, name="triton-health", daemon=True)
        self._health.start()

    # --- the interface of the cloud's inference ----------------------------------------------

    def infer(
        self,
        lr: np.ndarray,
        scale: int,
        sr_bypass: bool = False,
        want_restored: bool = False,
        want_overlay: bool = False,
    ) -> BatchResult:
        """Labels of a batch of LR frames (N, h, w, 3) uint8 RGB, from model
        ``cloudseg_x{scale}_{sr|bilinear}`` on one of the servers. Triton returns labels only:
        ``restored`` and ``overlay`` are None whatever ``want_restored`` / ``want_overlay``
        say (`makes_images` is False: the caller says so once)."""
        t0 = time.perf_counter()
        lr = np.asarray(lr)
        if lr.ndim == 3:
            lr = lr[None]
        if lr.dtype != np.uint8 or lr.ndim != 4 or lr.shape[-1] != 3 or 0 in lr.shape:
            raise ValueError(f"lr must be uint8 (N, h, w, 3) RGB, got {lr.shape} {lr.dtype}")
        model = model_name(scale, sr_bypass)
        with self._lock:
            self._models.add(model)
        step = self._max_batch_size(model) or len(lr)
        chunks = [lr[i : i + step] for i in range(0, len(lr), step)]
        if len(chunks) == 1:
            labels = self._run(model, chunks[0])
        else:  # the parts of a split batch go out at once (to different servers)
            futures = [self._pool.submit(self._run, model, chunk) for chunk in chunks]
            labels = np.concatenate([f.result() for f in futures])
        ms = (time.perf_counter() - t0) * 1e3
        # the stages run on the server, unseen: the round trip counts as segmentation time
        # (FrameStats: sr_ms + segmentation_ms is the batch's inference time, as locally)
        mode = "bilinear" if sr_bypass else "sr"
        return BatchResult(labels, None, ms, segmentation_ms=ms, mode=mode)

    def describe(self) -> str:
        urls = ", ".join(s.url for s in self._servers)
        return (
            f"triton: {len(self._servers)} server(s) {urls} ({self.policy}, "
            f"{self.timeout_s:g} s deadline)"
        )

    # --- state --------------------------------------------------------------------------------

    def servers(self) -> list[dict[str, Any]]:
        """Per server: url, up, batches and frames served, failures, outstanding requests."""
        with self._lock:
            return [
                {
                    "url": s.url,
                    "up": s.up,
                    "batches": s.batches,
                    "frames": s.frames,
                    "failures": s.failures,
                    "outstanding": s.outstanding,
                    "last_error": s.last_error,
                }
                for s in self._servers
            ]

    def close(self) -> None:
        """Stop the health thread and close the channels."""
        self._stop.set()
        self._pool.shutdown(wait=True)
        self._health.join(timeout=self.health_interval_s + self.timeout_s + 1)
        for server in self._servers:
            self._close_client(server.client)

    def __enter__(self) -> TritonInference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------

    def _client(self, url: str) -> Any:
        return self._grpc.InferenceServerClient(url=url)

    @staticmethod
    def _close_client(client: Any) -> None:
        with contextlib.suppress(Exception):  # a channel that is already gone
            client.close()

    def _pick(self, tried: set[int]) -> int | None:
        """Index of the server for the next request (None when none is left), with the lock."""
        n = len(self._servers)
        order = [(self._next + i) % n for i in range(n)]
        candidates = [i for i in order if self._servers[i].up and i not in tried]
        if not candidates:
            return None
        if self.policy == "least_outstanding":
            least = min(self._servers[i].outstanding for i in candidates)
            candidates = [i for i in candidates if self._servers[i].outstanding == least]
        index = candidates[0]
        self._next = (index + 1) % n
        return index

    def _max_batch_size(self, model: str) -> int | None:
        if model in self._max_batch:
            return self._max_batch[model]
        for server in list(self._servers):
            if not server.up:
                continue
            try:
                config = server.client.get_model_config(
                    model, as_json=True, client_timeout=self.timeout_s
                )
            except self._grpc.InferenceServerException:
                continue
            size = int(config.get("config", config).get("max_batch_size", 0) or 0)
            if size > 0:
                self._max_batch[model] = size
                return size
            return None
        return None

    def _run(self, model: str, lr: np.ndarray) -> np.ndarray:
        """One request, on the picked server, then on the others while servers fail."""
        tried: set[int] = set()
        while True:
            with self._lock:
                index = self._pick(tried)
                if index is None:
                    raise NoServerError(self._all_down_message(model))
                server = self._servers[index]
                server.outstanding += 1
                client = server.client
            tried.add(index)
            inp = self._grpc.InferInput(INPUT_NAME, list(lr.shape), "UINT8")
            inp.set_data_from_numpy(np.ascontiguousarray(lr))
            failed: Exception | None = None
            ok = False
            try:
                result = client.infer(
                    model,
                    [inp],
                    outputs=[self._grpc.InferRequestedOutput(OUTPUT_NAME)],
                    client_timeout=self.timeout_s,
                )
                labels = result.as_numpy(OUTPUT_NAME)
                ok = True
            except self._grpc.InferenceServerException as exc:
                if str(exc.status()) in _REQUEST_ERRORS:
                    raise TritonRequestError(f"{server.url} rejected the batch: {exc}") from None
                failed = exc
            finally:
                with self._lock:
                    server.outstanding -= 1
                    if ok:
                        server.batches += 1
                        server.frames += len(lr)
            if failed is not None:
                self._mark_down(server, failed)
                continue
            if labels is None:
                raise NoServerError(f"{server.url}: model {model} returned no {OUTPUT_NAME!r}")
            return labels

    def _all_down_message(self, model: str) -> str:
        details = "; ".join(
            f"{s.url}: {'up' if s.up else 'down'}" + (f" ({s.last_error})" if s.last_error else "")
            for s in self._servers
        )
        return (
            f"no Triton server could run {model}: every server is down or failed ({details}); "
            f"down servers are retried every {self.health_interval_s:g} s"
        )

    def _mark_down(self, server: _Server, exc: Exception) -> None:
        with self._lock:
            server.failures += 1
            server.last_error = str(exc).splitlines()[0][:200]
            was_up, server.up = server.up, False
        if was_up:
            log.warning(
                "Triton server %s stopped answering (%s): marked down, batches go to the others",
                server.url,
                server.last_error,
            )

    def _health_loop(self) -> None:
        while not self._stop.wait(self.health_interval_s):
            for server in self._servers:
                if self._stop.is_set():
                    return
                if not server.up:
                    self._check(server)

    def _check(self, server: _Server) -> None:
        """Is a down server back? Asked on a fresh channel (gRPC backs reconnects off)."""
        client = self._client(server.url)
        deadline = min(self.timeout_s, max(1.0, self.health_interval_s))
        try:
            ready = client.is_server_ready(client_timeout=deadline)
            with self._lock:
                models = sorted(self._models)
            ready = ready and all(client.is_model_ready(m, client_timeout=deadline) for m in models)
        except self._grpc.InferenceServerException:
            ready = False
        if not ready:
            self._close_client(client)
            return
        with self._lock:
            old, server.client, server.up = server.client, client, True
        self._close_client(old)
        log.info("Triton server %s is back: batches go to it again", server.url)
