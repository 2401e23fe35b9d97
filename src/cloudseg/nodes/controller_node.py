"""Controller node (vehicle side): the adaptive controller between the cloud's stats and Knob.

Subscribes /cloudseg/stats (FrameStats, sent back by the cloud), aggregates them per window
(`window_s`), lets `cloudseg.control.controller.Controller` decide, and publishes a Knob
(reliable, transient-local) when the chosen profile entry changes or a full-resolution frame
is wanted for online profiling. Every change is logged with its reason.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from rclpy.node import Node

from cloudseg.control.controller import Controller, ControllerSettings, Decision
from cloudseg.control.delay import Usage
from cloudseg.control.knob import knob_line
from cloudseg.control.profile import PROFILE_FILE, ProfileEntry, load_profile
from cloudseg.control.window import Measurements, StatSample
from cloudseg.graph import CONTROLLER, KNOB_TOPIC, STATS_TOPIC, config_dir
from cloudseg.guard import BadInput
from cloudseg.msg import FrameStats, Knob
from cloudseg.nodes.common import boundary, qos_for, run_node, stamp_ns
from cloudseg.nodes.parameters import declare_parameters
from cloudseg.stream_stats import receiver_report

STALL_CHECK_S = 0.2
"""How often the node looks for a stall between windows (s)."""

#: Used when config/profile.json does not exist yet: rates are the H.264 targets, the mIoU
#: values only order the entries (rough guesses after docs/benchmarks/profile.md, not
#: measured).
BUILTIN_PROFILE = (
    ProfileEntry(scale=4, bitrate_kbps=300, kbps=300, miou=0.20),
    ProfileEntry(scale=4, bitrate_kbps=750, kbps=750, miou=0.30),
    ProfileEntry(scale=2, bitrate_kbps=1500, kbps=1500, miou=0.35),
    ProfileEntry(scale=2, bitrate_kbps=3000, kbps=3000, miou=0.38),
    ProfileEntry(scale=1, bitrate_kbps=6000, kbps=6000, miou=0.42),
)


def knob_for(decision: Decision, seq: int) -> Knob:
    """The Knob of a decision; fields the profile does not set say 'keep'."""
    e = decision.entry
    return Knob(
        seq=seq,
        scale=e.scale,
        max_fps=float(e.max_fps),
        key_threshold=float(e.key_threshold),
        useful_threshold=float(e.useful_threshold),
        selection_mode="",  # keep
        codec="h264",
        bitrate_kbps=int(e.bitrate_kbps),
        crf=int(e.crf),
        quality=0,  # keep
        sr_bypass=bool(e.sr_bypass),
        request_full_frame=decision.request_full_frame,
        max_frame_bytes=decision.frame_budget,
    )


class ControllerNode(Node):
    def __init__(self) -> None:
        super().__init__(CONTROLLER.name)
        self.params = p = declare_parameters(self, CONTROLLER)
        profile = self.load(p["profile"])
        names = ControllerSettings.__dataclass_fields__
        settings = ControllerSettings(**{k: v for k, v in p.items() if k in names})
        self.controller = Controller(profile, settings)
        self.measurements = Measurements()
        self.seq = 0
        self.published_budget = 0  # the frame budget of the last Knob
        self.pub = self.create_publisher(Knob, KNOB_TOPIC, qos_for(KNOB_TOPIC))
        self.create_subscription(FrameStats, STATS_TOPIC, self.on_stats, qos_for(STATS_TOPIC))
        self.window = self.create_timer(float(p["window_s"]), self.on_window)
        self.create_timer(STALL_CHECK_S, self.on_stall_check)
        self.stall_handled = False  # the current silence was already acted on
        self.queue_handled = False  # the current over-use was already acted on
        self.publish(Decision(self.controller.entry, "start", changed=True))

    def on_parameters(self, changes: dict) -> None:
        """`ros2 param set`: the controller's thresholds apply from the next window."""
        names = ControllerSettings.__dataclass_fields__
        fields = {k: v for k, v in changes.items() if k in names}
        if fields:
            self.controller.settings = replace(self.controller.settings, **fields)

    def load(self, path: str) -> list[ProfileEntry]:
        """The profile; the built-in one (with a warning) when the default file is missing."""
        file = Path(path) if path else config_dir() / PROFILE_FILE
        if not path and not file.is_file():
            self.get_logger().warning(
                f"no profile at {file} (make one: cloudseg profile): using the built-in guess"
            )
            return list(BUILTIN_PROFILE)
        entries = load_profile(file)
        self.get_logger().info(f"profile {file}: {len(entries)} entries")
        return entries

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds / 1e9

    @boundary("stats")
    def on_stats(self, s: FrameStats) -> None:
        if not receiver_report(s.codec):  # a split cloud's second report of the frame
            return
        sample = StatSample(
            seq=int(s.seq),
            payload_bytes=int(s.payload_bytes),
            capture_s=stamp_ns(s.header) / 1e9,
            arrival_s=self.now_s(),
            transport_ms=float(s.transport_ms),
            total_ms=float(s.total_ms),
            frames_received=int(s.frames_received),
            bytes_received=int(s.bytes_received),
            accuracy=float(s.accuracy_estimate),
            sent_ns=int(s.sent_ns),
            arrival_ns=int(s.arrival_ns),
        )
        bad = [
            name
            for name in ("transport_ms", "total_ms", "accuracy")
            if not math.isfinite(getattr(sample, name))
        ]
        if bad or sample.total_ms < 0 or sample.accuracy > 1:
            raise BadInput(f"stats of frame {sample.seq}: {', '.join(bad) or 'range'}", "stats")
        usage = self.measurements.add(sample)
        queue_ms = self.measurements.detector.queue_ms
        if usage is not Usage.OVERUSE or queue_ms < self.controller.settings.queue_severe_ms:
            self.queue_handled = False
        elif not self.queue_handled:  # a queue is growing: act now, not at the window's end
            self.queue_handled = True
            self.window.reset()
            self.on_window()

    @boundary("stall")
    def on_stall_check(self) -> None:
        """Between windows: a silence long enough to be a stall closes the window now."""
        silent = self.measurements.silent_s(self.now_s())
        if not self.controller.stalled(silent):
            self.stall_handled = False
        elif not self.stall_handled:
            self.stall_handled = True
            self.window.reset()
            self.on_window()

    @boundary("window")
    def on_window(self) -> None:
        now = self.now_s()
        window = self.measurements.take(now)
        decision = self.controller.decide(now, window)
        budget_moved = decision.frame_budget != self.published_budget
        if decision.changed or decision.request_full_frame or budget_moved:
            self.publish(decision)
        else:
            self.get_logger().debug(decision.reason)

    def publish(self, d: Decision) -> None:
        self.seq += 1
        knob = knob_for(d, self.seq)
        self.published_budget = d.frame_budget
        # the stamp tells a (re)started compressor whether a one-shot request is for it
        knob.header.stamp = self.get_clock().now().to_msg()
        self.pub.publish(knob)
        if d.changed:
            self.get_logger().info(knob_line(self.seq, d.entry.describe(), d.reason))
        elif not d.request_full_frame:
            self.get_logger().info(f"knob {self.seq}: {d.reason}")
        else:
            self.get_logger().info(f"knob {self.seq}: one full-resolution frame (online profiling)")
            self.get_logger().debug(d.reason)


def main(args: list[str] | None = None) -> int:
    return run_node(ControllerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
