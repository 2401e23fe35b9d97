"""Checkpoints of ``cloudseg train``: weights, model card, resumable training state, CSV log.

A checkpoint ``NAME.pth`` is a plain ``state_dict`` (so :func:`cloudseg.models.build_model`
loads it strictly, like the published weights). Beside it:

* ``NAME.json``, the **model card** (:mod:`cloudseg.models.cards`): architecture, scales,
  degradation (downsampling, codec and its settings), data, recipe, steps and the metrics
  reached.
* ``NAME.state.pt``: what resuming needs (optimizer, step, random generator states); it is not
  needed to use the weights, and is left out of what gets committed.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cloudseg.data.frames import DataError
from cloudseg.models.cards import CARD_VERSION, CardError, card_path, read_card
from cloudseg.models.registry import UnknownModelError
from cloudseg.models.weights import WeightsError

__all__ = [
    "TRAIN_ERRORS",
    "CsvLog",
    "TrainError",
    "check_resume",
    "load_training_state",
    "run_training",
    "save_checkpoint",
    "seed_everything",
    "size_arg",
    "state_path",
    "truncate_log",
]


class TrainError(Exception):
    """Bad training options or inputs; a ``cloudseg train`` command prints it as one line and
    returns 2."""


TRAIN_ERRORS: tuple[type[Exception], ...] = (
    TrainError,
    DataError,
    CardError,
    WeightsError,
    UnknownModelError,
    OSError,
    ValueError,
)
"""Bad input to every trainer (options, data, weights, cards): one line, exit 2."""


def size_arg(minimum: int):
    """An argparse type for ``WIDTHxHEIGHT`` with both sides at least ``minimum``."""

    def parse(text: str) -> tuple[int, int]:
        try:
            w, h = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
        if w < minimum or h < minimum:
            raise argparse.ArgumentTypeError(
                f"size {text} is too small (at least {minimum}x{minimum})"
            )
        return w, h

    return parse


def state_path(weights: str | Path) -> Path:
    """``x.pth`` -> ``x.state.pt`` (optimizer, step, RNG states)."""
    return Path(weights).with_suffix(".state.pt")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (the run is repeatable on one machine)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_states() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def _set_rng_states(states: Mapping[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    card: Mapping[str, Any],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    extra_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``path`` (state_dict), its card (``.json``) and, with an optimizer, the training
    state (``.state.pt``). Each file is written to a temporary name and renamed, so an
    interrupted run never leaves a half-written checkpoint. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic_write(path, lambda p: torch.save(state, p))
    full_card = {
        "card_version": CARD_VERSION,
        **card,
        "steps": int(step),
        "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(full_card, indent=2, sort_keys=False, default=_json_default) + "\n"
    _atomic_write(card_path(path), lambda p: p.write_text(text))
    if optimizer is not None:
        training = {
            "step": int(step),
            "optimizer": optimizer.state_dict(),
            "rng": _rng_states(),
            "extra": dict(extra_state or {}),
        }
        _atomic_write(state_path(path), lambda p: torch.save(training, p))
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (Path, tuple, set)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_training_state(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> tuple[int, dict[str, Any]]:
    """Resume from checkpoint ``path``: load weights into ``model`` and, when the training state
    exists, the optimizer and RNG states. Returns (step, extra state)."""
    path = Path(path)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    spath = state_path(path)
    if not spath.is_file():
        raise CardError(f"cannot resume from {path}: no training state {spath.name} beside it")
    training = torch.load(spath, map_location="cpu", weights_only=False)
    if optimizer is not None:
        optimizer.load_state_dict(training["optimizer"])
    _set_rng_states(training["rng"])
    return int(training["step"]), dict(training.get("extra", {}))


class CsvLog:
    """Append rows (dicts) to a CSV file; the header is written once, new keys extend it."""

    def __init__(self, path: str | Path, fields: list[str]) -> None:
        self.path = Path(path)
        self.fields = list(fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.is_file() or self.path.stat().st_size == 0:
            with self.path.open("w", newline="") as f:
                csv.DictWriter(f, self.fields).writeheader()

    def write(self, row: Mapping[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="ignore")
            writer.writerow({k: _csv_cell(row.get(k)) for k in self.fields})

    def rows(self) -> list[dict[str, str]]:
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))


def _csv_cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def truncate_log(path: Path, column: str, last: int, fields: list[str]) -> None:
    """Drop the CSV rows whose ``column`` (step or epoch) is after ``last``: those a run wrote
    after the checkpoint it now resumes from."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or fields, list(reader)
    kept = [r for r in rows if r.get(column, "").isdigit() and int(r[column]) <= last]
    if len(kept) != len(rows):
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fields)
            writer.writeheader()
            writer.writerows(kept)


def check_resume(saved: Mapping[str, Any], now: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    """Refuse (TrainError) to resume with settings that change the samples or the schedule."""
    changed = [k for k in keys if k in saved and saved[k] != now.get(k)]
    if changed:
        details = ", ".join(f"{k} {saved[k]} -> {now.get(k)}" for k in changed)
        raise TrainError(f"--resume with other settings than the saved run: {details}")


def run_training(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    train: Callable[[argparse.Namespace], dict[str, Any]],
    wrote: Callable[[argparse.Namespace], str],
    more_errors: tuple[type[Exception], ...] = (),
) -> int:
    """A ``cloudseg train X`` entry point: parse, train, one summary line; 2 with a one-line
    error on bad input (:data:`TRAIN_ERRORS` and the trainer's ``more_errors``), 130 when
    interrupted, never a traceback."""
    argv = list(argv or [])
    if argv[:1] == ["--"]:
        argv = argv[1:]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return int(exc.code or 0)
    try:
        card = train(args)
    except (*TRAIN_ERRORS, *more_errors) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted; continue from the last checkpoint with --resume", file=sys.stderr
        )
        return 130
    print(f"wrote {wrote(args)}, {card['steps']} steps; metrics {json.dumps(card['metrics'])}")
    return 0


def ship_weights(
    source: str | Path,
    dest: str | Path,
    fp16: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Copy a trained checkpoint and its model card to ``dest`` (e.g. ``weights/NAME.pth``):
    floating-point tensors stored as fp16 when ``fp16`` (they load into fp32 models unchanged;
    the card says so), the training state left behind; ``extra`` adds entries to the card (e.g.
    the evaluation on held-out frames). Returns ``dest``."""
    source, dest = Path(source), Path(dest)
    card = read_card(source)
    state = torch.load(source, map_location="cpu", weights_only=True)
    if fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    card = {**card, "stored_as": "fp16 (loads into fp32)" if fp16 else "fp32", **(extra or {})}
    dest.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(dest, lambda p: torch.save(state, p))
    text = json.dumps(card, indent=2, default=_json_default) + "\n"
    _atomic_write(card_path(dest), lambda p: p.write_text(text))
    return dest
