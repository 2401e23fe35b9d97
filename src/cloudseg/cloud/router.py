"""Results of a batch back to their own streams, and the fields of every cloud FrameStats
(no rclpy).

Every frame in a batch came from one stream; `route` splits a `BatchResult` into one
`Routed` per frame: the labels at that frame's camera size (nearest neighbour from the size
the pipeline segmented at), its restored image and overlay when they were made, and the
fields of its FrameStats (the stream's own counters, the batch size, the frame's share of the
batch time). The node publishes each on that stream's topics only. `frame_stats` builds the
FrameStats fields of every cloud node's report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from cloudseg.cloud.inference import BatchResult
from cloudseg.media.resize import resize_labels
from cloudseg.restore.labels import mark_untrained


@dataclass
class StreamFrame:
    """A decoded frame of one stream on its way through the batcher."""

    stream_id: str
    header: Any  # std_msgs/Header of the camera frame (opaque here)
    seq: int
    scale: int
    codec: str
    width: int  # camera size
    height: int
    payload_bytes: int
    lr: np.ndarray
    decode_ms: float
    transport_ms: float
    t0: float  # perf_counter when the frame arrived
    sent_ns: int = 0  # Frame.sent_stamp (vehicle clock)
    arrival_ns: int = 0  # DDS arrival at the cloud (cloud clock)
    frames_received: int = 0  # of its stream so far (FrameStats)
    bytes_received: int = 0
    sr_bypass: bool = False
    stream_scale: int = 0  # the stream's Knob's scale (0: none)
    stream_crf: int | None = None

    @property
    def profiling(self) -> bool:
        """The controller's profiling frame: full resolution while the stream runs at k > 1."""
        return self.scale == 1 and self.stream_scale > 1

    def batch_key(self) -> tuple:
        """Frames of one key go through one inference call: (size, scale, mode)."""
        return (self.lr.shape, self.scale, self.sr_bypass)


@dataclass
class Routed:
    """One frame's results, for its own stream's publishers."""

    frame: StreamFrame
    labels: np.ndarray  # HxW uint8 train ids at the camera size
    work_labels: np.ndarray  # at the size that was segmented
    restored: np.ndarray | None
    overlay: np.ndarray | None
    stats: dict[str, Any]  # FrameStats fields (header excluded)

    @property
    def stream_id(self) -> str:
        return self.frame.stream_id


def frame_stats(
    received: StreamFrame | None,
    *,
    sr_bypass: bool,
    sr_ms: float,
    segmentation_ms: float = 0.0,
    untrained: bool = False,
    frames_skipped: int = 0,
    batch_size: int = 0,
    t0: float | None = None,
    seq: int = 0,
    scale: int = 1,
    decode_ms: float = 0.0,
) -> dict[str, Any]:
    """The fields of one cloud FrameStats (the node adds the header, and the accuracy estimate
    of a profiling frame). `received`: the Frame as the reporting node received it (its seq,
    scale, codec, payload, decode and transport times, its stream's counters); None for a
    report of segmentation only (the split cloud's segmentation node, no codec:
    `cloudseg.stream_stats.receiver_report`), which gives `seq`, `scale` and `decode_ms`.
    `total_ms`: from `t0` (default: when the frame arrived) to now."""
    if t0 is None:
        t0 = received.t0
    stats: dict[str, Any] = {
        "seq": seq,
        "scale": scale,
        "decode_ms": decode_ms,
        "sr_bypass": sr_bypass,
        "sr_ms": sr_ms,
        "segmentation_ms": segmentation_ms,
        "total_ms": (time.perf_counter() - t0) * 1e3,
        "untrained": bool(untrained),
        "frames_skipped": frames_skipped,
        "batch_size": batch_size,
    }
    if received is not None:
        f = received
        stats.update(
            stream_id=f.stream_id,
            seq=f.seq,
            scale=f.scale,
            codec=f.codec,
            payload_bytes=f.payload_bytes,
            decode_ms=f.decode_ms,
            transport_ms=f.transport_ms,
            sent_ns=f.sent_ns,
            arrival_ns=f.arrival_ns,
            frames_received=f.frames_received,
            bytes_received=f.bytes_received,
        )
    return stats


def route(
    frames: list[StreamFrame], result: BatchResult, batch_size: int, skipped: list[int]
) -> list[Routed]:
    """One `Routed` per frame of a group, in order (``skipped``: each stream's frames skipped
    so far, from the batcher; ``batch_size``: frames in the whole batch)."""
    n = len(frames)
    if len(result.labels) != n:
        raise ValueError(f"inference returned {len(result.labels)} label maps for {n} frames")
    out = []
    for i, (f, skip) in enumerate(zip(frames, skipped, strict=True)):
        work = result.labels[i]
        overlay = None if result.overlay is None else result.overlay[i]
        if overlay is not None and result.untrained:
            overlay = mark_untrained(overlay, result.untrained)
        stats = frame_stats(
            f,
            # an inference that does not say how it restored: as the frame asked
            sr_bypass=result.mode != "sr" if result.mode else f.sr_bypass or f.scale == 1,
            sr_ms=result.sr_ms / n,
            segmentation_ms=result.segmentation_ms / n,
            untrained=bool(result.untrained),
            frames_skipped=skip,
            batch_size=batch_size,
        )
        out.append(
            Routed(
                f,
                resize_labels(work, (f.width, f.height)),
                work,
                None if result.restored is None else result.restored[i],
                overlay,
                stats,
            )
        )
    return out
