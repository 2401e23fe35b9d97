"""``cloudseg train icnet``: ICNet-ResNet50 trained on Cityscapes as published.

No ICNet checkpoint is stored with this project; this is how a user with the full Cityscapes
and a GPU gets one. The recipe is liminn/ICNet-pytorch's (``train.py``, ``configs/icnet.yaml``;
the checkpoint layout :mod:`cloudseg.models.icnet` loads), which reached 71.0% val mIoU:

* SGD, momentum 0.9, weight decay 1e-4; learning rate 0.01 for the backbone
  (``pretrained``) and 10x for the ICNet layers (``conv_sub1``, ``head``); poly decay
  ``lr = base * (1 - step / steps) ** 0.9``;
* cascade label guidance loss 1.0 * CE(1/4) + 0.4 * CE(1/8) + 0.4 * CE(1/16), ignore 255
  (:func:`cloudseg.models.icnet.icnet_loss`);
* augmentation (:class:`cloudseg.train.seg_data.SegAugment`): flip, short side 512..2048,
  960x960 crops, Gaussian blur; batch 7 for 200 epochs of the 2975 train frames (85,000 steps);
* ImageNet-pretrained ResNet50-v1s backbone (``--backbone-weights``); from a random backbone
  the recipe does not reach the published accuracy.

Validation runs the model on whole val frames rescaled to the training base size (full
2048x1024 by default) and scores them with :class:`cloudseg.metrics.ConfusionMatrix`.
``--out DIR`` receives ``icnet.pth`` (a plain state_dict that ``build_model("icnet_resnet50",
path)`` loads strictly), its model card ``icnet.json``, the resumable state ``icnet.state.pt``,
``log.csv`` (losses, learning rate, validation mIoU) and ``icnet_best.pth`` (+ card), the
checkpoint of the best validation mIoU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cloudseg.data.cityscapes import CityscapesPair, list_pairs, load_label_train_ids, load_rgb
from cloudseg.devices import device_arg, resolve_device
from cloudseg.metrics import ConfusionMatrix, MetricsError
from cloudseg.models.cards import check_card
from cloudseg.models.icnet import (
    ICNET_LOSS_WEIGHTS,
    INPUT_MEAN,
    INPUT_STD,
    ICNetInputError,
    icnet_loss,
)
from cloudseg.models.registry import build_model
from cloudseg.models.weights import ENV_WEIGHTS
from cloudseg.train.checkpoint import (
    CsvLog,
    TrainError,
    check_resume,
    load_training_state,
    run_training,
    save_checkpoint,
    seed_everything,
    size_arg,
    truncate_log,
)
from cloudseg.train.icnet_recipe import (
    HEAD_MODULES,
    build_optimizer,
    load_backbone_weights,
    poly_lr,
    set_lr,
    to_input,
)
from cloudseg.train.seg_data import SegAugment, SegTrainSet, resize_short_side

__all__ = [
    "ARCHITECTURE",
    "TrainError",
    "build_parser",
    "main",
    "train",
    "validate",
]


PROG = "cloudseg train icnet"
ARCHITECTURE = "icnet_resnet50"
NUM_CLASSES = 19
IGNORE_ID = 255
RECIPE_SOURCE = "liminn/ICNet-pytorch train.py + configs/icnet.yaml (71.0% Cityscapes val mIoU)"
LOG_FIELDS = ["step", "lr", "loss", "seconds", "val_miou", "val_miou_gt_classes", "val_pixel_acc"]
# settings that must not change when a run is resumed (the schedule and the samples depend on them)
RESUME_KEYS = ("steps", "batch_size", "crop", "base_size", "scale_range", "seed", "base_lr")
SCRATCH_WARNING = (
    "training ICNet with a RANDOMLY initialised backbone: the published recipe starts from an "
    "ImageNet-pretrained ResNet50-v1s (give its state_dict with --backbone-weights); without "
    "it expect far below 71% mIoU"
)


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"need 0 < LOW <= HIGH, got {text!r}")
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    """The options of ``cloudseg train icnet`` (defaults: the published recipe)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train ICNet-ResNet50 on Cityscapes with the published recipe of "
        "liminn/ICNet-pytorch (SGD lr 0.01, head 10x, poly 0.9, momentum 0.9, weight decay "
        "1e-4, cascade loss 1.0/0.4/0.4, flip + 0.5..2.0 rescale + 960x960 crops + blur, "
        "batch 7, 85,000 steps). Needs the full Cityscapes (gtFine) and a GPU; writes "
        "resumable checkpoints with a model card, a CSV log and a progress bar.",
        epilog="Example: cloudseg train icnet --data /data/cityscapes --backbone-weights "
        "resnet50-25c4b509.pth --out runs/icnet --device cuda",
    )
    parser.add_argument(
        "--data", required=True, type=Path, help="Cityscapes root (leftImg8bit/, gtFine/)"
    )
    parser.add_argument("--split", default="train", help="training split (default train)")
    parser.add_argument("--limit", type=int, default=0, help="first N training frames (0 = all)")
    parser.add_argument(
        "--val-split",
        default="val",
        help="validation split, or 'none' (default val: mIoU every --val-every steps)",
    )
    parser.add_argument("--val-every", type=int, default=1000, help="steps between validations")
    parser.add_argument("--val-limit", type=int, default=0, help="validation frames (0 = all)")
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder (icnet.pth, icnet.json, log.csv)"
    )
    parser.add_argument(
        "--init",
        default="scratch",
        help="start weights: 'scratch' (random ICNet, default), 'default' (the published "
        "liminn checkpoint through the registry), or an ICNet checkpoint with a model card",
    )
    parser.add_argument(
        "--backbone-weights",
        type=Path,
        help="ImageNet ResNet50-v1s state_dict for the backbone (keys 'conv1.0.weight'... "
        "or 'pretrained.conv1.0.weight'...; the recipe needs it, see the description)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument(
        "--steps", type=int, default=85_000, help="total steps (default 85000 = 200 epochs)"
    )
    parser.add_argument(
        "--stop-at",
        type=int,
        default=0,
        help="stop (and save) at this step; the schedule still spans --steps (0 = run to end)",
    )
    parser.add_argument("--batch-size", type=int, default=7, help="batch size (default 7)")
    parser.add_argument(
        "--crop", type=size_arg(32), default=(960, 960), help="crop WIDTHxHEIGHT (default 960x960)"
    )
    parser.add_argument(
        "--base-size",
        type=int,
        default=1024,
        help="short side at scale 1.0, and of validation frames (default 1024 = full size)",
    )
    parser.add_argument(
        "--scale-range", type=_range, default=(0.5, 2.0), help="random rescale (default 0.5,2.0)"
    )
    parser.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    parser.add_argument(
        "--blur-p", type=float, default=0.5, help="probability of the Gaussian blur (default 0.5)"
    )
    parser.add_argument("--lr", type=float, default=0.01, help="base learning rate (0.01)")
    parser.add_argument(
        "--head-lr-mult", type=float, default=10.0, help="lr factor of conv_sub1/head (10)"
    )
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--power", type=float, default=0.9, help="poly power (0.9)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=500, help="steps between checkpoints")
    parser.add_argument("--log-every", type=int, default=10, help="steps per CSV loss row")
    parser.add_argument("--workers", type=int, default=4, help="data loader processes (0 = none)")
    parser.add_argument(
        "--device",
        type=device_arg,
        default="auto",
        help="cpu, cuda, cuda:N or auto (default: auto)",
    )
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    parser.add_argument(
        "--weights-dir", type=Path, help=f"sets ${ENV_WEIGHTS} (for --init default)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


# --- pieces ------------------------------------------------------------------------------------


@torch.no_grad()
def validate(
    model: nn.Module,
    pairs: Sequence[CityscapesPair],
    base_size: int,
    device: torch.device,
    amp: bool = False,
    progress: bool = False,
) -> dict[str, float]:
    """mIoU of ``model`` on whole frames rescaled to short side ``base_size`` (logits scaled
    back to the label size, bilinear); the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(NUM_CLASSES, IGNORE_ID)
    try:
        for pair in tqdm(pairs, desc="val", unit="frame", file=sys.stderr, disable=not progress):
            rgb = load_rgb(pair.image_path)
            gt = load_label_train_ids(pair.label_path)
            image = resize_short_side(rgb, base_size)
            x = to_input(torch.from_numpy(np.ascontiguousarray(image))[None], device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            logits = F.interpolate(
                logits.float(), size=gt.shape, mode="bilinear", align_corners=False
            )
            cm.update(logits.argmax(1)[0], torch.from_numpy(gt))
    finally:
        model.train(was_training)
    return {
        "val_miou": cm.miou(),
        "val_miou_gt_classes": cm.miou(gt_classes_only=True),
        "val_pixel_acc": cm.pixel_accuracy(),
    }


def _check_args(args: argparse.Namespace) -> None:
    if args.steps < 1 or args.batch_size < 1:
        raise TrainError("--steps and --batch-size must be >= 1")
    if min(args.save_every, args.val_every, args.log_every) < 1:
        raise TrainError("--save-every, --val-every and --log-every must be >= 1")
    if min(args.limit, args.val_limit, args.workers, args.stop_at, args.threads) < 0:
        raise TrainError("--limit, --val-limit, --workers, --stop-at and --threads must be >= 0")
    if args.stop_at > args.steps:
        raise TrainError(f"--stop-at {args.stop_at} is beyond --steps {args.steps}")
    if args.base_size < 32:
        raise TrainError(f"--base-size must be >= 32, got {args.base_size}")
    if not 0.0 <= args.blur_p <= 1.0:
        raise TrainError(f"--blur-p must be 0..1, got {args.blur_p:g}")
    if args.lr <= 0 or args.head_lr_mult <= 0:
        raise TrainError("--lr and --head-lr-mult must be > 0")
    if not args.data.is_dir():
        raise TrainError(f"data folder {args.data} does not exist")
    if args.backbone_weights is not None and not args.backbone_weights.is_file():
        raise TrainError(f"--backbone-weights: no file {args.backbone_weights}")
    if args.resume and args.init != "scratch":
        raise TrainError("--resume continues from --out's checkpoint; leave out --init")
    if args.init not in ("scratch", "default") and not Path(args.init).expanduser().is_file():
        raise TrainError(f"--init: no file {args.init} (or 'scratch' / 'default')")


def _build_model(args: argparse.Namespace) -> tuple[nn.Module, str]:
    """ICNet from --init (the card checked first) and --backbone-weights."""
    if args.init == "scratch" or args.resume:
        model = build_model(ARCHITECTURE, None, pretrained=False, allow_untrained=True)
        init = "scratch (random ICNet)"
    elif args.init == "default":
        model = build_model(ARCHITECTURE, "default")
        init = f"published liminn checkpoint ({model.weights_info.filename})"
    else:
        path = Path(args.init).expanduser()
        check_card(path, ARCHITECTURE)
        model = build_model(ARCHITECTURE, path)
        init = str(path)
    if args.backbone_weights is not None:
        if args.init != "scratch" or args.resume:
            raise TrainError("--backbone-weights only applies to training from scratch")
        init += f", backbone from {load_backbone_weights(model, args.backbone_weights)}"
    elif args.init == "scratch" and not args.resume:
        print(f"{PROG}: warning: {SCRATCH_WARNING}", file=sys.stderr)
    model.untrained = False
    return model, init


def _recipe(args: argparse.Namespace, augment: SegAugment, init: str) -> dict[str, Any]:
    return {
        "command": PROG,
        "source": RECIPE_SOURCE,
        "init": init,
        "optimizer": "SGD",
        "base_lr": args.lr,
        "head_lr_mult": args.head_lr_mult,
        "head_modules": list(HEAD_MODULES),
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "lr_schedule": f"poly: lr * (1 - step/steps) ** {args.power:g}",
        "power": args.power,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "crop": list(args.crop),
        "base_size": args.base_size,
        "scale_range": list(args.scale_range),
        "augmentation": augment.describe(),
        "loss": "cascade label guidance: "
        + " + ".join(
            f"{w:g} * CE(1/{s})" for w, s in zip(ICNET_LOSS_WEIGHTS, (4, 8, 16), strict=True)
        ),
        "loss_weights": list(ICNET_LOSS_WEIGHTS),
        "ignore_index": IGNORE_ID,
        "seed": args.seed,
        "amp": "bf16" if args.amp else "fp32",
    }


def _resolution(pair: CityscapesPair, base_size: int) -> list[int]:
    """[width, height] of a frame rescaled to short side ``base_size`` (scale 1.0)."""
    h, w = load_rgb(pair.image_path).shape[:2]
    if h > w:
        return [base_size, int(h * base_size / w)]
    return [int(w * base_size / h), base_size]


# --- the loop ----------------------------------------------------------------------------------


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``cloudseg train icnet`` as ``args`` say; returns the last model card written."""
    import os

    _check_args(args)
    if args.weights_dir is not None:
        os.environ[ENV_WEIGHTS] = str(args.weights_dir)
    device = resolve_device(args.device)
    if args.amp and device.type != "cuda":
        raise TrainError("--amp needs --device cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    out: Path = args.out
    weights = out / "icnet.pth"
    if args.resume:
        if not weights.is_file():
            raise TrainError(f"--resume: no checkpoint {weights} yet")
        check_card(weights, ARCHITECTURE)
    elif weights.exists():
        raise TrainError(f"{weights} exists: add --resume to continue it, or choose another --out")

    seed_everything(args.seed)  # before the random init: the seed fixes the start weights too
    model, init = _build_model(args)  # checks --init's card before any data is read
    pairs = list_pairs(args.data, args.split)[: args.limit or None]
    val_pairs: list[CityscapesPair] = []
    if args.val_split.lower() != "none":
        val_pairs = list_pairs(args.data, args.val_split)[: args.val_limit or None]
    augment = SegAugment(
        crop=args.crop,
        base_size=args.base_size,
        scale_range=args.scale_range,
        flip=not args.no_flip,
        blur_p=args.blur_p,
    )
    recipe = _recipe(args, augment, init)
    model = model.to(device).train()
    optimizer = build_optimizer(model, args.lr, args.head_lr_mult, args.momentum, args.weight_decay)
    step = 0
    best = -math.inf
    card: dict[str, Any] = {
        "architecture": ARCHITECTURE,
        "task": "segmentation",
        "resolution": _resolution(pairs[0], args.base_size),
        "num_classes": NUM_CLASSES,
        "classes": "Cityscapes trainIds 0..18 (255 = ignore)",
        "input": "RGB/255 normalised with ImageNet mean "
        f"{INPUT_MEAN} std {INPUT_STD}, NCHW, the whole frame at 'resolution'",
        "scales": {"input_pyramid": [1.0, 0.5, 0.25], "outputs": ["1/4", "1/8", "1/16"]},
        "degradation": {
            "scale": 1,
            "codec": "none",
            "note": "trained on the original frames (PNG), no downsampling or codec",
        },
        "data": {
            "root": str(args.data),
            "split": args.split,
            "frames": len(pairs),
            "val_split": args.val_split if val_pairs else None,
            "val_frames": len(val_pairs),
        },
        "recipe": recipe,
        "metrics": {},
    }
    if args.resume:
        step, extra = load_training_state(weights, model, optimizer)
        check_resume(extra.get("recipe", {}), recipe, RESUME_KEYS)
        card["recipe"]["init"] = extra.get("recipe", {}).get("init", init)
        card["metrics"] = dict(extra.get("metrics", {}))
        best = float(extra.get("best", -math.inf))
        print(f"{PROG}: resuming {weights} at step {step}", file=sys.stderr)
    stop = args.stop_at or args.steps
    if args.resume:
        truncate_log(out / "log.csv", "step", step, LOG_FIELDS)
    csv_log = CsvLog(out / "log.csv", LOG_FIELDS)

    def save(path: Path = weights, with_state: bool = True) -> None:
        save_checkpoint(
            path,
            model,
            card,
            optimizer=optimizer if with_state else None,
            step=step,
            extra_state={"recipe": card["recipe"], "metrics": card["metrics"], "best": best},
        )

    dataset = SegTrainSet(pairs, augment, args.seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=range(step * args.batch_size, stop * args.batch_size),
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    bar = tqdm(
        total=args.steps,
        initial=step,
        desc="train icnet",
        unit="step",
        file=sys.stderr,
        disable=args.no_progress,
    )
    t0 = time.perf_counter()
    window: list[float] = []
    for images, labels in loader:
        lr = poly_lr(args.lr, step, args.steps, args.power)
        set_lr(optimizer, lr)
        x = to_input(images, device)
        target = labels.to(device, non_blocking=True).long()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            outputs = model(x)
        loss = icnet_loss(tuple(o.float() for o in outputs), target, IGNORE_ID)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainError(f"the loss became {value} at step {step} (try a lower --lr)")
        window.append(value)
        bar.update()
        bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
        row: dict[str, Any] = {}
        if step % args.log_every == 0 or step == stop:
            row = {"loss": float(np.mean(window)), "lr": lr}
            card["metrics"]["train_loss"] = row["loss"]
            window.clear()
        if val_pairs and (step % args.val_every == 0 or step == args.steps):
            metrics = validate(model, val_pairs, args.base_size, device, args.amp)
            row.update(metrics)
            card["metrics"].update(
                {k: (None if math.isnan(v) else v) for k, v in metrics.items()},
                at_step=step,
                val_split=args.val_split,
                val_frames=len(val_pairs),
                val_resolution=f"short side {args.base_size}",
            )
            bar.write(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            if metrics["val_miou"] > best:
                best = metrics["val_miou"]
                save(out / "icnet_best.pth", with_state=False)
        if row:
            csv_log.write({"step": step, "seconds": time.perf_counter() - t0, **row})
        if step % args.save_every == 0 or step == stop:
            save()
    bar.close()
    if not weights.is_file() or step == 0:  # nothing to run (already at --stop-at / --steps)
        save()
    return json.loads(weights.with_suffix(".json").read_text())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cloudseg train icnet``; 2 on bad input, never a traceback."""
    return run_training(
        PROG,
        build_parser(),
        sys.argv[1:] if argv is None else argv,
        train,
        lambda args: f"{args.out / 'icnet.pth'} (+ icnet.json)",
        (ICNetInputError, MetricsError),
    )


if __name__ == "__main__":
    raise SystemExit(main())
