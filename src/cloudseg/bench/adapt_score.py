"""The accuracy of the labels a policy got back in ``cloudseg bench adapt`` (scored offline).

During a run the probe stores the payload of every Frame the vehicle sent. Afterwards the
frames whose results came back (so the cloud received them) are decoded in stream order with
the cloud's own decoder (:class:`~cloudseg.media.stream.StreamDecoder`: a lost frame makes the
P-frames after it undecodable until the next IDR, as in the cloud), and the first one that
decodes in every ``interval_s`` seconds of arrival time is restored and segmented as a GPU
cloud would (the ``cloud`` graph: CARN-M SR unless the Knob in force bypassed it, ESPNetv2 at
its trained 1024x512; scale 1 segments the frame itself). Its labels are scored against the
segmenter's labels on the original full-resolution frame (reference "hr", as `cloudseg
profile` does). The original is found by
content: the sequence frame whose small grey copy is nearest the decoded frame's (the source
loops the sequence with "now" stamps, so the stamp does not say which frame it was).

Plain Python (no rclpy): runs after the namespaces are gone, on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["FrameMatcher", "Scores", "score_events"]

THUMB = (64, 32)
"""Size (w, h) of the grey copies that identify a decoded frame's original."""

Segment = Callable[[np.ndarray, int, bool], np.ndarray]
"""(decoded LR frame, scale, SR on) -> labels at the reference labels' resolution."""


def _thumb(rgb: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)


class FrameMatcher:
    """Which of a sequence's frames a decoded (downsampled, compressed) frame came from."""

    def __init__(self, frames: Sequence[np.ndarray]) -> None:
        if not frames:
            raise ValueError("no frames to match against")
        self._thumbs = np.stack([_thumb(f) for f in frames])

    def __call__(self, decoded: np.ndarray) -> int:
        d = ((self._thumbs - _thumb(decoded)[None]) ** 2).mean(axis=(1, 2))
        return int(np.argmin(d))


@dataclass
class Scores:
    """mIoU (reference "hr") overall and per trace step; `scored` frames in each."""

    miou: float | None
    steps_miou: list[float | None]
    scored: int
    steps_scored: list[int]


def read_payloads(path: Path) -> bytes:
    """The probe's payload file (all of it; a run holds a few MB)."""
    return path.read_bytes() if path.is_file() else b""


def score_events(
    events: Sequence[dict],
    payloads: bytes,
    step_bounds: Sequence[tuple[float, float]],
    t0: float,
    frames: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    segment: Segment,
    interval_s: float = 1.0,
    progress: Any = None,
) -> Scores:
    """Score the labels of the frames that came back (see the module docstring).

    ``events``: the probe's records; ``step_bounds``: (start s, end s) of each trace step,
    relative to ``t0`` (wall clock); a frame belongs to the step in which its result arrived.
    ``frames``/``reference``: the looped sequence and its full-resolution labels.
    """
    from cloudseg.media.codecs import CodecError
    from cloudseg.media.stream import StreamDecoder
    from cloudseg.metrics import ConfusionMatrix

    back = {e["seq"]: e["t"] for e in events if e["e"] == "back"}
    bypass = {e["seq"]: bool(e.get("sr_bypass")) for e in events if e["e"] == "knob"}
    arrived = sorted(
        (e for e in events if e["e"] == "sent" and e["seq"] in back and "off" in e),
        key=lambda e: e["seq"],
    )
    match = FrameMatcher(frames)
    overall = ConfusionMatrix()
    per_step = [ConfusionMatrix() for _ in step_bounds]
    counts = [0] * len(step_bounds)
    decoder = StreamDecoder()
    next_t = 0.0
    for e in arrived:
        data = payloads[e["off"] : e["off"] + e["len"]]
        if len(data) != e["len"]:
            continue  # the payload file was cut by the stop
        try:
            lr, _ = decoder.decode(data, e["codec"], e["seq"], e["scale"], e["w"], e["h"])
        except CodecError:
            lr = None
        if progress is not None:
            progress.update(1)
        if lr is None:
            continue
        t = back[e["seq"]] - t0
        step = next((k for k, (a, b) in enumerate(step_bounds) if a <= t < b), None)
        if step is None or t < next_t:
            continue
        next_t = t + interval_s
        labels = segment(lr, int(e["scale"]), not bypass.get(e.get("knob", -1), False))
        ref = reference[match(lr)]
        overall.update(labels, ref)
        per_step[step].update(labels, ref)
        counts[step] += 1
    return Scores(
        miou=overall.miou() if sum(counts) else None,
        steps_miou=[cm.miou() if n else None for cm, n in zip(per_step, counts, strict=True)],
        scored=sum(counts),
        steps_scored=counts,
    )
