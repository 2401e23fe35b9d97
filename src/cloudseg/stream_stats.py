"""Summary statistics of a stream run: counts, bitrate, per-stage latency, PSNR.

Plain Python: fed by the monitor node, the demo and tests.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from cloudseg.control.knob import KnobChange, describe_knob_changes, knob_changes_in

STAGES = (
    "encode",
    "transport",
    "decode_restore",
    "segmentation",
    "end_to_end",
    "labels_end_to_end",
)


def receiver_report(codec: str) -> bool:
    """Whether a cloud FrameStats comes from the node that received the Frame (it names the
    codec). A split cloud reports each frame twice: the sr node (seq, codec, transport, decode,
    restoration, the received counters) and the segmentation node (segmentation only, no
    codec); counters and rates count the receiver's report only."""
    return bool(codec)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


@dataclass
class StreamStats:
    """Accumulates what the monitor sees; `summary()` makes the demo's report.

    Counts are lower bounds from several witnesses, combined so they stay consistent
    (received <= sent <= in) even when the monitor, a best-effort subscriber, misses messages:
    frames in: the source's own count (`source_frames`) or the camera images seen; frames
    sent: the Frames seen or the compressor's sequence number (from 0, also carried in the
    cloud's reports); frames received: the cloud's own count (`FrameStats.frames_received`,
    processed or skipped) or the frames it reported. A frame the cloud received but did not
    process (on a CPU it works on the newest frame and skips the ones that arrived meanwhile,
    by design) is *skipped*; a frame sent that never reached the cloud is *lost*. Each stage's
    timing is counted once per frame, whichever node (or both, in a split cloud) reports it.
    """

    fps: float = 17.0
    segmenting: bool = True  # the cloud segments (else it only restores: cloud_bilinear)
    frames_seen: int = 0  # camera images the monitor saw
    source_frames: int = 0  # camera images the source published (its own count; 0: unknown)
    frames_sent_seen: int = 0  # Frames the monitor saw
    max_seq: int = -1  # the highest Frame.seq seen anywhere (the compressor counts from 0)
    cloud_received: int = 0  # the cloud's own count of frames received (FrameStats)
    payload_bytes: int = 0
    frames_key: int = 0  # frames sent as KEY (an H.264 IDR) by the frame_selector
    frames_useful: int = 0  # frames sent as USEFUL (a P-frame); the rest of frames_in: STALE
    label_age_ms: list[float] = field(default_factory=list)  # labels held per camera frame
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    psnr_db: list[float] = field(default_factory=list)
    labels_received: int = 0
    labels_sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height)
    label_values: set[int] = field(default_factory=set)
    restored_stamps_ns: list[int] = field(default_factory=list)  # in arrival order
    restored_sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height)
    # frame (capture stamp) -> the stages already timed for it; frames reported by the node
    # that received them, and frames segmented
    timed: dict[tuple[int, int], set[str]] = field(default_factory=dict)
    reported: set[tuple[int, int]] = field(default_factory=set)
    segmented: set[tuple[int, int]] = field(default_factory=set)
    # `cloudseg demo --score` (cloudseg.scoring): mIoU of the labels that came back
    miou: float | None = None
    miou_gt_classes: float | None = None
    miou_reference: str | None = None  # "gt" (ground truth) or "hr" (full-resolution labels)
    frames_scored: int | None = None
    not_scored: str = ""  # frames not scored and why, e.g. "1 wrong size"
    miou_held: float | None = None  # of the labels the vehicle held for each camera frame
    frames_held_scored: int | None = None
    held_not_scored: str = ""  # why the held labels were not scored (set by the demo), or ""
    # the adaptive controller (demo --control): Knobs that changed the settings, full frames
    # asked for online profiling, and the cloud's accuracy estimates of those
    knob_changes: int = 0
    full_frames_asked: int = 0
    accuracy_estimates: list[float] = field(default_factory=list)
    knobs: list[KnobChange] = field(default_factory=list)  # the settings it chose, and why
    interrupted: bool = False  # Ctrl-C: what ran until then

    def add_knob_log(self, controller_log: str) -> None:
        """The settings the controller chose and why, from its log (`knob_changes_in`): the
        monitor sees the Knobs, the log also says why."""
        self.knobs = knob_changes_in(controller_log)
        self.knob_changes = max(self.knob_changes, len(self.knobs) - 1)

    def add_latency(self, stage: str, ms: float) -> None:
        self.latency_ms[stage].append(float(ms))

    def _time_once(self, key: tuple[int, int], stage: str, ms: float) -> None:
        done = self.timed.setdefault(key, set())
        if stage not in done:
            done.add(stage)
            self.add_latency(stage, ms)

    # ------------------------------------------------------------------ what the monitor saw

    def add_camera_frame(self) -> None:
        self.frames_seen += 1

    def add_sent(self, seq: int, key: bool, payload_bytes: int, encode_ms: float) -> None:
        """A Frame the compressor sent (seen on the WAN topic)."""
        self.frames_sent_seen += 1
        self.max_seq = max(self.max_seq, int(seq))
        if key:
            self.frames_key += 1
        else:
            self.frames_useful += 1
        self.payload_bytes += int(payload_bytes)
        self.add_latency("encode", encode_ms)

    def add_cloud_report(
        self,
        key: tuple[int, int],
        *,
        receiver: bool,
        seq: int = 0,
        frames_received: int = 0,
        transport_ms: float = 0.0,
        decode_restore_ms: float = 0.0,
        segmentation_ms: float = 0.0,
    ) -> None:
        """A cloud FrameStats for the frame captured at `key`. `receiver`: sent by the node
        that received the Frame (it knows the seq, transport, decode and restoration); a split
        cloud's segmentation node reports the same frame again with only its segmentation."""
        if receiver:
            self.reported.add(key)
            self.max_seq = max(self.max_seq, int(seq))
            self.cloud_received = max(self.cloud_received, int(frames_received))
            self._time_once(key, "transport", transport_ms)
            self._time_once(key, "decode_restore", decode_restore_ms)
        if segmentation_ms:
            self.segmented.add(key)
            self._time_once(key, "segmentation", segmentation_ms)

    # ------------------------------------------------------------------ consistent counts

    @property
    def frames_received(self) -> int:
        """Frames that reached the cloud (processed or skipped)."""
        return max(self.cloud_received, len(self.reported), self.frames_processed)

    @property
    def frames_processed(self) -> int:
        """Frames the cloud restored and, when it segments, segmented (their results came)."""
        return len(self.segmented) if self.segmenting else len(self.reported)

    @property
    def frames_sent(self) -> int:
        return max(self.frames_sent_seen, self.max_seq + 1, self.frames_received)

    @property
    def frames_in(self) -> int:
        return max(self.source_frames, self.frames_seen, self.frames_sent)

    @property
    def frames_skipped(self) -> int:
        """Received but not processed: the cloud worked on a newer frame (or, after a loss,
        waited for the next IDR)."""
        return self.frames_received - self.frames_processed

    @property
    def frames_lost(self) -> int:
        """Sent but never received by the cloud."""
        return self.frames_sent - self.frames_received

    @property
    def kbps(self) -> float:
        """Frame-stream bitrate over the camera time (frames in at the nominal frame rate):
        frames the selector left out cost nothing."""
        frames = max(self.frames_in, self.frames_sent)
        if not frames:
            return 0.0
        return self.payload_bytes * 8 / (frames / self.fps) / 1000

    @property
    def frames_stale(self) -> int:
        return max(self.frames_in - self.frames_sent, 0)

    def summary(self) -> dict:
        finite = [p for p in self.psnr_db if math.isfinite(p)]
        # the result the vehicle waits for: labels when the cloud segments, else the image
        e2e = self.latency_ms["labels_end_to_end"] or self.latency_ms["end_to_end"]
        return {
            "interrupted": self.interrupted,
            "frames_in": self.frames_in,
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
            "frames_processed": self.frames_processed,
            "frames_skipped": self.frames_skipped,
            "frames_lost": self.frames_lost,
            "labels_received": self.labels_received,
            "frames_key": self.frames_key,
            "frames_useful": self.frames_useful,
            "frames_stale": self.frames_stale,
            "camera_labels": len(self.label_age_ms),
            "label_age_ms_p50": round(percentile(self.label_age_ms, 50), 1)
            if self.label_age_ms
            else None,
            "kbps": round(self.kbps, 1),
            "psnr_db": round(float(np.mean(finite)), 2) if finite else None,
            "latency_ms_p50": round(percentile(e2e, 50), 2) if e2e else None,
            "latency_ms_p95": round(percentile(e2e, 95), 2) if e2e else None,
            "miou": self.miou,
            "miou_gt_classes": self.miou_gt_classes,
            "miou_reference": self.miou_reference,
            "frames_scored": self.frames_scored,
            "miou_held": self.miou_held,
            "frames_held_scored": self.frames_held_scored,
            **self.missing_scores(),
            "knob_changes": self.knob_changes,
            "full_frames_asked": self.full_frames_asked,
            "accuracy_estimates": [round(a, 3) for a in self.accuracy_estimates],
            "knobs": [
                {"seq": k.seq, "settings": k.settings, "reason": k.reason} for k in self.knobs
            ],
            "stages_ms": {
                s: {
                    "p50": round(percentile(v, 50), 2),
                    "p95": round(percentile(v, 95), 2),
                    "n": len(v),
                }
                for s, v in self.latency_ms.items()
                if v
            },
        }

    def report(self) -> str:
        """A human-readable table of the summary."""
        s = self.summary()
        done = "segmented" if self.segmenting else "restored"
        lines = [
            f"frames in / sent / received : {s['frames_in']} / {s['frames_sent']} / "
            f"{s['frames_received']} (lost on the way: {s['frames_lost']})",
            f"{f'cloud {done} / skipped':<28}: {s['frames_processed']} / {s['frames_skipped']}"
            + (
                " (newest frame first: it skips what arrived while busy)"
                if s["frames_skipped"]
                else ""
            )
            + (f"; labels back: {s['labels_received']}" if s["labels_received"] else ""),
            f"selection KEY/USEFUL/STALE  : {s['frames_key']} / {s['frames_useful']} / "
            f"{s['frames_stale']}",
            f"Frame-stream bitrate        : {s['kbps']:.1f} kbit/s at {self.fps:g} fps",
            "PSNR restored vs original   : "
            + (f"{s['psnr_db']:.2f} dB" if s["psnr_db"] is not None else "n/a"),
            "latency (ms)                    p50      p95      n",
        ]
        for stage, v in s["stages_ms"].items():
            lines.append(f"  {stage:<28}{v['p50']:8.2f} {v['p95']:8.2f} {v['n']:6d}")
        if self.label_age_ms:
            lines.append(
                f"labels held per camera frame: {s['camera_labels']} frames, age p50 "
                f"{s['label_age_ms_p50']:.0f} ms (capture time)"
            )
        if self.knob_changes or self.full_frames_asked or self.knobs:
            acc = ", ".join(f"{a:.2f}" for a in self.accuracy_estimates) or "none"
            lines.append(
                f"controller                  : {self.knob_changes} knob changes, "
                f"{self.full_frames_asked} full frames asked, accuracy estimates: {acc}"
            )
        lines += [f"  {line}" for line in describe_knob_changes(self.knobs)]
        if self.miou_reference is not None:
            lines.append(self.score_line())
        return "\n".join(lines)

    def missing_scores(self) -> dict[str, str | None]:
        """With --score: why `miou` and `miou_held` are null (None where the figure is there),
        as `miou_missing_reason` and `miou_held_missing_reason`."""
        if self.miou_reference is None:
            return {}
        miou = held = None
        if self.miou is None:
            miou = (
                f"no frame scored: {self.not_scored}"
                if self.not_scored
                else "no labels came back"
                if not self.labels_received
                else "no frame scored"
            )
        if self.miou_held is None:
            held = self.held_not_scored or (
                "the vehicle held no labels for any camera frame: the first labels came back "
                "after the input's last frame (a busy cloud; --rate lower lets it keep up)"
                if not self.label_age_ms
                else "no held labels matched a frame of the input"
            )
        return {"miou_missing_reason": miou, "miou_held_missing_reason": held}

    def score_line(self) -> str:
        """The mIoU of the labels that came back, against what, over how many frames."""
        gt = self.miou_reference == "gt"
        what = "labels mIoU vs ground truth :" if gt else "labels mIoU vs full-res seg :"
        if self.miou is None:
            text = f"{what} n/a ({self.missing_scores()['miou_missing_reason']})"
        else:
            classes = "GT classes" if gt else "reference classes"
            present = "n/a" if self.miou_gt_classes is None else f"{self.miou_gt_classes:.3f}"
            sent = max(self.frames_sent, self.frames_scored or 0)
            text = (
                f"{what} {self.miou:.3f} over {self.frames_scored} of {sent} frames sent "
                f"({classes} {present})"
            )
            if self.frames_skipped:
                text += f"; {self.frames_skipped} skipped by the busy cloud came back unlabelled"
            text += f"; not scored: {self.not_scored}" if self.not_scored else ""
        if self.frames_held_scored:
            text += (
                f"\nlabels held per camera frame: mIoU {self.miou_held:.3f} over "
                f"{self.frames_held_scored} camera frames (selection and latency included)"
            )
        else:
            why = self.missing_scores()["miou_held_missing_reason"]
            text += f"\nlabels held per camera frame: n/a ({why})"
        return text

    def to_json(self) -> str:
        return json.dumps(self.summary())
