"""``cloudseg train stream``: learn from labelled low-resolution frames, as the stream codes them.

Four routes from the decoded stream to labels, trained on the same frames (the
``cityscapes_lr`` layout, :mod:`cloudseg.train.stream_data`) with the same coding (H.264 at
CRFs around the default, IDR and P-frames):

* ``lr_seg``: ESPNetv2's 512x256 weights fine-tuned on the decoded low-resolution frame, no
  restoration (the cheapest route);
* ``bilinear_seg``: ESPNetv2's 1024x512 weights fine-tuned on the decoded frame upsampled
  bilinearly x2 (the SR bypass of the serving pipeline);
* ``sr_ft``: the paper's SR-FT: CARN-M (x2 head) fine-tuned with the segmentation loss through
  the frozen 1024x512 ESPNetv2, plus a fidelity term that keeps the image natural: L1 between
  the SR output area-downsampled x2 and the uncoded low-resolution frame (the data has no
  full-resolution image to compare with, the SR output must still explain what the camera saw);
* ``sr_seg``: both: ESPNetv2 fine-tuned on the output of a frozen SR (``--sr-weights``, e.g.
  an ``sr_ft`` checkpoint).

The loss is cross-entropy (ignore 255) on logits upsampled to twice the low resolution
(1024x512 for a 512x256 frame), against the fine labels resized there (nearest). Every run
has a fixed seed, a progress bar, a CSV log (loss, learning rate, seconds, validation mIoU
through the serving pipeline), resumable checkpoints and a model card. Validation: the list
``--val-list`` (``val.txt``), each frame coded at the default CRF, as a P-frame.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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
from cloudseg.metrics import ConfusionMatrix
from cloudseg.models.cards import check_card
from cloudseg.models.registry import UnknownModelError, build_model
from cloudseg.models.weights import ENV_WEIGHTS
from cloudseg.restore.backends import PipelineError
from cloudseg.restore.pipeline import RestorationPipeline
from cloudseg.train.checkpoint import (
    CsvLog,
    TrainError,
    check_resume,
    load_training_state,
    run_training,
    save_checkpoint,
    seed_everything,
    size_arg,
)
from cloudseg.train.segmenter import RgbSegmenter
from cloudseg.train.stream_data import (
    IGNORE_ID,
    StreamCodec,
    list_low_res_frames,
    sample_batch,
)

__all__ = ["ROUTES", "build_parser", "main", "train"]

log = logging.getLogger(__name__)

SEG_LR = "espnetv2_s2_city_512x256"
SEG_HR = "espnetv2_s2_city_1024x512"
ROUTES = {
    "lr_seg": "ESPNetv2 (512x256 weights) fine-tuned on the decoded low-resolution frame",
    "bilinear_seg": "ESPNetv2 (1024x512 weights) fine-tuned on the decoded frame, bilinear x2",
    "sr_ft": "CARN-M x2 fine-tuned through the frozen 1024x512 ESPNetv2 (CE + fidelity L1)",
    "sr_seg": "ESPNetv2 (1024x512 weights) fine-tuned on a frozen SR's x2 output",
}
KERNEL = "bilinear_noaa"
"""The data's downsampling (cv2.INTER_LINEAR, as cityscapes_lr was made), for the model card."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudseg train stream",
        description="Fine-tune a route from the decoded stream to labels on labelled "
        "low-resolution frames (the cityscapes_lr layout), coded on the fly by the compressor's "
        "H.264 encoder (CRFs around the default, IDR and P-frames). Routes: "
        + "; ".join(f"{k}: {v}" for k, v in ROUTES.items()),
        epilog="Example: cloudseg train stream --route bilinear_seg --data "
        "../shared/data/cityscapes_lr --out runs/stream/bilinear_seg.pth",
    )
    parser.add_argument("--route", required=True, choices=tuple(ROUTES))
    parser.add_argument("--data", required=True, type=Path, help="cityscapes_lr root")
    parser.add_argument("--list", default="train.txt", help="frames to train on (train.txt)")
    parser.add_argument("--val-list", default="val.txt", help="frames to validate on ('' = none)")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint path (.pth)")
    parser.add_argument(
        "--init", default="default", help="start weights of the trained model (registry key/path)"
    )
    parser.add_argument(
        "--sr-weights",
        default="div2k",
        help="SR weights for sr_seg (frozen), the start for sr_ft unless --init (default div2k)",
    )
    parser.add_argument(
        "--seg-weights", default="default", help="the frozen segmenter's weights for sr_ft"
    )
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--crop",
        type=size_arg(16),
        default=(256, 128),
        help="crop WIDTHxHEIGHT in low-resolution pixels (default 256x128)",
    )
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (poly decay)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument(
        "--bn",
        default="train",
        choices=("train", "frozen"),
        help="BatchNorm of the trained segmenter: batch statistics, running averages updated "
        "(train, default), or the start weights' statistics kept (frozen)",
    )
    parser.add_argument(
        "--fidelity", type=float, default=1.0, help="sr_ft: weight of the fidelity L1 term"
    )
    parser.add_argument(
        "--crfs", default="21,23,25,27,29", help="H.264 CRFs sampled (default 21..29)"
    )
    parser.add_argument("--p-frame", type=float, default=0.75, help="share coded as P-frames")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--save-every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    parser.add_argument(
        "--device",
        type=device_arg,
        default="auto",
        help="cpu, cuda, cuda:N or auto (default: auto)",
    )
    parser.add_argument("--weights-dir", type=Path, help=f"sets ${ENV_WEIGHTS}")
    parser.add_argument("--resume", action="store_true", help="continue from --out's state")
    parser.add_argument("--no-progress", action="store_true")
    return parser


# --- models ----------------------------------------------------------------------------------


def _build(name: str, weights: str) -> nn.Module:
    try:
        return build_model(name, weights)
    except (KeyError, UnknownModelError) as exc:
        raise TrainError(str(exc)) from None


class Route(nn.Module):
    """decoded LR (float NCHW [0, 1]) -> (logits at 2x the LR size, the image segmented)."""

    def __init__(self, route: str, args: argparse.Namespace) -> None:
        super().__init__()
        self.route = route
        self.freeze_bn = getattr(args, "bn", "train") == "frozen"
        self.sr: nn.Module | None = None
        if route == "lr_seg":
            self.seg_name, seg_weights = SEG_LR, args.init
        elif route == "sr_ft":
            self.seg_name, seg_weights = SEG_HR, args.seg_weights
            start = args.init if args.init != "default" else args.sr_weights
            self.sr = _build("carn_m", start)
        else:
            self.seg_name, seg_weights = SEG_HR, args.init
            if route == "sr_seg":
                self.sr = _build("carn_m", args.sr_weights).requires_grad_(False)
        self.segmenter = RgbSegmenter(_build(self.seg_name, seg_weights))
        if route == "sr_ft":
            self.segmenter.requires_grad_(False)
        self.trained = self.sr if route == "sr_ft" else self.segmenter.model
        self.trained_name = "carn_m" if route == "sr_ft" else self.seg_name

    def train(self, mode: bool = True) -> Route:
        super().train(mode)
        if self.route == "sr_ft":  # the segmenter is frozen, BatchNorm statistics too
            self.segmenter.eval()
        elif self.sr is not None:
            self.sr.eval()
        if mode and self.freeze_bn and self.route != "sr_ft":
            for module in self.segmenter.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, lr: Tensor) -> tuple[Tensor, Tensor]:
        if self.route == "lr_seg":
            image = lr
        elif self.route == "bilinear_seg":
            image = F.interpolate(lr, scale_factor=2, mode="bilinear", align_corners=False)
            image = image.clamp(0, 1)
        elif self.route == "sr_ft":
            image = self.sr.forward_pyramid(lr, scales=(2,))[2]
        else:
            with torch.no_grad():
                image = self.sr.forward_pyramid(lr, scales=(2,))[2].clamp(0, 1)
        logits = self.segmenter(image.clamp(0, 1) if self.route == "sr_ft" else image)
        if logits.shape[-1] != 2 * lr.shape[-1]:
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
        return logits, image

    def pipeline(self, device: torch.device) -> RestorationPipeline:
        """The serving pipeline over these modules (what validation measures), keeping their
        memory format: on CUDA the pipeline's default, channels_last, would convert the live
        weights under the optimiser (whose state stays contiguous) for good."""
        return RestorationPipeline.from_modules(
            self.sr,
            self.segmenter.model,
            self.seg_name,
            device=device,
            scale=4,
            channels_last=False,
        )

    @property
    def mode(self) -> str:
        return "sr" if self.sr is not None else "bilinear"


# --- validation ------------------------------------------------------------------------------


@torch.no_grad()
def validate(
    route: Route,
    frames: list[tuple[np.ndarray, np.ndarray]],
    codec: StreamCodec,
    seed: int,
    device: torch.device,
) -> dict[str, float]:
    """mIoU of the serving pipeline's labels (at the camera resolution) on ``frames`` coded as
    P-frames at the codec's middle CRF."""
    if not frames:
        return {}
    was_training = route.training
    pipeline = route.pipeline(device)
    middle = StreamCodec((codec.crfs[len(codec.crfs) // 2],), 1.0, codec.max_shift, codec.max_zoom)
    cm = ConfusionMatrix()
    try:
        for i, (rgb, label) in enumerate(frames):
            decoded, _, _ = middle.code(rgb, np.random.default_rng([seed, 1_000_000 + i]))
            result = pipeline.process(decoded[None], route.mode)
            labels = resize_labels(result.labels[0].cpu().numpy(), label.shape[::-1])
            cm.update(labels, label)
    finally:
        route.train(was_training)
    return {"val_miou": cm.miou()}


# --- the loop --------------------------------------------------------------------------------


def _crfs(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise TrainError(f"--crfs: expected comma-separated integers, got {text!r}") from None
    if not values or not all(0 <= v <= 51 for v in values):
        raise TrainError(f"--crfs must be 0..51, got {text!r}")
    return values


def _load(root: Path, list_name: str, bar_desc: str, progress: bool) -> list:
    frames = list_low_res_frames(root, list_name)
    return [f.load() for f in tqdm(frames, desc=bar_desc, file=sys.stderr, disable=not progress)]


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train as ``args`` say; returns the final model card."""
    if args.weights_dir is not None:
        os.environ[ENV_WEIGHTS] = str(args.weights_dir)
    if args.steps < 0 or args.batch_size < 1 or args.save_every < 1 or args.val_every < 1:
        raise TrainError("--steps >= 0, --batch-size, --save-every and --val-every >= 1")
    if args.out.suffix != ".pth":
        raise TrainError(f"--out must end in .pth, got {args.out}")
    if not 0.0 <= args.p_frame <= 1.0:
        raise TrainError(f"--p-frame must be 0..1, got {args.p_frame}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    seed_everything(args.seed)
    codec = StreamCodec(_crfs(args.crfs), args.p_frame)
    progress = not args.no_progress
    frames = _load(args.data, args.list, "load train", progress)
    val_frames = _load(args.data, args.val_list, "load val", progress) if args.val_list else []
    train_ids = {f.id for f in list_low_res_frames(args.data, args.list)}
    if args.val_list:
        overlap = train_ids & {f.id for f in list_low_res_frames(args.data, args.val_list)}
        if overlap:
            raise TrainError(f"{len(overlap)} frames are in both lists, e.g. {min(overlap)}")

    route = Route(args.route, args).to(device).train()
    params = [p for p in route.trained.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    step = 0
    recipe = {
        "command": "cloudseg train stream",
        "route": args.route,
        "route_description": ROUTES[args.route],
        "init": args.init,
        "sr_weights": args.sr_weights if args.route in ("sr_ft", "sr_seg") else None,
        "seg_weights": args.seg_weights if args.route == "sr_ft" else None,
        "segmenter": SEG_LR if args.route == "lr_seg" else SEG_HR,
        "segmenter_frozen": args.route == "sr_ft",
        "loss": "CE (ignore 255) at 2x the low resolution"
        + (
            f" + {args.fidelity} * L1(area_down2(SR(x)), uncoded LR)"
            if args.route == "sr_ft"
            else ""
        ),
        "optimizer": "AdamW",
        "lr": args.lr,
        "lr_schedule": "poly 0.9 over the steps",
        "weight_decay": args.weight_decay,
        "batchnorm": args.bn,
        "batch_size": args.batch_size,
        "lr_crop": list(args.crop),
        "flip": True,
        "seed": args.seed,
        "steps_planned": args.steps,
    }
    if args.resume:
        if not args.out.is_file():
            raise TrainError(f"--resume: no checkpoint {args.out} yet")
        previous = check_card(args.out, route.trained_name)
        check_resume(
            previous.get("recipe", {}),
            recipe,
            ("route", "batch_size", "lr_crop", "seed", "steps_planned", "lr"),
        )
        step, _ = load_training_state(args.out, route.trained, optimizer)
        log.info("resumed %s at step %d", args.out, step)

    card: dict[str, Any] = {
        "architecture": route.trained_name,
        "task": "sr" if args.route == "sr_ft" else "segmentation",
        **({"scales": [2, 3, 4], "trained_heads": [2]} if args.route == "sr_ft" else {}),
        **(
            {"resolution": [512, 256] if args.route == "lr_seg" else [1024, 512]}
            if args.route != "sr_ft"
            else {}
        ),
        "route": args.route,
        "degradation": {
            "kernel": f"{KERNEL} (cv2.INTER_LINEAR x4, as {args.data.name} was made)",
            "scale": 4,
            **codec.describe(),
        },
        "data": {
            "root": str(args.data),
            "list": args.list,
            "frames": len(frames),
            "val_list": args.val_list or None,
            "val_frames": len(val_frames),
        },
        "recipe": recipe,
        "metrics": {},
    }
    fields = ["step", "loss", "ce", "fidelity", "lr", "seconds", "kbps", "val_miou"]
    csv_log = CsvLog(args.out.with_suffix(".csv"), fields)
    bar = tqdm(
        total=args.steps,
        initial=step,
        desc=f"train {args.route}",
        unit="step",
        file=sys.stderr,
        disable=not progress,
    )

    def save() -> None:
        save_checkpoint(args.out, route.trained, card, optimizer=optimizer, step=step)

    t0 = time.perf_counter()
    window: list[tuple[float, float, float]] = []
    sizes: list[int] = []
    label_factor = 2
    while step < args.steps:
        lr_now = args.lr * (1 - step / args.steps) ** 0.9
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        batch = sample_batch(
            frames,
            codec,
            args.crop,
            label_factor,
            args.seed,
            step * args.batch_size,
            args.batch_size,
        )
        sizes.extend(batch.payload_bytes)
        x = batch.lr.to(device)
        logits, image = route(x)
        ce = F.cross_entropy(logits, batch.labels.to(device), ignore_index=IGNORE_ID)
        fidelity = torch.zeros((), device=device)
        if args.route == "sr_ft":
            down = F.avg_pool2d(image, 2)
            fidelity = F.l1_loss(down, batch.clean.to(device))
        loss = ce + args.fidelity * fidelity
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        step += 1
        window.append((loss.item(), ce.item(), fidelity.item()))
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        row: dict[str, Any] = {}
        if step % args.save_every == 0 or step == args.steps:
            means = np.mean(window, axis=0)
            kbps = float(np.mean(sizes)) * 8 * 17 / 1000 if sizes else None
            row = {"loss": means[0], "ce": means[1], "fidelity": means[2], "kbps": kbps}
            window.clear()
        if val_frames and (step % args.val_every == 0 or step == args.steps):
            metrics = validate(route, val_frames, codec, args.seed, device)
            row.update(metrics)
            card["metrics"] = {**metrics, "at_step": step, "val_list": args.val_list}
            bar.write(f"step {step}: val_miou={metrics['val_miou']:.4f}")
        if row:
            csv_log.write({"step": step, "lr": lr_now, "seconds": time.perf_counter() - t0, **row})
            card["metrics"]["train_loss"] = row.get("loss", card["metrics"].get("train_loss"))
            card["degradation"]["kbps_on_training_samples_17fps"] = row.get("kbps")
            card["seconds"] = time.perf_counter() - t0
            save()
    bar.close()
    if not args.out.is_file():
        save()
    return json.loads(args.out.with_suffix(".json").read_text())


def main(argv: Sequence[str] | None) -> int:
    """Entry point of ``cloudseg train stream``; 2 on bad input, never a traceback."""
    return run_training(
        "cloudseg train stream",
        build_parser(),
        argv,
        train,
        lambda args: f"{args.out} (+ {args.out.with_suffix('.json').name})",
        (PipelineError, CodecError),
    )
