"""``cloudseg train sr`` and ``cloudseg train finetune``: CARN trained on what the cloud receives.

* ``sr``: L1 image loss on any frames (no labels), x2 and x4 heads from one body pass, from the
  official CARN-M weights or from scratch.
* ``finetune``: the CloudSeg hybrid loss ``L1(SR(LR), HR) + lambda * CE(seg(SR(LR)), target)``
  with the segmenter frozen (its weights never change, gradients only reach SR). SR runs by
  the factor the serving pipeline uses to reach the segmenter's trained resolution (x2 for a
  x4 stream and ESPNetv2's 1024x512 weights). Targets: ``gt`` (fine labels), ``hr`` (the frozen
  segmenter's own labels on the original frame: no annotation needed), or ``both`` (ground
  truth where a frame has it, else hr).

The LR inputs are made by :class:`cloudseg.train.data.DegradedFrames`: the compressor's
downsampling and encoder (the real H.264 round trip, IDR and P-frames) at sampled settings
around the default. Every run has a fixed seed, a progress bar, a CSV log (losses and
validation PSNR / mIoU through the real stream) and resumable checkpoints with a model card.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from cloudseg.devices import device_arg, resolve_device
from cloudseg.media.codecs import CodecError
from cloudseg.media.resize import resize_labels
from cloudseg.media.stream import CompressorSettings, default_compressor_settings
from cloudseg.models.cards import check_card
from cloudseg.models.registry import UnknownModelError, build_model, get_spec
from cloudseg.models.weights import ENV_WEIGHTS
from cloudseg.restore.backends import BACKENDS, PipelineError, trained_resolution
from cloudseg.train.checkpoint import (
    CsvLog,
    TrainError,
    load_training_state,
    run_training,
    save_checkpoint,
    seed_everything,
    size_arg,
)
from cloudseg.train.data import (
    CropBatch,
    DegradedFrames,
    label_targets,
    load_streams,
    sample_crops,
)
from cloudseg.train.segmenter import IGNORE_ID, FrozenSegmenter

__all__ = ["TrainError", "build_parser", "compute_loss", "main", "run"]

log = logging.getLogger(__name__)

TARGETS = ("gt", "hr", "both")


def default_crfs() -> list[int]:
    """Five CRFs centred on the compressor's default (step 2): what the cloud receives when the
    controller moves the rate a little either way."""
    from cloudseg.graph import COMPRESSOR

    centre = int(COMPRESSOR.defaults()["crf"])
    return [min(51, max(0, centre + d)) for d in (-4, -2, 0, 2, 4)]


def _crfs(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated CRFs, got {text!r}") from None
    if not values or not all(0 <= v <= 51 for v in values):
        raise argparse.ArgumentTypeError(f"CRFs must be 0..51, got {text!r}")
    return values


def build_parser(what: str) -> argparse.ArgumentParser:
    finetune = what == "finetune"
    parser = argparse.ArgumentParser(
        prog=f"cloudseg train {what}",
        description=(
            "Fine-tune CARN to help the segmenter: L1(SR(LR), HR) + lambda * CE(seg(SR(LR)), "
            "target), segmenter frozen."
            if finetune
            else "Train CARN super-resolution (x2 and x4 heads together, L1 loss) on any frames."
        )
        + " LR inputs are made exactly as the cloud receives them: the compressor's area "
        "downsampling and H.264 encoder (IDR and P-frames) at sampled CRFs, then the decoder.",
        epilog="Example: cloudseg train "
        + (
            "finetune --data ../shared/data/cityscapes ../shared/data/sequences/aachen_seq0000 "
            "--targets both --out runs/ft/carn_m_ft.pth"
            if finetune
            else "sr --data ../shared/data/sequences/aachen_seq0000 --out runs/sr/carn_m_sr.pth"
        ),
    )
    parser.add_argument(
        "--data",
        nargs="+",
        required=True,
        type=Path,
        help="Cityscapes roots (their --split, labelled), frame folders, videos or rosbag2 files",
    )
    parser.add_argument("--split", default="train", help="Cityscapes split (default train)")
    parser.add_argument(
        "--max-frames", type=int, default=0, help="at most N frames per input (0 = all)"
    )
    parser.add_argument("--every", type=int, default=1, help="every N-th frame of a sequence")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint path (.pth)")
    parser.add_argument("--sr-model", default="carn_m", help="SR architecture (default carn_m)")
    parser.add_argument(
        "--init",
        default="official",
        help="start weights: 'official' (the published CARN-M, default), 'scratch', or a "
        "checkpoint with a model card (e.g. from cloudseg train sr)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from --out's state")
    parser.add_argument("--steps", type=int, default=2000 if finetune else 4000)
    parser.add_argument("--batch-size", type=int, default=4 if finetune else 16)
    parser.add_argument(
        "--crop",
        type=size_arg(8),
        default=(128, 128) if finetune else (48, 48),
        help="LR crop WIDTHxHEIGHT (default "
        + ("128x128: the segmenter needs context)" if finetune else "48x48)"),
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=1e-4,
        help="Adam learning rate (default 1e-4, from the sweep in docs/benchmarks/accuracy.md); "
        "with --resume it applies from the saved step on (a step schedule, recorded in the card)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=4, help="stream downsampling (default 4)")
    parser.add_argument(
        "--crfs",
        type=_crfs,
        default=default_crfs(),
        help="H.264 CRFs sampled around the compressor's default (default "
        + ",".join(str(c) for c in default_crfs())
        + ")",
    )
    if finetune:
        parser.add_argument(
            "--backend", default="espnetv2", help="frozen segmenter (backend or registry name)"
        )
        parser.add_argument("--seg-weights", default="default", help="segmenter weights")
        parser.add_argument("--targets", default="both", choices=TARGETS)
        parser.add_argument(
            "--lambda", dest="lam", type=float, default=1.0, help="weight of the CE term"
        )
    parser.add_argument("--val-data", type=Path, help="Cityscapes root for validation")
    parser.add_argument("--val-split", default="val")
    parser.add_argument("--val-every", type=int, default=250, help="steps between validations")
    parser.add_argument("--val-limit", type=int, default=0, help="validation frames (0 = all)")
    parser.add_argument("--save-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--weights-dir", type=Path, help=f"sets ${ENV_WEIGHTS}")
    parser.add_argument(
        "--device",
        type=device_arg,
        default="auto",
        help="cpu, cuda, cuda:N or auto (default: auto)",
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


# --- models ----------------------------------------------------------------------------------


def _build_sr(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any]]:
    """The SR model to train and how it started: {"init": ..., "card": the start's card}."""
    try:
        spec = get_spec(args.sr_model)
    except KeyError as exc:
        raise TrainError(str(exc)) from None
    if spec.task != "sr":
        raise TrainError(f"{args.sr_model!r} is not a super-resolution model")
    if args.init == "scratch":
        return build_model(args.sr_model, None, allow_untrained=True), {"init": "scratch"}
    if args.init == "official":
        key = next(iter(spec.weights))  # the published file is registered first
        model = build_model(args.sr_model, key)
        return model, {"init": f"{args.sr_model} official ({model.weights_info.filename})"}
    card = check_card(args.init, args.sr_model)
    return build_model(args.sr_model, Path(args.init)), {"init": str(args.init), "init_card": card}


def _segment_factor(seg_width: int | None, camera_width: int) -> int:
    """k: the pipeline segments at 1/k of the camera size (as RestorationPipeline does)."""
    return 1 if seg_width is None else max(1, round(camera_width / seg_width))


# --- validation ------------------------------------------------------------------------------


@torch.no_grad()
def validate(
    sr: nn.Module,
    segmenter: nn.Module | None,
    backend: str,
    settings: CompressorSettings,
    root: Path,
    split: str,
    limit: int,
    device: torch.device,
) -> dict[str, float]:
    """PSNR of the restored frame and (with a segmenter) mIoU of the labels, through the real
    stream and the serving pipeline, on a Cityscapes split."""
    from cloudseg.data.cityscapes import list_pairs, load_label_train_ids, load_rgb
    from cloudseg.media.quality import psnr
    from cloudseg.media.resize import downsample
    from cloudseg.media.stream import StreamRoundTrip
    from cloudseg.metrics import ConfusionMatrix
    from cloudseg.restore.pipeline import RestorationPipeline

    was_training = sr.training
    pairs = list_pairs(root, split)[: limit or None]
    cm = ConfusionMatrix()
    psnrs = []
    seg_module = segmenter if segmenter is not None else nn.Identity()
    # the live modules, in their memory format: on CUDA the pipeline's default, channels_last,
    # would convert the weights under the optimiser (whose state stays contiguous) for good
    pipeline = RestorationPipeline.from_modules(
        sr, seg_module, backend, device=device, return_restored=True, channels_last=False
    )
    try:
        for pair in pairs:
            rgb = load_rgb(pair.image_path)
            lr = StreamRoundTrip(settings)(rgb)
            if segmenter is None:  # PSNR only: x4 to the camera size
                x = torch.from_numpy(lr).permute(2, 0, 1)[None].float().div_(255.0).to(device)
                out = sr(x, settings.scale).clamp(0, 1)[0].permute(1, 2, 0)
                restored = out.mul(255).round().byte().cpu().numpy()
                psnrs.append(psnr(restored, rgb[: restored.shape[0], : restored.shape[1]]))
                continue
            result = pipeline.process(lr[None], "sr")
            restored = result.restored[0].cpu().numpy()
            k = result.reduced_by
            reference = downsample(rgb, k) if k > 1 else rgb
            psnrs.append(psnr(restored, reference[: restored.shape[0], : restored.shape[1]]))
            gt = load_label_train_ids(pair.label_path)
            labels = resize_labels(result.labels[0].cpu().numpy(), gt.shape[::-1])
            cm.update(labels, gt)
    finally:
        sr.train(was_training)
    out = {"val_psnr": float(np.mean(psnrs)) if psnrs else math.nan}
    if segmenter is not None:
        out["val_miou"] = cm.miou()
        out["val_miou_gt_classes"] = cm.miou(gt_classes_only=True)
    return out


# --- the loop --------------------------------------------------------------------------------


def run(args: argparse.Namespace, what: str) -> dict[str, Any]:
    """Train as ``args`` say; returns the final card."""
    import os

    finetune = what == "finetune"
    if args.weights_dir is not None:
        os.environ[ENV_WEIGHTS] = str(args.weights_dir)
    if args.steps < 0 or args.batch_size < 1 or args.save_every < 1 or args.val_every < 1:
        raise TrainError("--steps >= 0, --batch-size, --save-every and --val-every >= 1")
    if args.out.suffix != ".pth":
        raise TrainError(f"--out must end in .pth, got {args.out}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    seed_everything(args.seed)

    sr, start = _build_sr(args)
    sr.untrained = False
    if args.scale not in sr.scales:
        raise TrainError(f"{args.sr_model} has no x{args.scale} head")
    segmenter = None
    seg_name = None
    k = 1
    if finetune:
        seg_name = BACKENDS.get(args.backend, args.backend)
        try:
            seg_model = build_model(seg_name, args.seg_weights)
        except (KeyError, UnknownModelError) as exc:
            raise TrainError(str(exc)) from None
        resolution = trained_resolution(seg_model, seg_name)
        segmenter = FrozenSegmenter(seg_model).to(device)
    settings = [default_compressor_settings(scale=args.scale, crf=c) for c in args.crfs]
    streams = load_streams(
        args.data, split=args.split, max_frames=args.max_frames, every=args.every
    )
    camera_width = streams[0][0].rgb.shape[1]
    if finetune:
        k = _segment_factor(resolution[0] if resolution else None, camera_width)
        if args.scale % k or args.scale // k not in (*sr.scales, 1):
            raise TrainError(f"cannot reach 1/{k} of the camera by SR from x{args.scale}")
    r = args.scale // k  # the SR head the serving pipeline uses
    target_factors = (k,) if finetune else (1, 2)
    data = DegradedFrames.build(
        streams, settings, target_factors=target_factors, progress=not args.no_progress
    )
    if finetune:
        data.labels = label_targets(data, segmenter, args.targets, k, device)
    frames_desc = {
        "inputs": [str(p) for p in args.data],
        "split": args.split,
        "frames": len(data.frames),
        "labelled_frames": sum(f.label is not None for f in data.frames),
        "streams": len(streams),
    }
    sr = sr.to(device).train()
    optimizer = torch.optim.Adam(sr.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    step = 0
    lr_steps = [[0, args.lr]]  # [from step, learning rate]: --resume --lr X is a step schedule
    if args.resume:
        if not args.out.is_file():
            raise TrainError(f"--resume: no checkpoint {args.out} yet")
        previous = check_card(args.out, args.sr_model)
        step, extra = load_training_state(args.out, sr, optimizer)
        rng.bit_generator.state = extra["rng"]
        lr_steps = previous.get("recipe", {}).get("lr_steps") or [[0, previous["recipe"]["lr"]]]
        if lr_steps[-1][1] != args.lr:
            lr_steps.append([step, args.lr])
        for group in optimizer.param_groups:  # the saved optimizer state carries the old lr
            group["lr"] = args.lr
        log.info("resumed %s at step %d (lr %g)", args.out, step, args.lr)

    settings_desc = [
        {**s.as_dict(), "kbps_on_training_data": round(kb, 1)}
        for s, kb in zip(settings, data.kbps, strict=True)
    ]
    card: dict[str, Any] = {
        "architecture": args.sr_model,
        "task": "sr",
        "scales": list(sr.scales),
        "trained_heads": [r] if finetune else [2, 4],
        "degradation": {
            "downsampling": "area (cloudseg.media.resize.downsample, the compressor's)",
            "scale": args.scale,
            "codec": settings[0].codec,
            "settings": settings_desc,
            "stream": "StreamRoundTrip: the compressor's encoder kept across each input's "
            "frames (IDR + P-frames), the cloud's decoder",
        },
        "data": frames_desc,
        "recipe": {
            "command": f"cloudseg train {what}",
            **start,
            "loss": "L1(SR(LR), HR) + lambda * CE(seg(SR(LR)), target)"
            if finetune
            else "L1 on the x2 and x4 heads (one body pass)",
            "optimizer": "Adam",
            "lr": args.lr,
            "lr_steps": lr_steps,
            "batch_size": args.batch_size,
            "lr_crop": list(args.crop),
            "seed": args.seed,
            "flip": True,
            **(
                {
                    "segmenter": seg_name,
                    "segmenter_frozen": True,
                    "segment_at": f"1/{k} of the camera size (its trained resolution)",
                    "sr_head": r,
                    "targets": args.targets,
                    "lambda": args.lam,
                }
                if finetune
                else {}
            ),
        },
        "metrics": {},
    }
    fields = ["step", "loss", "l1", "ce", "lr", "seconds", "val_psnr", "val_miou"]
    csv_log = CsvLog(args.out.with_suffix(".csv"), fields)
    label_factor = k if finetune else None
    weights = None
    if finetune and args.targets == "both":  # labelled stills as often as sequence frames
        labelled = np.array([f.label is not None for f in data.frames], float)
        n_lab, n_all = labelled.sum(), len(labelled)
        if 0 < n_lab < n_all:
            weights = np.where(labelled > 0, 0.5 / n_lab, 0.5 / (n_all - n_lab))
    bar = tqdm(
        total=args.steps,
        initial=step,
        desc=f"train {what}",
        unit="step",
        file=sys.stderr,
        disable=args.no_progress,
    )

    def save() -> None:
        extra = {"rng": rng.bit_generator.state}
        save_checkpoint(args.out, sr, card, optimizer=optimizer, step=step, extra_state=extra)

    t0 = time.perf_counter()
    window: list[tuple[float, float, float]] = []
    while step < args.steps:
        batch = sample_crops(data, args.batch_size, args.crop, rng, label_factor, weights)
        loss, l1, ce = compute_loss(sr, segmenter, batch, r, k, args.lam if finetune else 0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sr.parameters(), 10.0)
        optimizer.step()
        step += 1
        window.append((loss.item(), l1.item(), ce.item()))
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        row: dict[str, Any] = {}
        if step % args.save_every == 0 or step == args.steps:
            means = np.mean(window, axis=0)
            row = {"loss": means[0], "l1": means[1], "ce": means[2] if finetune else None}
            window.clear()
        if args.val_data is not None and (step % args.val_every == 0 or step == args.steps):
            metrics = validate(
                sr,
                segmenter.model if finetune else None,
                args.backend if finetune else "espnetv2",
                settings[len(settings) // 2],
                args.val_data,
                args.val_split,
                args.val_limit,
                device,
            )
            row.update(metrics)
            card["metrics"] = {
                **metrics,
                "at_step": step,
                "val_data": str(args.val_data),
                "val_split": args.val_split,
                "val_stream": settings[len(settings) // 2].as_dict(),
            }
            bar.write(f"step {step}: " + ", ".join(f"{k_}={v:.4f}" for k_, v in metrics.items()))
        if row:
            csv_log.write({"step": step, "lr": args.lr, "seconds": time.perf_counter() - t0, **row})
            card["metrics"]["train_loss"] = row.get("loss", card["metrics"].get("train_loss"))
            save()
    bar.close()
    if not args.out.is_file():  # --steps 0 or already done: still write the weights and card
        save()
    return json.loads(args.out.with_suffix(".json").read_text())


def compute_loss(
    sr: nn.Module,
    segmenter: FrozenSegmenter | None,
    batch: CropBatch,
    r: int,
    k: int,
    lam: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, l1, ce) of one batch. With a segmenter (fine-tuning): SR by ``r`` to the
    segmentation size (1/``k`` of the camera), ``L1 + lam * CE``; without: L1 of the x2 and x4
    heads from one body pass."""
    device = next(sr.parameters()).device
    lr_in = batch.lr.to(device)
    if segmenter is None:
        outs = sr.forward_pyramid(lr_in, scales=(2, 4))
        l1 = F.l1_loss(outs[4], batch.targets[1].to(device)) + F.l1_loss(
            outs[2], batch.targets[2].to(device)
        )
        return l1, l1, torch.zeros((), device=device)
    out = sr.forward_pyramid(lr_in, scales=(r,))[r] if r > 1 else lr_in
    l1 = F.l1_loss(out, batch.targets[k].to(device))
    logits = segmenter(out.clamp(0, 1))
    ce = F.cross_entropy(logits, batch.labels.to(device), ignore_index=IGNORE_ID)
    return l1 + lam * ce, l1, ce


def main(argv: Sequence[str] | None, what: str = "sr") -> int:
    """Entry point of ``cloudseg train sr|finetune``; 2 on bad input, never a traceback."""
    return run_training(
        f"cloudseg train {what}",
        build_parser(what),
        argv,
        lambda args: run(args, what),
        lambda args: f"{args.out} (+ {args.out.with_suffix('.json').name})",
        (PipelineError, CodecError),
    )
