"""``cloudseg serve``: a Triton Inference Server on this host, through NVIDIA PyTriton.

PyTriton ships the Triton server binary (it runs here on the CPU) but pins numpy<2, and this
project's venv has numpy 2: the server runs in its own environment, ``.venv-triton``
(``scripts/setup.sh --triton``), as the script :mod:`cloudseg.triton.server` (plain torch +
numpy + pytriton, no rclpy, no cloudseg import). This module is the launcher in the project's
venv: it finds that interpreter, exports a model repository on the fly when none is given,
sets ``LD_LIBRARY_PATH`` to the interpreter's ``LIBDIR`` (Triton's Python stub links
libpython by name; PLATFORM.md), starts the server and passes SIGTERM / SIGINT on to it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from cloudseg.processes import ManagedProcess

__all__ = ["SETUP_COMMAND", "ServeError", "find_triton_python", "main", "server_command"]

log = logging.getLogger(__name__)

SETUP_COMMAND = "scripts/setup.sh --triton"
ENV_PYTHON = "CLOUDSEG_TRITON_PYTHON"
SERVER_SCRIPT = Path(__file__).resolve().with_name("server.py")


class ServeError(RuntimeError):
    """The server cannot be started (no .venv-triton, no models, ...)."""


def find_triton_python(explicit: str | Path | None = None) -> Path:
    """The interpreter of ``.venv-triton``: ``explicit``, ``$CLOUDSEG_TRITON_PYTHON``, or
    ``.venv-triton`` beside this project's venv or in the current folder."""
    given = explicit or os.environ.get(ENV_PYTHON)
    if given:
        path = Path(given)
        if not path.is_file():
            raise ServeError(f"Triton interpreter {path} does not exist; run {SETUP_COMMAND}")
        return path
    candidates = [Path(sys.prefix).parent / ".venv-triton", Path.cwd() / ".venv-triton"]
    for venv in candidates:
        if (venv / "bin" / "python").is_file():
            return venv / "bin" / "python"
    raise ServeError(
        f"no .venv-triton (the Triton server's own environment, numpy<2 + nvidia-pytriton) at "
        f"{' or '.join(str(c) for c in dict.fromkeys(candidates))}; create it with "
        f"`{SETUP_COMMAND}`"
    )


def _libdir(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def server_command(python: Path, repository: Path, args: argparse.Namespace) -> list[str]:
    cmd = [
        str(python),
        str(SERVER_SCRIPT),
        "--model-repository",
        str(repository),
        "--address",
        args.address,
        "--grpc-port",
        str(args.grpc_port),
        "--http-port",
        str(args.http_port),
        "--metrics-port",
        str(args.metrics_port),
        "--threads",
        str(args.threads),
    ]
    if args.workspace:
        cmd += ["--workspace", str(args.workspace)]
    if args.models:
        cmd += ["--models", *args.models]
    if args.kind:  # given: instead of the repository's configs
        cmd += ["--kind", args.kind]
    return cmd


def server_env(python: Path) -> dict[str, str]:
    """The server's environment: LD_LIBRARY_PATH led by the interpreter's LIBDIR, and none of
    this venv's Python path (numpy 2 must not leak into the numpy<2 environment)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    libdir = _libdir(python)
    if libdir:
        rest = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *rest])
    return env


def build_parser() -> argparse.ArgumentParser:
    from cloudseg.triton.export import add_export_arguments

    parser = argparse.ArgumentParser(
        prog="cloudseg serve",
        description="Run a Triton Inference Server on this host (NVIDIA PyTriton, CPU here) "
        "serving the TorchScript models of a model repository (cloudseg export triton), or "
        "of one exported on the fly from the model options below. Needs .venv-triton: "
        f"{SETUP_COMMAND}. Clients: cloudseg.triton.client.TritonInference (gRPC).",
    )
    parser.add_argument(
        "--model-repository",
        type=Path,
        metavar="DIR",
        help="serve this repository (default: export one to a temporary folder first)",
    )
    parser.add_argument("--models", nargs="+", metavar="NAME", help="serve only these models")
    parser.add_argument("--address", default="0.0.0.0", help="bind address (default 0.0.0.0)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="default 8001")
    parser.add_argument("--http-port", type=int, default=8000, help="default 8000")
    parser.add_argument("--metrics-port", type=int, default=8002, help="default 8002")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads in the server (0: torch's default)"
    )
    parser.add_argument(
        "--workspace", type=Path, help="PyTriton's working folder (default: a temporary one)"
    )
    parser.add_argument(
        "--python",
        type=Path,
        help=f"the Triton environment's interpreter (default: ${ENV_PYTHON}, else "
        ".venv-triton/bin/python beside this venv or in the current folder)",
    )
    add_export_arguments(parser)
    # --kind: for a repository exported on the fly KIND_CPU unless given; for a given
    # repository its configs' kinds unless given. KIND_GPU without CUDA: one error line.
    parser.set_defaults(kind=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    python = find_triton_python(args.python)  # fail fast, before any export
    tmp = None
    repository = args.model_repository
    try:
        if repository is None:
            from cloudseg.triton.export import export_from_args

            tmp = tempfile.mkdtemp(prefix="cloudseg-triton-repo-")
            repository = Path(tmp)
            export_args = argparse.Namespace(**{**vars(args), "kind": args.kind or "KIND_CPU"})
            for model in export_from_args(export_args, repository):
                log.info("exported %s", model.name)
        elif not any(Path(repository).glob("*/config.pbtxt")):
            raise ServeError(f"no models (*/config.pbtxt) in {repository}")
        proc = ManagedProcess.start(
            server_command(python, repository, args), name="triton", env=server_env(python)
        )

        def _forward(signum, frame):
            proc.send_signal(signal.SIGTERM)

        old = {s: signal.signal(s, _forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            return proc.wait()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            proc.stop(grace=30, sig=signal.SIGTERM)  # nothing when it has exited
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
