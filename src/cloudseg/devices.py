"""Devices: one parsed `torch.device` from a parameter's text (``cpu``, ``cuda``, ``cuda:N``,
``auto``), and the few device-dependent steps (host copies, syncs) done by device type, never by
comparing strings (``cuda:0`` is CUDA too). Imports only torch and numpy: usable on a GPU host
without ROS.
"""

from __future__ import annotations

import argparse
import logging
import re

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DEVICE_FORMS",
    "DeviceError",
    "device_arg",
    "is_cuda",
    "parse_device",
    "resolve_device",
    "synchronize",
    "to_host",
]

log = logging.getLogger(__name__)

DEVICE_FORMS = "cpu, cuda, cuda:N (N = 0, 1, ...) or auto"
_PATTERN = re.compile(r"(cpu|cuda)(?::(\d+))?")


class DeviceError(ValueError):
    """A device text that names no device this code runs on, or one not present here."""


def parse_device(text: str | torch.device) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` (a `torch.device` passes through, checked) -> its
    `torch.device`; ``auto`` and anything else: `DeviceError` (``auto`` needs `resolve_device`).
    Checks the form only, not whether the device is present."""
    if isinstance(text, torch.device):
        if text.type not in ("cpu", "cuda"):
            raise DeviceError(f"device must be cpu or cuda, got {text}")
        return text
    if not isinstance(text, str):
        raise DeviceError(f"device must be a string ({DEVICE_FORMS}), got {type(text).__name__}")
    name = text.strip().lower()
    if name == "auto":
        raise DeviceError("device 'auto' is resolved by resolve_device, not parse_device")
    match = _PATTERN.fullmatch(name)
    if match is None:
        if name.startswith("cuda:"):
            raise DeviceError(
                f"unknown device {text!r}: the index after 'cuda:' must be a number (cuda:0)"
            )
        raise DeviceError(f"unknown device {text!r}; expected {DEVICE_FORMS}")
    kind, index = match.groups()
    if kind == "cpu":
        if index is not None:
            raise DeviceError(f"unknown device {text!r}: cpu takes no index")
        return torch.device("cpu")
    return torch.device("cuda") if index is None else torch.device("cuda", int(index))


def _why_no_cuda() -> str:
    """Why CUDA is not usable here, in a few words."""
    if torch.version.cuda is None:
        return (
            f"torch {torch.__version__} is a CPU build "
            "(scripts/setup.sh --cuda installs the CUDA build)"
        )
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: no device or driver"


def resolve_device(text: str | torch.device) -> torch.device:
    """`parse_device` plus ``auto`` (CUDA when a GPU is usable, else the CPU, said in one log
    line) and a check that a CUDA device asked for is there (`DeviceError` if not)."""
    if isinstance(text, str) and text.strip().lower() == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
            log.info("device auto -> cuda: %s", torch.cuda.get_device_name(device))
            return device
        log.info("device auto -> cpu: %s", _why_no_cuda())
        return torch.device("cpu")
    device = parse_device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {text!r} requested but CUDA is not available here: {_why_no_cuda()}"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {text!r} requested but this host has {count} GPU(s)")
    return device


def device_arg(text: str) -> str:
    """An argparse ``type`` for a device option: the text (``auto`` included) if it parses."""
    if text.strip().lower() != "auto":
        try:
            parse_device(text)
        except DeviceError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def is_cuda(device: str | torch.device) -> bool:
    """Whether ``device`` (a `torch.device` or its text, not ``auto``) is a CUDA device."""
    return parse_device(device).type == "cuda"


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device``'s current stream (nothing to wait for on CPU)."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def to_host(tensors: list[Tensor | None]) -> list[np.ndarray | None]:
    """Tensors (on any one device) as numpy arrays with at most one host sync: CUDA tensors are
    copied into pinned host buffers without waiting, then their device's stream is synchronised
    once; CPU tensors are viewed as they are. None stays None."""
    device = next((t.device for t in tensors if t is not None), None)
    if device is None or device.type != "cuda":
        return [None if t is None else t.detach().cpu().numpy() for t in tensors]
    out: list[Tensor | None] = []
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        buf.copy_(t, non_blocking=True)
        out.append(buf)
    synchronize(device)  # the one host sync of the batch
    return [None if b is None else b.numpy() for b in out]
