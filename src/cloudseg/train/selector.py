"""``cloudseg train selector``: the learned frame selector's network, from unlabelled video.

The target of a pair of frames (i, j) of one sequence is the fraction of pixels whose label
differs between the segmentation backend's labels on the two frames
(:func:`cloudseg.selection.reference.load_labelled_sequence`, cached): no ground truth is
needed. Pairs are taken at gaps 1..``--max-gap`` frames in both orders, each sequence weighing
the same whatever its length, plus a few identical pairs (target 0) and synthetic pairs
(``--synthetic``: a frame and itself zoomed, shifted and rotated a little, the target from its
labels warped alike); both frames of a pair are flipped horizontally together at random and
get the same brightness/contrast jitter. The loss is L1 on the predicted fraction; AdamW with a
cosine schedule over the epochs.

Validation, on a held-out sequence (``--val``), pairs at gaps 1..``--max-gap``: mean absolute
error of the predicted fraction, Pearson and Spearman correlation with the target, and the
same correlations for the pixel measure (:class:`cloudseg.selection.pixel.PixelDeviation`) on
the same pairs, the baseline to beat.

``--out DIR`` receives ``selector.pth`` (a plain state_dict that ``build_model("selector_net",
path)`` loads strictly), its model card ``selector.json``, the resumable state
``selector.state.pt`` (after every epoch) and ``log.csv`` (loss, learning rate, validation
metrics per epoch).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cloudseg.devices import device_arg, resolve_device
from cloudseg.models.cards import check_card
from cloudseg.models.selector_net import INPUT_MEAN, INPUT_SIZE, INPUT_STD, SelectorNet
from cloudseg.train.checkpoint import (
    CsvLog,
    TrainError,
    check_resume,
    load_training_state,
    run_training,
    save_checkpoint,
    seed_everything,
    truncate_log,
)
from cloudseg.train.selector_data import (
    IDENTICAL_SHARE,
    SequencePairs,
    epoch_samples,
    load_sequence,
    pair_batch,
)

__all__ = [
    "ARCHITECTURE",
    "DEFAULT_DATA",
    "DEFAULT_VAL",
    "build_parser",
    "main",
    "pearson",
    "spearman",
    "train",
    "validate",
]

PROG = "cloudseg train selector"
ARCHITECTURE = "selector_net"
#: Training sequences under the shared data folder (``../shared/data`` beside the checkout, or
#: ``$CLOUDSEG_SHARED_DATA``), used when ``--data`` is not given.
DEFAULT_DATA = (
    "sequences/aachen_seq0000",
    "sequences/mp4/frankfurt_000000_000275.mp4",
    "sequences/mp4/frankfurt_000000_000557.mp4",
    "sequences/mp4/frankfurt_000000_000997.mp4",
    "video/solidWhiteRight.mp4",
)
DEFAULT_VAL = "sequences/mp4/frankfurt_000000_001217.mp4"
LOG_FIELDS = [
    "epoch",
    "step",
    "lr",
    "loss",
    "seconds",
    "val_mae",
    "val_pearson",
    "val_spearman",
    "pixel_pearson",
    "pixel_spearman",
]
# settings that must not change when a run is resumed (the samples depend on them); --epochs
# may grow: the cosine schedule then spans the new number of epochs
RESUME_KEYS = (
    "batch",
    "lr",
    "max_gap",
    "pairs_per_epoch",
    "synthetic",
    "seed",
    "identical",
    "limit",
)


def shared_data_dir() -> Path | None:
    """``$CLOUDSEG_SHARED_DATA``, or ``../shared/data`` beside the current folder or the
    checkout whose ``.venv`` runs this; None when absent."""
    env = os.environ.get("CLOUDSEG_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates += [
        base.parent / "shared" / "data" for base in (Path.cwd(), Path(sys.prefix).resolve().parent)
    ]
    return next((c for c in candidates if c.is_dir()), None)


def build_parser() -> argparse.ArgumentParser:
    """The options of ``cloudseg train selector``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train the learned frame selector (selector_net, after Li et al. CVPR 2018):"
        " a small network over the difference of two frames' low-level features that predicts "
        "the fraction of pixels whose label changed. Targets are the segmentation backend's "
        "labels on the frames of each sequence (computed once, cached): no ground truth needed. "
        "Writes resumable checkpoints with a model card, a CSV log and a progress bar.",
        epilog="Example: cloudseg train selector --data ../shared/data/sequences/aachen_seq0000 "
        "clip.mp4 --val held_out.mp4 --out runs/selector",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        type=Path,
        help="training sequences: frame folders, videos or bags (default: the shared sequences "
        f"{', '.join(Path(p).name for p in DEFAULT_DATA)} when present)",
    )
    parser.add_argument(
        "--val",
        type=Path,
        help=f"held-out sequence for validation (default: the shared {Path(DEFAULT_VAL).name} "
        "when present; 'none' for no validation)",
    )
    parser.add_argument("--backend", default="espnetv2", help="segmenter of the targets")
    parser.add_argument(
        "--device",
        type=device_arg,
        default="auto",
        help="cpu, cuda, cuda:N or auto (default: auto)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/selector"), help="output folder (runs/selector)"
    )
    parser.add_argument("--epochs", type=int, default=12, help="epochs (default 12)")
    parser.add_argument("--batch", type=int, default=64, help="pairs per step (default 64)")
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (2e-3)")
    parser.add_argument(
        "--max-gap", type=int, default=16, help="pairs up to this many frames apart (16)"
    )
    parser.add_argument(
        "--pairs-per-epoch", type=int, default=1024, help="samples per epoch (default 1024)"
    )
    parser.add_argument(
        "--synthetic",
        type=float,
        default=0.3,
        help="synthetic pairs per real pair: a frame and itself zoomed/shifted/rotated a little, "
        "the target from its labels warped alike (default 0.3)",
    )
    parser.add_argument(
        "--limit", type=int, default=0, help="first N frames per sequence (0 = all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out (from its last epoch; --epochs may be raised)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


# --- metrics -----------------------------------------------------------------------------------


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation (NaN when either side is constant)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom > 0 else math.nan


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties getting their mean rank."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson of the ranks, ties averaged)."""
    return pearson(_ranks(x), _ranks(y))


def pixel_baseline(seq: SequencePairs, max_gap: int) -> dict[str, float]:
    """How well the pixel measure ranks the same pairs as :func:`validate`."""
    from cloudseg.selection.pixel import PixelDeviation

    pixel = PixelDeviation()
    pairs = seq.pairs(max_gap, both_orders=False)
    dev = np.array([pixel.deviation(seq.pixel[i], seq.pixel[j]) for i, j in pairs])
    target = seq.targets[pairs[:, 0], pairs[:, 1]]
    return {"pixel_pearson": pearson(dev, target), "pixel_spearman": spearman(dev, target)}


@torch.inference_mode()
def predict_pairs(
    model: SelectorNet, frames: torch.Tensor, pairs: np.ndarray, device: torch.device
) -> np.ndarray:
    """The model's predictions for ``pairs`` (K x 2 indices into ``frames``)."""
    was_training = model.training
    model.eval()
    feats = torch.cat([model.features(f.to(device)) for f in frames.split(64)])
    out = []
    for chunk in np.array_split(pairs, max(1, math.ceil(len(pairs) / 256))):
        idx = torch.from_numpy(chunk).to(device)
        out.append(model(feats[idx[:, 0]], feats[idx[:, 1]]).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def validate(
    model: SelectorNet, seq: SequencePairs, max_gap: int, device: torch.device
) -> dict[str, float]:
    """MAE, Pearson and Spearman of the predicted fraction on ``seq``'s pairs (each once)."""
    pairs = seq.pairs(max_gap, both_orders=False)
    pred = predict_pairs(model, seq.frames, pairs, device)
    target = seq.targets[pairs[:, 0], pairs[:, 1]]
    return {
        "val_mae": float(np.abs(pred - target).mean()),
        "val_pearson": pearson(pred, target),
        "val_spearman": spearman(pred, target),
    }


# --- the loop ----------------------------------------------------------------------------------


def _resolve_paths(args: argparse.Namespace) -> tuple[list[Path], Path | None]:
    shared = shared_data_dir()
    if args.data:
        data = list(args.data)
    else:
        data = [shared / p for p in DEFAULT_DATA if (shared / p).exists()] if shared else []
        if not data:
            raise TrainError(
                "no --data given and the shared sequences are absent (../shared/data or "
                "$CLOUDSEG_SHARED_DATA); give frame folders or videos with --data"
            )
    for path in data:
        if not path.exists():
            raise TrainError(f"--data: no such file or folder {path}")
    val: Path | None
    if args.val is not None:
        val = None if str(args.val).lower() == "none" else args.val
        if val is not None and not val.exists():
            raise TrainError(f"--val: no such file or folder {val}")
    else:
        val = shared / DEFAULT_VAL if shared and (shared / DEFAULT_VAL).exists() else None
    return data, val


def _name(path: Path) -> str:
    """``path`` as the card records it: ``shared/data/...`` for the shared data."""
    shared = shared_data_dir()
    if shared is not None and path.resolve().is_relative_to(shared.resolve()):
        return f"shared/data/{path.resolve().relative_to(shared.resolve()).as_posix()}"
    return str(path)


def _check_args(args: argparse.Namespace) -> None:
    if min(args.epochs, args.batch, args.max_gap, args.pairs_per_epoch) < 1:
        raise TrainError("--epochs, --batch, --max-gap and --pairs-per-epoch must be >= 1")
    if not args.lr > 0:
        raise TrainError(f"--lr must be > 0, got {args.lr:g}")
    if not 0 <= args.synthetic <= 10:
        raise TrainError(f"--synthetic must be 0..10, got {args.synthetic:g}")
    if args.limit < 0:
        raise TrainError("--limit must be >= 0")


def train(args: argparse.Namespace, argv: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``cloudseg train selector`` as ``args`` say; returns the last model card written."""
    _check_args(args)
    data_paths, val_path = _resolve_paths(args)
    out: Path = args.out
    weights = out / "selector.pth"
    if args.resume:
        if not weights.is_file():
            raise TrainError(f"--resume: no checkpoint {weights} yet")
        check_card(weights, ARCHITECTURE)
    elif weights.exists():
        raise TrainError(f"{weights} exists: add --resume to continue it, or choose another --out")
    device = resolve_device(args.device)

    limit = args.limit or None
    progress = not args.no_progress
    data = [
        load_sequence(p, args.backend, args.device, args.max_gap, limit, progress)
        for p in data_paths
    ]
    val = (
        load_sequence(val_path, args.backend, args.device, args.max_gap, limit, progress)
        if val_path is not None
        else None
    )
    baseline = pixel_baseline(val, args.max_gap) if val is not None else {}

    seed_everything(args.seed)  # before the init: the seed fixes the start weights too
    model = SelectorNet().to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    recipe = {
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "optimizer": "AdamW, weight decay 1e-4, cosine schedule over the epochs",
        "loss": "L1 on the fraction of changed labels",
        "max_gap": args.max_gap,
        "pairs_per_epoch": args.pairs_per_epoch,
        "synthetic": args.synthetic,
        "pairs": "gaps 1..max_gap frames, both orders, each sequence drawn equally often; "
        f"{IDENTICAL_SHARE:.0%} identical pairs (target 0); synthetic pairs: a frame and itself "
        "zoomed 1..1.15, shifted up to 4%/1.5% of the width/height, rotated up to 1.5 degrees "
        "(mirrored borders), the target from its labels warped alike (nearest)",
        "augment": "horizontal flip and brightness/contrast jitter, the same for both frames",
        "identical": IDENTICAL_SHARE,
        "limit": args.limit,
        "seed": args.seed,
    }
    card: dict[str, Any] = {
        "architecture": ARCHITECTURE,
        "task": "selector",
        "builder_kwargs": {"width": model.width, "head_width": model.head_width},
        "params": sum(p.numel() for p in model.parameters()),
        "input": f"HxWx3 uint8 RGB frame reduced by area averaging (cv2.INTER_AREA) straight to "
        f"{INPUT_SIZE[0]}x{INPUT_SIZE[1]} (any aspect stretched), normalised inside the model "
        f"with mean {INPUT_MEAN} std {INPUT_STD}",
        "output": "predicted fraction (0..1) of pixels whose label changed between two frames",
        "targets": f"fraction of pixels where the {args.backend!r} backend's labels (on the "
        "original frames, at its trained resolution) differ between the two frames",
        "backend": args.backend,
        "data": {
            "train": {_name(p): len(d.frames) for p, d in zip(data_paths, data, strict=True)},
            "train_pairs": sum(len(d.pairs(args.max_gap)) for d in data),
            "val": {_name(val_path): len(val.frames)} if val and val_path else None,
            "val_pairs": len(val.pairs(args.max_gap, both_orders=False)) if val else 0,
        },
        "recipe": recipe,
        "command": " ".join(["cloudseg train selector", *map(shlex.quote, argv)]),
        "date": _dt.date.today().isoformat(),
        "metrics": {},
    }
    epoch = step = 0
    if args.resume:
        step, extra = load_training_state(weights, model, optimizer)
        check_resume(extra.get("recipe", {}), recipe, RESUME_KEYS)
        epoch = int(extra.get("epoch", 0))
        card["metrics"] = dict(extra.get("metrics", {}))
        card["command"] = extra.get("command", card["command"])
        print(f"{PROG}: resuming {weights} at epoch {epoch}", file=sys.stderr)
        truncate_log(out / "log.csv", "epoch", epoch, LOG_FIELDS)
    csv_log = CsvLog(out / "log.csv", LOG_FIELDS)

    def save() -> None:
        extra = {"recipe": recipe, "metrics": card["metrics"], "epoch": epoch}
        extra["command"] = card["command"]
        save_checkpoint(weights, model, card, optimizer=optimizer, step=step, extra_state=extra)

    steps_per_epoch = math.ceil(
        len(epoch_samples(data, args.max_gap, args.pairs_per_epoch, args.synthetic, args.seed, 0))
        / args.batch
    )
    bar = tqdm(
        total=args.epochs * steps_per_epoch,
        initial=epoch * steps_per_epoch,
        desc="train selector",
        unit="step",
        file=sys.stderr,
        disable=not progress,
    )
    t0 = time.perf_counter()
    loss_fn = nn.L1Loss()
    while epoch < args.epochs:
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * epoch / args.epochs))
        for group in optimizer.param_groups:
            group["lr"] = lr
        samples = epoch_samples(
            data, args.max_gap, args.pairs_per_epoch, args.synthetic, args.seed, epoch
        )
        gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        losses = []
        for k in range(0, len(samples), args.batch):
            x, target = pair_batch(data, samples[k : k + args.batch], gen)
            feats = model.features(x.to(device))
            fa, fb = feats.chunk(2)
            loss = loss_fn(model(fa, fb), target.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainError(f"the loss became {value} at step {step} (try a lower --lr)")
            losses.append(value)
            bar.update()
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
        epoch += 1
        row: dict[str, Any] = {"epoch": epoch, "step": step, "lr": lr, "loss": np.mean(losses)}
        card["metrics"]["train_loss"] = float(row["loss"])
        if val is not None:
            metrics = {**validate(model, val, args.max_gap, device), **baseline}
            row.update(metrics)
            card["metrics"].update(metrics, at_epoch=epoch, val_pairs=card["data"]["val_pairs"])
            bar.write(f"epoch {epoch}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        csv_log.write({**row, "seconds": time.perf_counter() - t0})
        save()
    bar.close()
    if not weights.is_file():
        save()
    return json.loads(weights.with_suffix(".json").read_text())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cloudseg train selector``; 2 on bad input, never a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_training(
        PROG,
        build_parser(),
        argv,
        lambda args: train(args, argv),
        lambda args: f"{args.out / 'selector.pth'} (+ selector.json)",
    )


if __name__ == "__main__":
    raise SystemExit(main())
