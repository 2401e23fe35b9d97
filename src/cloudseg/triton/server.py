"""The Triton server process of ``cloudseg serve``: NVIDIA PyTriton serving the TorchScript
models of a model repository (``cloudseg export triton``) on this host.

It runs with ``.venv-triton``'s interpreter (nvidia-pytriton pins numpy<2, this project's venv
has numpy 2), by path, outside the cloudseg package: it imports only the standard library,
numpy, torch and pytriton (plus ``pbtxt.py`` next to it, loaded by path). Each model folder
``<name>/config.pbtxt`` + ``<name>/1/model.pt`` becomes a PyTriton model with the same name,
input and output, ``max_batch_size``, dynamic batcher (preferred batch sizes, queue delay) and
instance count, on the device its ``instance_group`` kind says (KIND_GPU: CUDA, or one clear
error where this environment's torch has none; KIND_AUTO: CUDA when present, saying so when
not; ``--kind`` overrides the configs), each ``model_warmup`` batch run once before serving.
Prints one line ``cloudseg serve: ready ...`` once every model is loaded;
SIGTERM or SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import sysconfig
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_DTYPES = {"TYPE_UINT8": "uint8", "TYPE_FP32": "float32", "TYPE_INT32": "int32"}


def _pbtxt():
    spec = importlib.util.spec_from_file_location("cloudseg_pbtxt", HERE / "pbtxt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def read_repository(repo: Path, only: list[str] | None = None) -> list[dict]:
    """The models of a repository: [{name, path (model.pt), config (parsed)}], sorted by name."""
    parse = _pbtxt().parse_pbtxt
    models = []
    for cfg_file in sorted(repo.glob("*/config.pbtxt")):
        config = parse(cfg_file.read_text())
        name = config.get("name", cfg_file.parent.name)
        if only and name not in only:
            continue
        versions = sorted(
            (p for p in cfg_file.parent.iterdir() if p.is_dir() and p.name.isdigit()),
            key=lambda p: int(p.name),
        )
        if not versions or not (versions[-1] / "model.pt").is_file():
            raise SystemExit(f"cloudseg serve: {cfg_file.parent} has no <version>/model.pt")
        models.append({"name": name, "path": versions[-1] / "model.pt", "config": config})
    if not models:
        raise SystemExit(f"cloudseg serve: no models (*/config.pbtxt) in {repo}")
    return models


def _tensors(entries, np, Tensor):
    out = []
    for entry in _as_list(entries):
        dtype = _DTYPES.get(entry["data_type"])
        if dtype is None:
            raise SystemExit(f"cloudseg serve: data type {entry['data_type']} is not supported")
        out.append(Tensor(name=entry["name"], dtype=np.dtype(dtype), shape=tuple(entry["dims"])))
    return out


def _infer_fn(model, in_name: str, out_name: str, torch, batch, device: str):
    @batch
    def infer(**inputs):
        with torch.inference_mode():
            result = model(torch.from_numpy(inputs[in_name]).to(device))
        return {out_name: result.cpu().numpy()}

    return infer


def model_device(name: str, config: dict, override: str | None, cuda: bool) -> str:
    """ "cuda" or "cpu" for a model: its instance kind (or ``override``) and its dtype; exits
    with one line where the kind or dtype needs CUDA and ``cuda`` is False."""
    groups = _as_list(config.get("instance_group"))
    kind = override or (groups[0].get("kind", "KIND_GPU") if groups else "KIND_GPU")
    params = {p["key"]: p["value"].get("string_value") for p in _as_list(config.get("parameters"))}
    dtype = params.get("dtype", "fp32")
    if kind == "KIND_CPU" and dtype == "fp32":
        return "cpu"
    if cuda:
        return "cuda"
    if kind == "KIND_AUTO" and dtype == "fp32":
        print(f"cloudseg serve: {name}: KIND_AUTO and no CUDA here: on the CPU", flush=True)
        return "cpu"
    why = f"GPU instances ({kind})" if kind != "KIND_CPU" else f"CUDA ({dtype} weights)"
    raise SystemExit(
        f"cloudseg serve: error: {name} needs {why}, but this server's torch has no CUDA "
        "device; serve fp32 models with --kind KIND_CPU, or run it on a GPU host"
    )


def warm_up(model, config: dict, torch, device: str) -> list[int]:
    """Run each ``model_warmup`` entry (zeros) once; returns the batch sizes run."""
    sizes = []
    for entry in _as_list(config.get("model_warmup")):
        for item in _as_list(entry.get("inputs")):
            shape = (int(entry.get("batch_size", 1)), *(int(d) for d in item["value"]["dims"]))
            with torch.inference_mode():
                model(torch.zeros(shape, dtype=torch.uint8, device=device))
            sizes.append(shape[0])
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cloudseg-triton-server", description=__doc__)
    parser.add_argument("--model-repository", required=True, type=Path)
    parser.add_argument("--models", nargs="*", help="serve only these models")
    parser.add_argument("--address", default="0.0.0.0", help="bind address (default 0.0.0.0)")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--workspace", type=Path, help="PyTriton's working folder")
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument(
        "--kind", choices=("KIND_GPU", "KIND_CPU", "KIND_AUTO"), help="instead of the configs'"
    )
    args = parser.parse_args(argv)

    # Triton's Python stub links libpython by name: make it find this interpreter's copy, not
    # the system's (PLATFORM.md, pitfall 1). Triton is started below, with this environment.
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    paths = os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    if libdir and libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *filter(None, paths)])

    def _stop(signum, frame):  # a background server ignores SIGINT: make both stop it
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    import numpy as np
    import torch
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    models = read_repository(args.model_repository, args.models)
    cuda = torch.cuda.is_available()  # each model's device, before any server starts
    devices = {m["name"]: model_device(m["name"], m["config"], args.kind, cuda) for m in models}
    config = TritonConfig(
        grpc_address=args.address,
        grpc_port=args.grpc_port,
        http_address=args.address,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_verbose=args.log_verbose,
    )
    try:
        with Triton(config=config, workspace=args.workspace) as triton:
            for spec in models:
                cfg = spec["config"]
                device = devices[spec["name"]]
                model = torch.jit.load(str(spec["path"]), map_location=device).eval()
                t0 = time.perf_counter()
                sizes = warm_up(model, cfg, torch, device)
                print(
                    f"cloudseg serve: {spec['name']} on {device}, warmed up batches "
                    f"{sizes} in {time.perf_counter() - t0:.1f} s",
                    flush=True,
                )
                inputs = _tensors(cfg.get("input"), np, Tensor)
                outputs = _tensors(cfg.get("output"), np, Tensor)
                if len(inputs) != 1 or len(outputs) != 1:
                    raise SystemExit(f"cloudseg serve: {spec['name']}: one input and one output")
                dyn = cfg.get("dynamic_batching", {}) or {}
                batcher = DynamicBatcher(
                    max_queue_delay_microseconds=int(dyn.get("max_queue_delay_microseconds", 0)),
                    preferred_batch_size=[int(b) for b in _as_list(dyn.get("preferred_batch_size"))]
                    or None,
                )
                count = sum(int(g.get("count", 1)) for g in _as_list(cfg.get("instance_group")))
                fns = [
                    _infer_fn(model, inputs[0].name, outputs[0].name, torch, batch, device)
                    for _ in range(max(1, count))
                ]
                triton.bind(
                    model_name=spec["name"],
                    infer_func=fns if len(fns) > 1 else fns[0],
                    inputs=inputs,
                    outputs=outputs,
                    config=ModelConfig(
                        max_batch_size=int(cfg.get("max_batch_size", 1)), batcher=batcher
                    ),
                    strict=True,
                )
            print(
                f"cloudseg serve: ready, grpc {args.address}:{args.grpc_port}, http "
                f"{args.http_port}, metrics {args.metrics_port}, models: "
                + ", ".join(m["name"] for m in models),
                flush=True,
            )
            triton.serve()
    except KeyboardInterrupt:
        pass
    print("cloudseg serve: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
