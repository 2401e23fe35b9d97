"""``cloudseg export triton DIR``: a Triton Inference Server model repository of the cloud's
restore + segment graph.

One model per (scale, mode), named ``cloudseg_x{scale}_{sr|bilinear}`` (:func:`model_name`):
:class:`RestorationPipeline`'s route for that scale and mode, for one camera size, traced to
TorchScript (``<model>/1/model.pt``) with a ``config.pbtxt`` for Triton's PyTorch backend
(``platform: "pytorch_libtorch"``):

* input ``lr``: UINT8 ``[h, w, 3]`` RGB (the batch dimension is implicit, ``max_batch_size``);
* output ``labels``: UINT8 ``[H, W]`` Cityscapes train ids (255 = ignore) at the size the
  pipeline segments at (its trained resolution, or ``--cpu-max-width``), which is ``1/k`` of the
  camera size (``reduced_by`` in the model's ``parameters``): scale labels back up by ``k``.

The route (SR x2 to the trained resolution, SR x4 then area downsampling, ...) depends on the
input size, so each model is traced for one LR size (the camera size divided by the scale) and
its dims are fixed; the batch dimension stays free (checked at export with two batch sizes).
``dynamic_batching`` (preferred batch sizes, queue delay) and ``instance_group`` (count, kind)
come from the options; ``model_warmup`` runs every batch bucket (1, 2, 4, ..., max batch: the
cloud's buckets) once at load, so no first call of a batch size waits for tuning past a
client's deadline. ``--dtype fp16`` (CUDA: trace with ``--device cuda``) exports the network
in half precision, as the cloud runs it locally on CUDA; such a model needs GPU instances.
The same repository serves the official Triton server container on GPU hosts
(``tritonserver --model-repository DIR``; the PyTorch backend maps the model to the
instance's GPU) and ``cloudseg serve`` (pytriton; on the CPU with ``--kind KIND_CPU``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from cloudseg.cloud.shapes import batch_buckets
from cloudseg.restore.pipeline import RestorationPipeline
from cloudseg.routes import DEFAULT_ROUTE, seg_weights_for
from cloudseg.triton.pbtxt import parse_pbtxt

__all__ = [
    "ExportedModel",
    "PipelineGraph",
    "export_model",
    "export_repository",
    "main",
    "model_name",
    "render_config",
]

log = logging.getLogger(__name__)

TRITON_MODES = ("sr", "bilinear")
MODEL_FILE = "model.pt"
INPUT_NAME = "lr"
OUTPUT_NAME = "labels"


def model_name(scale: int, mode: str) -> str:
    """The Triton model name of a (scale, mode): ``cloudseg_x4_sr``, ``cloudseg_x2_bilinear``."""
    if mode not in TRITON_MODES:
        raise ValueError(f"mode must be one of {TRITON_MODES}, got {mode!r}")
    return f"cloudseg_x{int(scale)}_{mode}"


class PipelineGraph(nn.Module):
    """The pipeline's restore + segment route for one mode and one LR size as a module:
    ``lr`` uint8 (N, h, w, 3) -> labels uint8 (N, H, W). It calls the pipeline's own stages
    (:meth:`RestorationPipeline._restore`, ``_segment``), so the traced graph is the eager one;
    the networks and the normalisation constants are registered here so that a trace keeps them
    as the module's parameters and buffers (moved with ``map_location``)."""

    def __init__(self, pipeline: RestorationPipeline, mode: str, reduced_by: int) -> None:
        super().__init__()
        if pipeline.segmenter is None:
            raise ValueError("the pipeline restores only; a Triton model needs a segmenter")
        if mode == "sr" and pipeline.sr is None:
            raise ValueError("mode 'sr' needs a pipeline with an SR model")
        self.pipeline = pipeline  # plain attribute (not an nn.Module)
        self.sr = pipeline.sr
        self.segmenter = pipeline.segmenter
        self.register_buffer("mean", pipeline._mean)
        self.register_buffer("std", pipeline._std)
        self.mode = mode
        self.reduced_by = int(reduced_by)

    def forward(self, lr: Tensor) -> Tensor:
        x = lr.permute(0, 3, 1, 2).to(self.pipeline.dtype).div(255.0)
        levels = self.pipeline._restore(x, self.mode, self.reduced_by)
        return self.pipeline._segment(levels)


@dataclass
class ExportedModel:
    """One exported model: its name and folder, the LR input and label output sizes (h, w),
    the reduction ``k`` and the agreement of the trace with the eager pipeline on the check
    frames (fraction of equal label pixels; None when no frames were given)."""

    name: str
    path: Path
    input_hw: tuple[int, int]
    output_hw: tuple[int, int]
    reduced_by: int
    agreement: float | None


def render_config(
    name: str,
    input_hw: tuple[int, int],
    output_hw: tuple[int, int],
    *,
    max_batch_size: int = 8,
    preferred_batch_sizes: tuple[int, ...] = (4, 8),
    max_queue_delay_us: int = 2000,
    instances: int = 1,
    kind: str = "KIND_GPU",
    parameters: dict[str, str] | None = None,
    dtype: str = "fp32",
) -> str:
    """The ``config.pbtxt`` text of one model (Triton's protobuf text format), with a
    ``model_warmup`` entry per batch bucket (zeros). ``dtype``: the network's (not the
    inputs'); fp16 and bf16 need ``kind`` KIND_GPU or KIND_AUTO."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
    bad = [b for b in preferred_batch_sizes if not 1 <= b <= max_batch_size]
    if bad:
        raise ValueError(f"preferred batch sizes {bad} are outside 1..{max_batch_size}")
    if kind not in ("KIND_GPU", "KIND_CPU", "KIND_AUTO"):
        raise ValueError(f"instance kind must be KIND_GPU, KIND_CPU or KIND_AUTO, got {kind!r}")
    if dtype != "fp32" and kind == "KIND_CPU":
        raise ValueError(f"{dtype} models run on GPU instances: use KIND_GPU, not KIND_CPU")
    h, w = input_hw
    oh, ow = output_hw
    lines = [
        f'name: "{name}"',
        'platform: "pytorch_libtorch"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        "  {",
        f'    name: "{INPUT_NAME}"',
        "    data_type: TYPE_UINT8",
        f"    dims: [ {h}, {w}, 3 ]",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{OUTPUT_NAME}"',
        "    data_type: TYPE_UINT8",
        f"    dims: [ {oh}, {ow} ]",
        "  }",
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred_batch_sizes)} ]",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {instances}",
        f"    kind: {kind}",
        "  }",
        "]",
        "model_warmup [",
    ]
    buckets = batch_buckets(max_batch_size)
    for b in buckets:  # list items are comma-separated in protobuf text format
        lines += [
            f'  {{ name: "batch_{b}" batch_size: {b} inputs {{ key: "{INPUT_NAME}" value: {{',
            f"    data_type: TYPE_UINT8 dims: [ {h}, {w}, 3 ] zero_data: true }} }} }}"
            + ("," if b != buckets[-1] else ""),
        ]
    lines.append("]")
    for key, value in (parameters or {}).items():
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        lines += [
            "parameters {",
            f'  key: "{key}"',
            f'  value: {{ string_value: "{text}" }}',
            "}",
        ]
    return "\n".join(lines) + "\n"


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def export_model(
    pipeline: RestorationPipeline,
    out_dir: str | Path,
    mode: str,
    camera_size: tuple[int, int],
    *,
    check_frames: np.ndarray | None = None,
    **config: object,
) -> ExportedModel:
    """Trace ``pipeline``'s route for ``mode`` at ``camera_size`` (width, height) into
    ``out_dir/<name>/1/model.pt`` and write ``config.pbtxt``. ``check_frames``: uint8 LR frames
    (N, h, w, 3) of that size to compare the trace with the eager pipeline on; ``config``:
    :func:`render_config`'s options."""
    scale = pipeline.scale
    width, height = camera_size
    if width % scale or height % scale:
        raise ValueError(f"camera size {width}x{height} is not divisible by the scale {scale}")
    h, w = height // scale, width // scale
    name = model_name(scale, mode)
    k = pipeline._reduction(w, mode)
    graph = PipelineGraph(pipeline, mode, k).eval()
    example = torch.zeros((2, h, w, 3), dtype=torch.uint8, device=pipeline.device)
    if check_frames is not None:
        frames = torch.from_numpy(np.ascontiguousarray(check_frames)).to(pipeline.device)
        if tuple(frames.shape[1:]) != (h, w, 3):
            raise ValueError(
                f"check frames are {tuple(frames.shape)}, the model takes (N, {h}, {w}, 3)"
            )
        example = frames[:2] if len(frames) >= 2 else frames.repeat(2, 1, 1, 1)
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # fixed sizes: as intended
        # TorchScript is what Triton's PyTorch backend (pytorch_libtorch) loads
        warnings.filterwarnings("ignore", r".*torch\.jit.* is deprecated", DeprecationWarning)
        traced = torch.jit.trace(graph, example, check_trace=False)
        out = traced(example[:1])  # another batch size than the trace's: the batch dim is free
    oh, ow = (int(v) for v in out.shape[-2:])
    if out.dtype != torch.uint8 or out.shape[0] != 1:
        raise RuntimeError(f"traced model gives {tuple(out.shape)} {out.dtype}")
    agreement = None
    if check_frames is not None:
        eager = pipeline.process(check_frames, mode).labels.cpu().numpy()
        with torch.no_grad():
            got = traced(frames).cpu().numpy()
        agreement = _agreement(got, eager)
    model_dir = Path(out_dir) / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    traced.save(str(model_dir / "1" / MODEL_FILE))
    meta = {
        "scale": str(scale),
        "mode": mode,
        "camera_size": f"{width}x{height}",
        "reduced_by": str(k),
        "traced_from": pipeline.describe(),  # device and dtype of the trace, not of the server
        "dtype": pipeline.dtype_name,
    }
    text = render_config(
        name, (h, w), (oh, ow), parameters=meta, dtype=pipeline.dtype_name, **config
    )  # type: ignore[arg-type]
    parse_pbtxt(text)  # what we write must parse
    (model_dir / "config.pbtxt").write_text(text)
    log.info(
        "%s: %dx%d -> labels %dx%d (1/%d of the camera), traced in %.1f s%s",
        name,
        w,
        h,
        ow,
        oh,
        k,
        time.perf_counter() - t0,
        "" if agreement is None else f", {100 * agreement:.2f} % of labels as eager",
    )
    return ExportedModel(name, model_dir, (h, w), (oh, ow), k, agreement)


def export_repository(
    out_dir: str | Path,
    *,
    scales: tuple[int, ...] = (4,),
    modes: tuple[str, ...] = TRITON_MODES,
    camera_size: tuple[int, int] = (2048, 1024),
    sr_model: str = "carn_m",
    backend: str = "espnetv2",
    device: str = "cpu",
    dtype: str = "fp32",
    seg_size: str = "trained",
    sr_route: str = "direct",
    cpu_max_width: int | None = None,
    sr_weights: str | Path | None = "default",
    seg_weights: str | Path | None = DEFAULT_ROUTE.seg_weights,
    allow_untrained: bool = False,
    check_frames: dict[int, np.ndarray] | None = None,
    **config: object,
) -> list[ExportedModel]:
    """Export every (scale, mode) into the repository ``out_dir``; ``check_frames``: per scale,
    LR frames to check the traces against the eager pipeline (see :func:`export_model`)."""
    if dtype != "fp32" and config.get("kind") == "KIND_CPU":  # before any model is built
        raise ValueError(f"{dtype} models run on GPU instances: use KIND_GPU, not KIND_CPU")
    out = []
    for scale in scales:
        pipeline = RestorationPipeline(
            sr_model if "sr" in modes else None,
            backend,
            device=device,
            dtype=dtype,
            scale=scale,
            seg_size=seg_size,
            sr_route=sr_route,
            cpu_max_width=cpu_max_width,
            sr_weights=sr_weights,
            seg_weights=seg_weights_for(backend, seg_weights)
            if isinstance(seg_weights, str)
            else seg_weights,
            allow_untrained=allow_untrained,
        )
        for mode in modes:
            frames = None if check_frames is None else check_frames.get(scale)
            out.append(
                export_model(pipeline, out_dir, mode, camera_size, check_frames=frames, **config)
            )
    return out


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return width, height


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say which models to export and how (shared with ``cloudseg serve``)."""
    g = parser.add_argument_group("models (what is exported)")
    g.add_argument(
        "--scales",
        type=_ints,
        default=(4,),
        metavar="S[,S..]",
        help="downsampling factors, one model each (default 4)",
    )
    g.add_argument(
        "--modes",
        default="sr,bilinear",
        help="restoration modes, comma-separated: sr (CARN), bilinear (SR bypass); default both",
    )
    g.add_argument(
        "--camera-size",
        type=_size,
        default=(2048, 1024),
        metavar="WxH",
        help="the vehicle camera's size (default 2048x1024); the model's LR input is this "
        "divided by the scale, and its dims are fixed (the route depends on the size)",
    )
    g.add_argument("--backend", default="espnetv2", choices=("espnetv2", "icnet"))
    g.add_argument("--sr-model", default="carn_m", help="SR model (default carn_m)")
    g.add_argument("--sr-weights", default="default", help="SR weights file (default: registry)")
    g.add_argument(
        "--seg-weights",
        default=DEFAULT_ROUTE.seg_weights,
        help=f"segmenter weights (default {DEFAULT_ROUTE.seg_weights}: the cloud's default "
        "route's; 'city': the official ESPNetv2; or a path)",
    )
    g.add_argument(
        "--allow-untrained",
        action="store_true",
        help="allow random weights where none exist (ICNet here); marked in the config",
    )
    g.add_argument(
        "--seg-size",
        default="trained",
        choices=("trained", "full"),
        help="segment at the weights' trained resolution (default) or at the camera size",
    )
    g.add_argument("--sr-route", default="direct", choices=("direct", "full"))
    g.add_argument(
        "--cpu-max-width",
        type=int,
        help="reduced-resolution CPU mode: segment at most this wide (for CPU servers)",
    )
    g.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="trace on this device (default cpu; Triton's PyTorch backend maps the model to "
        "its instance's device when it loads it)",
    )
    g.add_argument(
        "--dtype",
        default="fp32",
        choices=("fp32", "fp16", "bf16"),
        help="the networks' precision (default fp32; fp16, as the cloud runs locally on CUDA, "
        "and bf16 need --device cuda and GPU instances)",
    )
    g = parser.add_argument_group("config.pbtxt (how Triton runs them)")
    g.add_argument("--max-batch-size", type=int, default=8, help="default 8")
    g.add_argument(
        "--preferred-batch-sizes", type=_ints, default=(4, 8), metavar="B[,B..]", help="default 4,8"
    )
    g.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=2000,
        help="how long Triton waits to fill a batch, microseconds (default 2000)",
    )
    g.add_argument("--instances", type=int, default=1, help="instances per model (default 1)")
    g.add_argument(
        "--kind",
        default="KIND_GPU",
        choices=("KIND_GPU", "KIND_CPU", "KIND_AUTO"),
        help="instance kind (default KIND_GPU, for the official server on GPU hosts)",
    )


def export_from_args(args: argparse.Namespace, out_dir: str | Path) -> list[ExportedModel]:
    """:func:`export_repository` with the options of :func:`add_export_arguments`."""
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    bad = [m for m in modes if m not in TRITON_MODES]
    if bad or not modes:
        raise ValueError(f"--modes: expected some of {', '.join(TRITON_MODES)}, got {args.modes!r}")
    return export_repository(
        out_dir,
        scales=args.scales,
        modes=modes,
        camera_size=args.camera_size,
        sr_model=args.sr_model,
        backend=args.backend,
        device=args.device,
        dtype=args.dtype,
        seg_size=args.seg_size,
        sr_route=args.sr_route,
        cpu_max_width=args.cpu_max_width,
        sr_weights=args.sr_weights,
        seg_weights=args.seg_weights,
        allow_untrained=args.allow_untrained,
        max_batch_size=args.max_batch_size,
        preferred_batch_sizes=args.preferred_batch_sizes,
        max_queue_delay_us=args.max_queue_delay_us,
        instances=args.instances,
        kind=args.kind,
    )


def main(argv: list[str] | None = None) -> int:
    """``cloudseg export triton DIR [options]``."""
    parser = argparse.ArgumentParser(
        prog="cloudseg export triton",
        description="Write a Triton Inference Server model repository: one TorchScript model "
        "(restore + segment, model.pt) with its config.pbtxt per (scale, mode), named "
        "cloudseg_x{scale}_{sr|bilinear}; input lr UINT8 [h, w, 3], output labels UINT8 "
        "[H, W] (train ids). Serve it with `tritonserver --model-repository DIR` (GPU hosts) or "
        "`cloudseg serve --model-repository DIR` (this host, pytriton).",
    )
    parser.add_argument("directory", type=Path, help="the model repository to write")
    add_export_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON line per model")
    args = parser.parse_args(argv)
    for model in export_from_args(args, args.directory):
        if args.json:
            print(
                json.dumps(
                    {
                        "name": model.name,
                        "path": str(model.path),
                        "input_hw": model.input_hw,
                        "output_hw": model.output_hw,
                        "reduced_by": model.reduced_by,
                    }
                )
            )
        else:
            print(
                f"{model.name}: lr {model.input_hw[1]}x{model.input_hw[0]} -> labels "
                f"{model.output_hw[1]}x{model.output_hw[0]} (1/{model.reduced_by} of the camera) "
                f"in {model.path}"
            )
    return 0
