"""Triton servers on this host as child processes (``cloudseg serve``), for the fleet benchmark
and the tests: free ports, start, wait until the models are ready, read each server's own
request counters from its metrics endpoint, stop (SIGTERM, then kill).

No pytest here; no tritonclient import until a server is waited for.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from cloudseg.processes import ManagedProcess, read_tail
from cloudseg.triton.serve import ENV_PYTHON, ServeError, find_triton_python

__all__ = ["ServerProcess", "free_ports", "running_servers", "triton_python"]

_SUCCESS = re.compile(
    r'^nv_inference_request_success\{model="([^"]+)",version="[^"]*"\} (\S+)$', re.M
)


def triton_python() -> Path | None:
    """The interpreter of ``.venv-triton`` (see `find_triton_python`), or None without one."""
    try:
        return find_triton_python()
    except ServeError:
        return None


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ServerProcess:
    """A ``cloudseg serve`` process on three ports (gRPC, HTTP, metrics) serving ``repo``."""

    def __init__(self, repo: Path, ports: Sequence[int], log_path: Path, threads: int = 1) -> None:
        self.repo, self.ports, self.log_path, self.threads = (
            Path(repo),
            list(ports),
            log_path,
            threads,
        )
        self.proc: ManagedProcess | None = None
        self._workspace: str | None = None

    @property
    def url(self) -> str:
        """Its gRPC address (what `TritonInference` and the ``triton_urls`` parameter take)."""
        return f"127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        grpc, http, metrics = self.ports
        python = triton_python()
        if python is None:
            raise ServeError("no .venv-triton: run scripts/setup.sh --triton")
        cmd = [sys.executable, "-m", "cloudseg.cli", "serve", "--model-repository", str(self.repo)]
        cmd += ["--address", "127.0.0.1", "--grpc-port", str(grpc), "--http-port", str(http)]
        cmd += ["--metrics-port", str(metrics), "--threads", str(self.threads)]
        # PyTriton keeps UNIX sockets in its workspace: a short path (a long $XDG_CACHE_HOME,
        # e.g. a test's tmp_path, overflows the 108-byte socket address)
        self._workspace = tempfile.mkdtemp(prefix="cloudseg-ws-", dir="/tmp")
        cmd += ["--workspace", str(Path(self._workspace) / "w")]
        self.proc = ManagedProcess.start(
            cmd,
            name=f"Triton server {self.url}",
            env={**os.environ, ENV_PYTHON: str(python)},
            log=self.log_path,
            append=True,  # a restart's output after the earlier run's
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def wait_ready(self, models: Sequence[str], timeout_s: float = 90.0) -> None:
        """Until the server says it and ``models`` are ready; RuntimeError (with the end of
        its log) when it exits or the time is up."""
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + timeout_s
        client = grpcclient.InferenceServerClient(self.url)
        try:
            while time.monotonic() < deadline:
                if not self.running():
                    raise RuntimeError(f"Triton server {self.url} exited:\n{self.tail()}")
                with contextlib.suppress(grpcclient.InferenceServerException):
                    if client.is_server_ready(client_timeout=2) and all(
                        client.is_model_ready(m, client_timeout=2) for m in models
                    ):
                        return
                time.sleep(0.3)
        finally:
            client.close()
        raise RuntimeError(
            f"Triton server {self.url} not ready after {timeout_s:g} s:\n{self.tail()}"
        )

    def metrics(self) -> dict[str, float]:
        """``nv_inference_request_success`` per model, from the server's own metrics endpoint."""
        url = f"http://127.0.0.1:{self.ports[2]}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return {m: float(v) for m, v in _SUCCESS.findall(text)}

    def requests(self) -> int:
        """Successful inference requests, all models together (its metrics endpoint)."""
        return int(sum(self.metrics().values()))

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM; it shuts Triton down cleanly in a few seconds)."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop it and wait (SIGTERM, then SIGKILL after ``timeout_s``)."""
        if self.proc is not None:
            self.proc.stop(grace=timeout_s, sig=signal.SIGTERM)
        if self._workspace is not None:
            shutil.rmtree(self._workspace, ignore_errors=True)
            self._workspace = None
        self.proc = None

    def tail(self, chars: int = 3000) -> str:
        return read_tail(self.log_path, chars)


@contextlib.contextmanager
def running_servers(
    repo: Path,
    models: Sequence[str],
    n: int,
    log_dir: Path,
    threads: int = 1,
    timeout_s: float = 90.0,
) -> Iterator[list[ServerProcess]]:
    """``n`` servers of ``repo`` on free ports, ready; stopped at the end whatever happens."""
    ports = free_ports(3 * n)
    servers = [
        ServerProcess(repo, ports[3 * i : 3 * i + 3], Path(log_dir) / f"triton{i}.log", threads)
        for i in range(n)
    ]
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(models, timeout_s)
        yield servers
    finally:
        for server in servers:  # all at once: shutting down takes seconds each
            server.terminate()
        for server in servers:
            server.stop()
