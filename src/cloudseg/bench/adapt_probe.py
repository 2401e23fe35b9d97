"""The vehicle-side probe of `cloudseg bench adapt` (run inside the vehicle namespace).

Records every Frame the compressor sends, every FrameStats that comes back from the cloud and
every Knob, as JSON lines (wall-clock seconds, one host so one clock), and for the bench's own
policies (full, fixed4, resolution) publishes the Knobs. The `controller` policy leaves the
Knobs to the controller node. With ``--payloads FILE`` it also appends every Frame's payload
to FILE (its offset and length in the "sent" record), so the accuracy of what came back can be
scored after the run (:mod:`cloudseg.bench.adapt_score`). Usage (internal):
``python -m cloudseg.bench.adapt_probe --policy P --events FILE [--payloads FILE]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import deque
from typing import IO

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from cloudseg.bench.adapt_analysis import POLICIES, ResolutionPolicy, WindowStats
from cloudseg.bench.adapt_gcc import GccPolicy
from cloudseg.graph import FRAMES_TOPIC, KNOB_TOPIC, STATS_TOPIC
from cloudseg.msg import Frame, FrameStats, Knob
from cloudseg.nodes.common import qos_for, stamp_ns

TICK_S = 0.5  # the bench policies decide this often
LOSS_SPAN_S = 1.5  # the gcc policy's loss over this long


class AdaptProbe(Node):
    """Records the stream on the vehicle side; publishes the bench policies' Knobs."""

    def __init__(self, policy: str, out: IO[str], payloads: IO[bytes] | None = None) -> None:
        super().__init__("cloudseg_adapt_probe")
        self.policy = policy
        self.out = out
        self.payloads = payloads
        self.window = WindowStats()
        self.knob_seq = 0
        self.scale = 0
        self.resolution = ResolutionPolicy() if policy == "resolution" else None
        self.gcc = GccPolicy() if policy == "gcc" else None
        self.counters: deque[tuple[float, int, int]] = deque()  # (t, seq, frames received)
        self.create_subscription(Frame, FRAMES_TOPIC, self.on_frame, qos_for(FRAMES_TOPIC))
        self.create_subscription(FrameStats, STATS_TOPIC, self.on_stats, qos_for(STATS_TOPIC))
        self.create_subscription(Knob, KNOB_TOPIC, self.on_knob, qos_for(KNOB_TOPIC))
        self.knob_pub = None
        if policy != "controller":
            self.knob_pub = self.create_publisher(Knob, KNOB_TOPIC, qos_for(KNOB_TOPIC))
            start = POLICIES[policy]
            if self.gcc is not None:
                self.publish_rate(self.gcc.update(time.time(), 0.0, 0.0))
            else:
                self.publish_scale(self.resolution.scale if self.resolution else start)
            self.create_timer(TICK_S, self.tick)

    def write(self, record: dict) -> None:
        self.out.write(json.dumps(record) + "\n")

    def publish_scale(self, scale: int) -> None:
        if scale == self.scale or self.knob_pub is None:
            return
        self.knob_seq += 1
        self.scale = scale
        knob = Knob(seq=self.knob_seq, scale=scale)
        knob.header.stamp = self.get_clock().now().to_msg()
        self.knob_pub.publish(knob)

    def publish_rate(self, kbps: int | None) -> None:
        """The gcc policy's Knob: its fixed scale at a bitrate (None: keep the one in force)."""
        if kbps is None or self.knob_pub is None or self.gcc is None:
            return
        self.knob_seq += 1
        self.scale = self.gcc.scale
        knob = Knob(seq=self.knob_seq, scale=self.gcc.scale, codec="h264", bitrate_kbps=kbps)
        knob.header.stamp = self.get_clock().now().to_msg()
        self.knob_pub.publish(knob)

    def on_frame(self, f: Frame) -> None:
        now = time.time()
        self.window.sent(now, int(f.seq), len(f.data))
        record = {"e": "sent", "t": now, "seq": int(f.seq), "bytes": len(f.data), "scale": f.scale}
        if self.payloads is not None:
            record.update(
                off=self.payloads.tell(), len=len(f.data), codec=f.codec, key=bool(f.keyframe),
                w=int(f.width), h=int(f.height), knob=int(f.knob_seq),
            )  # fmt: skip
            self.payloads.write(bytes(f.data))
        self.write(record)

    def on_stats(self, s: FrameStats) -> None:
        now = time.time()
        latency_ms = (now - stamp_ns(s.header) / 1e9) * 1e3
        self.window.back(now, int(s.seq), latency_ms)
        record = {
            "e": "back",
            "t": now,
            "seq": int(s.seq),
            "bytes": int(s.payload_bytes),
            "lat_ms": round(latency_ms, 2),
            # the vehicle's and the cloud's clocks: arrival - sent is the one-way delay up
            # to the clocks' offset (the queue delay: relative to its minimum in the run)
            "sent_ns": int(s.sent_ns),
            "arr_ns": int(s.arrival_ns),
            # the cloud's counters: frames it received, and skipped (a newer one was waiting)
            "rx": int(s.frames_received),
            "skip": int(s.frames_skipped),
        }
        accuracy = float(getattr(s, "accuracy_estimate", -1.0))  # newer FrameStats carry it
        if accuracy >= 0:
            record["acc"] = round(accuracy, 4)
        self.write(record)
        self.counters.append((now, int(s.seq), int(s.frames_received)))
        while len(self.counters) > 2 and self.counters[0][0] < now - LOSS_SPAN_S:
            self.counters.popleft()
        if self.gcc is not None:
            self.gcc.on_stats(
                int(s.seq), int(s.sent_ns), int(s.arrival_ns), int(s.payload_bytes), now
            )
            if self.gcc.published_kbps and self.gcc.rate_kbps < self.gcc.published_kbps * 0.9:
                self.publish_rate(self.gcc.update(now, 0.0, 0.0))  # a decrease: at once

    def on_knob(self, k: Knob) -> None:
        self.write(
            {
                "e": "knob",
                "t": time.time(),
                "seq": int(k.seq),
                "scale": int(k.scale),
                "max_fps": round(float(k.max_fps), 2),
                "bitrate_kbps": int(k.bitrate_kbps),
                "crf": int(k.crf),
                "sr_bypass": bool(k.sr_bypass),
            }
        )

    def link_loss(self) -> float:
        """Frames lost on the link over the last LOSS_SPAN_S: sent (seq) but not received by
        the cloud (its counter; frames it received and skipped because it was busy are not
        the link's loss, GCC's loss-based part must not see them)."""
        if len(self.counters) < 2:
            return 0.0
        (_, seq0, rx0), (_, seq1, rx1) = self.counters[0], self.counters[-1]
        sent = seq1 - seq0
        return min(max(1.0 - (rx1 - rx0) / sent, 0.0), 1.0) if sent > 0 and rx0 else 0.0

    def tick(self) -> None:
        if self.gcc is not None and self.window.back_seqs:
            loss = self.link_loss()
            self.publish_rate(self.gcc.update(time.time(), TICK_S, loss))
        if self.resolution is not None and self.window.back_seqs:  # not before the stream is up
            w = self.window.summary(time.time())
            self.publish_scale(self.resolution.update(w, TICK_S))


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the probe."""
    parser = argparse.ArgumentParser(prog="cloudseg.bench.adapt_probe")
    parser.add_argument("--policy", required=True, choices=tuple(POLICIES))
    parser.add_argument("--events", required=True, help="JSON-lines file to write")
    parser.add_argument("--payloads", help="file to append every Frame's payload to")
    args = parser.parse_args(argv)
    return run_probe(args.policy, args.events, args.payloads)


def run_probe(policy: str, events: str, payloads: str | None = None) -> int:
    """Spin the probe node under ``policy`` until shutdown, writing its events (JSON lines) to
    ``events`` and every Frame's payload to ``payloads`` when given."""
    rclpy.init(args=[])
    executor = SingleThreadedExecutor()
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(events, "w", buffering=1))
        payload_file = files.enter_context(open(payloads, "wb")) if payloads else None
        probe = AdaptProbe(policy, out, payload_file)
        executor.add_node(probe)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            probe.destroy_node()
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
