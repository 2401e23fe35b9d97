"""The standing GPU check: every CUDA path of the cloud in one run, then timing in the time left.

``python -m cloudseg.bench.gpu_check [--data DIR] [--budget-s S]`` (``bash bench/gpu_cloud.sh``
on a lent GPU machine). It prints its plan, then one line per section, ``PASS``, ``FAIL`` or
``SKIP`` with the reason, and goes on after a failure; the last line counts them, and the exit
status is 1 when a section failed. Sections, in order (compile and CUDA graphs last, as the
most likely to break the process):

* environment: torch, CUDA, device, driver, TF32 switches;
* inputs: frames from ``--data DIR`` (a few PNG/JPG, copied there by the caller; weights from
  ``DIR/weights`` when present) or synthetic ones, at ``--size``;
* pipeline per backend and dtype (fp32 = TF32 on Ampere+, fp16, bf16), modes sr, bilinear
  and full, against CPU fp32 labels (agreement %);
* LocalInference as the node runs it (buckets, warm-up when cuDNN tunes): mixed batch sizes,
  the first call of each size after warm-up against a repeat, padded batches against single
  frames;
* Triton export (fp32, fp16) traced and run on CUDA, against the eager pipeline;
* one training step per trainer (`cloudseg.bench.gpu_train`);
* torch.compile + CUDA graphs: labels against eager, a pyramid kept across a call.

Then `cloudseg bench cloud` runs, most wanted first, while ``--budget-s`` (from the start)
leaves room. Needs only torch, numpy and OpenCV (PyAV for the decode column): no ROS.
On a CPU the CUDA sections say SKIP and the rest runs small: ``test/test_gpu_check.py``.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cloudseg.restore.pipeline import RestorationPipeline

__all__ = ["Check", "Skip", "main"]

AGREEMENT_TRAINED = 0.97  # labels equal to CPU fp32 (trained weights; fp16 moves a few edges)
AGREEMENT_RANDOM = 0.60  # random weights: near-ties everywhere, a loose check of the path
FIRST_CALL_LIMIT_S = 0.5  # a first call after warm-up slower than this is a tuning stall
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class Skip(Exception):
    """A section that does not apply here (the reason is printed)."""


@dataclass
class Check:
    """What the sections share: options, device, frames, and cached CPU references."""

    args: argparse.Namespace
    device: torch.device
    camera: np.ndarray | None = None  # (N, H, W, 3) uint8 full-resolution frames
    trained: bool = False  # real weights found (agreement thresholds)
    refs: dict[tuple, np.ndarray] = field(default_factory=dict)
    cpu_pipelines: dict[str, RestorationPipeline] = field(default_factory=dict)  # per backend
    counts: dict[str, int] = field(default_factory=lambda: {"PASS": 0, "FAIL": 0, "SKIP": 0})
    t0: float = field(default_factory=time.perf_counter)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left_s(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def run(self, name: str, fn: Callable[[Check], str], needs_cuda: bool = False) -> None:
        """One section: PASS with its line, SKIP with the reason, FAIL with the error."""
        t0 = time.perf_counter()
        try:
            if needs_cuda and not self.cuda:
                raise Skip("needs CUDA (none here)")
            status, line = "PASS", fn(self)
        except Skip as exc:
            status, line = "SKIP", str(exc)
        except Exception as exc:  # report and go on: the next sections still run
            status, line = "FAIL", f"{type(exc).__name__}: {exc}"
            if self.args.verbose:
                traceback.print_exc()
        finally:
            if self.cuda:
                torch.cuda.empty_cache()
        self.counts[status] += 1
        print(f"[{status}] {name}: {line} ({time.perf_counter() - t0:.1f} s)", flush=True)

    def lr(self, scale: int) -> np.ndarray:
        """The frames as a x``scale`` stream (the compressor's area downsampling)."""
        from cloudseg.media.resize import downsample

        return np.stack([downsample(f, scale, "area") if scale > 1 else f for f in self.camera])


def _pipeline(check: Check, backend: str, device: str, dtype: str = "fp32", **kw):
    """A pipeline over copies of one set of models per backend (built once on the CPU: random
    weights, where used, are the same in every pipeline compared)."""
    if backend not in check.cpu_pipelines:
        weights = "default" if check.trained else None
        check.cpu_pipelines[backend] = RestorationPipeline(
            "carn_m", backend, sr_weights=weights, allow_untrained=True,
            seg_weights=weights if backend == "espnetv2" else None,
        )  # fmt: skip
    cpu = check.cpu_pipelines[backend]
    sr, seg = copy.deepcopy(cpu.sr), copy.deepcopy(cpu.segmenter)
    return RestorationPipeline.from_modules(sr, seg, backend, device=device, dtype=dtype, **kw)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


# --- sections -----------------------------------------------------------------------------


def environment(check: Check) -> str:
    text = f"python {platform.python_version()}, torch {torch.__version__}"
    if not check.cuda:
        return text + ", no CUDA: the CUDA sections say SKIP"
    cap = torch.cuda.get_device_capability()
    text += (
        f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
        f"{torch.cuda.get_device_name()} (sm_{cap[0]}{cap[1]}), TF32 cudnn "
        f"{torch.backends.cudnn.allow_tf32} matmul {torch.backends.cuda.matmul.allow_tf32}"
    )
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        text += f", driver {smi.stdout.strip()}"
    except (OSError, subprocess.TimeoutExpired):
        text += ", driver unknown (no nvidia-smi)"
    return text


def inputs(check: Check) -> str:
    import cv2

    width, height = check.args.size
    files: list[Path] = []
    data = check.args.data
    if data is not None and data.is_dir():
        files = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        files = files[: check.args.frames]
        if (data / "weights").is_dir():
            os.environ["CLOUDSEG_WEIGHTS"] = str((data / "weights").resolve())
    frames = []
    for path in files:
        bgr = cv2.imread(str(path))
        if bgr is not None:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            frames.append(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))
    where = f"{len(frames)} frames of {data}"
    if not frames:
        from cloudseg.bench.cloud import synthetic_frame

        frames = [synthetic_frame(width, height, 7 * i, i) for i in range(check.args.frames)]
        where = f"{len(frames)} synthetic frames" + (f" ({data} has none)" if data else "")
    check.camera = np.stack(frames)
    check.trained = _weights_found()
    weights = "real CARN-M + ESPNetv2 weights" if check.trained else "RANDOM weights"
    return f"{where} at {width}x{height}; {weights} (ICNet: random, none published)"


def _weights_found() -> bool:
    from cloudseg.models.registry import build_model

    try:
        build_model("carn_m", "default")
        build_model("espnetv2_s2_city_1024x512", "default")
    except Exception:  # no file, no download: random weights, loose thresholds
        return False
    return True


def pipeline_section(backend: str, dtype: str) -> Callable[[Check], str]:
    def run(check: Check) -> str:
        lr, camera = check.lr(4), check.camera
        if (backend, "full") not in check.refs:  # CPU fp32 labels, once per backend
            cpu = _pipeline(check, backend, "cpu")
            for mode in ("sr", "bilinear"):
                check.refs[backend, mode] = cpu.process(lr, mode).labels.numpy()
            full = _pipeline(check, backend, "cpu", scale=1)
            check.refs[backend, "full"] = full.process(camera, "full").labels.numpy()
        device = str(check.device)
        x4, full = (
            _pipeline(check, backend, device, dtype),
            _pipeline(check, backend, device, dtype, scale=1),
        )
        limit = AGREEMENT_TRAINED if check.trained and backend == "espnetv2" else AGREEMENT_RANDOM
        parts, worst = [], 1.0
        for mode, pipe, frames in (
            ("sr", x4, lr), ("bilinear", x4, lr), ("full", full, camera),
        ):  # fmt: skip
            got = pipe.process(frames, mode).labels.cpu().numpy()
            agree = _agreement(got, check.refs[backend, mode])
            worst = min(worst, agree)
            parts.append(f"{mode} {100 * agree:.2f} %")
        from cloudseg.bench.cloud import precision_label

        text = f"{precision_label(dtype, check.device.type)} vs CPU fp32: " + ", ".join(parts)
        assert worst >= limit, f"{text} (below {100 * limit:.0f} %)"
        return text

    return run


def local_inference(check: Check) -> str:
    from cloudseg.cloud.local import LocalInference
    from cloudseg.cloud.service import CloudService

    dtype = "fp16" if check.cuda else "fp32"
    weights = "default" if check.trained else None
    service = CloudService(
        device=str(check.device), dtype=dtype, sr_weights=weights, seg_weights=weights or None,
        allow_untrained=True, scales=(4,), cpu_max_width=None,
    )  # fmt: skip
    height, width = check.camera.shape[1:3]
    node = LocalInference(service, max_batch=8, bucketing=True, warmup_camera=(width, height))
    lr = check.lr(4)
    frames = np.concatenate([lr] * (8 // len(lr) + 1))
    firsts, repeats = {}, {}
    labels = {}
    for n in (1, 3, 8, 2, 5, 1, 3, 8, 2, 5):  # every size twice: first call, then a repeat
        out = node.infer(frames[:n], 4)
        (repeats if n in firsts else firsts)[n] = out.ms / 1e3
        labels[n] = out.labels
    single = [node.infer(frames[i : i + 1], 4).labels[0] for i in range(3)]
    agree = min(_agreement(labels[3][i], single[i]) for i in range(3))
    profiling = node.infer(check.camera[:1], 1)  # the controller's full-size frame
    text = (
        f"{dtype}, buckets {node.buckets}, warm-up {node.warmup_s:.1f} s, first/repeat s: "
        + ", ".join(f"b{n} {firsts[n]:.3f}/{repeats[n]:.3f}" for n in sorted(firsts))
        + f"; padded vs single {100 * agree:.2f} %; profiling frame {profiling.ms:.0f} ms"
    )
    assert agree >= 0.99, text
    stalls = [n for n in firsts if check.cuda and firsts[n] > FIRST_CALL_LIMIT_S]
    assert not stalls, f"{text}: first calls over {FIRST_CALL_LIMIT_S} s (tuning stalls)"
    return text


def triton_section(dtype: str) -> Callable[[Check], str]:
    def run(check: Check) -> str:
        from cloudseg.triton.export import export_model
        from cloudseg.triton.pbtxt import parse_pbtxt

        if dtype != "fp32" and not check.cuda:
            raise Skip(f"{dtype} export traces on CUDA only")
        pipe = _pipeline(check, "espnetv2", str(check.device), dtype)
        height, width = check.camera.shape[1:3]
        with tempfile.TemporaryDirectory() as repo:
            model = export_model(
                pipe, repo, "sr", (width, height), check_frames=check.lr(4),
                kind="KIND_GPU" if check.cuda else "KIND_CPU",
            )  # fmt: skip
            traced = torch.jit.load(str(model.path / "1" / "model.pt"), map_location=check.device)
            three = torch.from_numpy(np.concatenate([check.lr(4)] * 3)[:3]).to(check.device)
            out = traced(three)
            warmups = parse_pbtxt((model.path / "config.pbtxt").read_text())["model_warmup"]
        assert out.dtype == torch.uint8 and out.shape[0] == 3, f"{out.shape} {out.dtype}"
        text = (
            f"{model.name} traced on {check.device} {dtype}, {100 * model.agreement:.2f} % as "
            f"eager, batch 3 ran, warm-up batches {[w['batch_size'] for w in warmups]}"
        )
        assert model.agreement >= 0.99, text
        return text + _served_note()

    return run


def _served_note() -> str:
    try:
        import pytriton  # noqa: F401
        import tritonclient.grpc  # noqa: F401
    except ImportError:
        return "; serving SKIP: no pytriton/tritonclient here (cloudseg serve: test_triton_gpu)"
    return "; serving: not run by this check (test/test_triton.py serves)"


def train_section(trainer: str) -> Callable[[Check], str]:
    def run(check: Check) -> str:
        from cloudseg.bench.gpu_train import train_step

        return train_step(trainer, check.device)

    return run


def compiled(check: Check) -> str:
    eager = _pipeline(check, "espnetv2", str(check.device), "fp16")
    pipe = _pipeline(check, "espnetv2", str(check.device), "fp16", compile=True)
    lr = check.lr(4)
    t0 = time.perf_counter()
    for _ in range(3):  # compile, record, replay
        got = pipe.process(lr, "sr").labels.cpu().numpy()
    first_s = time.perf_counter() - t0
    agree = _agreement(got, eager.process(lr, "sr").labels.cpu().numpy())
    kept = pipe.restore(lr, "sr")
    copy = kept.levels[1].clone()
    pipe.restore(255 - lr, "sr")  # other frames: a replay writes other values
    intact = torch.equal(kept.levels[1], copy)
    text = f"3 calls in {first_s:.1f} s, {100 * agree:.2f} % as eager, pyramid kept: {intact}"
    assert agree >= 0.99 and intact, text
    return text


TIMING_RUNS: list[tuple[str, dict]] = [  # most wanted first
    ("espnetv2 fp16 b1,8", {"backend": "espnetv2", "dtype": ("fp16",)}),
    ("espnetv2 fp16 b1,8 cudnn.benchmark off", {"backend": "espnetv2", "dtype": ("fp16",),
                                                "cudnn_benchmark": False}),
    ("icnet fp16 b1,8", {"backend": "icnet", "dtype": ("fp16",)}),
    ("espnetv2 tf32 b1,8", {"backend": "espnetv2", "dtype": ("fp32",)}),
    ("espnetv2 fp16 b1,8 compiled", {"backend": "espnetv2", "dtype": ("fp16",), "compile": True}),
    ("icnet fp32 (tf32 off) b1,8", {"backend": "icnet", "dtype": ("fp32",), "tf32": False}),
    ("icnet fp16 b1,8 CARN", {"backend": "icnet", "dtype": ("fp16",), "sr_model": "carn"}),
]  # fmt: skip
TIMING_RUN_S = 40.0  # a run's estimate (batches 1 and 8 at 2048x1024, 20 + 5 iterations)


def timing_runs(check: Check) -> None:
    from cloudseg.bench.cloud import CloudBenchOptions, format_table, run_bench

    for name, options in TIMING_RUNS:
        if not check.cuda:
            check.run(f"timing {name}", lambda c: "", needs_cuda=True)
            continue
        if check.left_s() < TIMING_RUN_S:
            check.counts["SKIP"] += 1
            print(f"[SKIP] timing {name}: budget ({check.left_s():.0f} s left)", flush=True)
            continue
        opts = CloudBenchOptions(
            device="cuda", batch=(1, 8), size="x".join(map(str, check.args.size)), iters=20,
            warmup=5, **options,
        )  # fmt: skip
        check.run(f"timing {name}", lambda c, o=opts: "\n" + format_table(run_bench(o)))


def plan(check: Check) -> list[tuple[str, Callable[[Check], str], bool]]:
    sections: list[tuple[str, Callable[[Check], str], bool]] = [
        ("environment", environment, False),
        ("inputs", inputs, False),
    ]
    for backend in ("espnetv2", "icnet"):
        for dtype in ("fp32", "fp16", "bf16"):
            sections.append((f"pipeline {backend} {dtype}", pipeline_section(backend, dtype), True))
    sections.append(("LocalInference mixed batches", local_inference, False))
    sections += [(f"triton export {d}", triton_section(d), False) for d in ("fp32", "fp16")]
    sections += [(f"train step {t}", train_section(t), True) for t in _trainers()]
    sections.append(("torch.compile + CUDA graphs", compiled, True))
    return sections


def _no_inputs(check: Check) -> str:
    raise Skip("no inputs (the inputs section failed)")


def _device(text: str) -> torch.device:
    """``--device`` as a torch.device, by cloudseg's one device parser."""
    from cloudseg.devices import resolve_device

    return resolve_device(text)


def _trainers() -> tuple[str, ...]:
    return ("sr", "finetune", "icnet", "stream", "selector")


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    if width % 64 or height % 64:
        raise argparse.ArgumentTypeError(f"--size sides must be multiples of 64, got {text}")
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cloudseg.bench.gpu_check", description=__doc__)
    parser.add_argument("--data", type=Path, help="a folder of a few PNG/JPG frames (+ weights/)")
    parser.add_argument("--size", type=_size, default=(2048, 1024), help="camera WxH")
    parser.add_argument("--frames", type=int, default=2, help="frames used (default 2)")
    parser.add_argument("--budget-s", type=float, default=280.0, help="whole run, seconds")
    parser.add_argument("--device", default="auto", help="auto (default), cuda, cuda:N or cpu")
    parser.add_argument("--verbose", action="store_true", help="tracebacks of failures")
    args = parser.parse_args(argv)
    check = Check(args, _device(args.device))
    if check.cuda:
        torch.cuda.set_device(check.device)
    sections = plan(check)
    print(f"gpu check plan: {check.device}, camera {args.size[0]}x{args.size[1]}, "
          f"budget {args.budget_s:.0f} s, data {args.data or 'synthetic'}", flush=True)  # fmt: skip
    for i, (title, _, needs_cuda) in enumerate(sections, 1):
        note = " (CUDA: SKIP here)" if needs_cuda and not check.cuda else ""
        print(f"  {i:2d}. {title}{note}")
    print(f"  then timing runs, ~{TIMING_RUN_S:.0f} s each, while the budget lasts: "
          + "; ".join(n for n, _ in TIMING_RUNS), flush=True)  # fmt: skip
    for title, fn, needs_cuda in sections:
        ready = check.camera is not None or title in ("environment", "inputs")
        check.run(title, fn if ready else _no_inputs, needs_cuda)
    timing_runs(check)
    c = check.counts
    print(f"gpu check: {c['PASS']} PASS, {c['FAIL']} FAIL, {c['SKIP']} SKIP in "
          f"{time.perf_counter() - check.t0:.0f} s", flush=True)  # fmt: skip
    return 1 if c["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
