"""recorder: the graph's topics, as serialized CDR bytes, into one MCAP recording.

Thin: it subscribes (`raw=True`: no deserializing, no re-serializing) with each topic's own QoS
(transient local for LabelInfo, so the latched message is captured) and hands the bytes to
`cloudseg.data.recording.McapRecording`, which writes the file. Used by `cloudseg record`, and
by `cloudseg demo --record` / `cloudseg run --record` (`python -m cloudseg.nodes.recorder_node
OUT.mcap --namespace NS`). Ctrl-C (or SIGTERM, or the end of `--duration`) closes the file with
its summary.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.task import Future
from rosidl_runtime_py.utilities import get_message

from cloudseg.data.frames import DataError
from cloudseg.data.recording import DEFAULT_TOPICS, McapRecording, parse_topics
from cloudseg.graph import TOPICS, namespace, resolve
from cloudseg.nodes.common import boundary, qos_for, run_nodes

NODE_NAME = "recorder"


def rosbag2_qos(profile: QoSProfile) -> dict[str, Any]:
    """A QoS profile as rosbag2 (metadata version 9) writes an offered profile."""

    def duration(d) -> dict[str, int]:
        sec, nsec = divmod(d.nanoseconds, 10**9)
        return {"sec": sec, "nsec": nsec}

    return {
        "history": profile.history.name.lower(),
        "depth": profile.depth,
        "reliability": profile.reliability.name.lower(),
        "durability": profile.durability.name.lower(),
        "deadline": duration(profile.deadline),
        "lifespan": duration(profile.lifespan),
        "liveliness": profile.liveliness.name.lower(),
        "liveliness_lease_duration": duration(profile.liveliness_lease_duration),
        "avoid_ros_namespace_conventions": profile.avoid_ros_namespace_conventions,
    }


class RecorderNode(Node):
    """Subscribes to `topics` (graph topic names, cloudseg.graph.TOPICS) in namespace `ns` and
    writes what comes into `recording`. Destroying the node closes the recording and passes
    what it holds to `report`. `duration_s` > 0: `finished` completes after that long."""

    def __init__(
        self,
        recording: McapRecording,
        topics: Iterable[str] = DEFAULT_TOPICS,
        ns: str = "/",
        duration_s: float = 0.0,
        report: Callable[[str], object] = print,
    ) -> None:
        super().__init__(NODE_NAME, namespace=namespace(ns))
        self.recording = recording
        self.report = report
        self.subscribed: list[str] = []
        for topic in topics:
            spec, qos = TOPICS[topic], qos_for(topic)
            name = resolve(topic, ns)
            callback = functools.partial(self._on_message, name, spec.type, rosbag2_qos(qos))
            self.create_subscription(get_message(spec.type), topic, callback, qos, raw=True)
            self.subscribed.append(name)
        self.finished: Future | None = None
        if duration_s > 0:
            self.finished = Future()
            self._stop_timer = self.create_timer(duration_s, self._stop)

    def _stop(self) -> None:
        self._stop_timer.cancel()
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(0)

    @boundary("recording")
    def _on_message(
        self, topic: str, type_name: str, qos: dict[str, Any], data: bytes, info: dict
    ) -> None:
        received = info.get("received_timestamp") or time.time_ns()
        self.recording.add_topic(topic, type_name, qos)
        self.recording.write(topic, data, received, info.get("source_timestamp") or 0)

    def close(self) -> None:
        """Close the recording (once) and report what it holds."""
        if self.recording.closed:
            return
        self.recording.close()
        self.report(self.recording.describe(self.silent_topics()))

    def silent_topics(self) -> list[str]:
        return [t for t in self.subscribed if t not in self.recording.topics]

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()


def record(
    output: str, topics: Iterable[str] = DEFAULT_TOPICS, ns: str = "/", duration_s: float = 0.0
) -> int:
    """Record until Ctrl-C (or `duration_s`); 2 when `output` cannot be written."""
    try:
        recording = McapRecording(output)
    except DataError as exc:
        print(f"cloudseg record: {exc}", file=sys.stderr)
        return 2
    topics = list(topics)
    print(
        f"recording {len(topics)} topics in namespace {namespace(ns)} to {output}; Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    try:
        code = run_nodes(
            lambda: [RecorderNode(recording, topics, ns, duration_s, report=_say)],
            args=[],
            name="cloudseg record",
        )
    finally:
        recording.close()  # a node that failed to start: the file is still whole
    return code


def _say(text: str) -> None:
    print(text, flush=True)


def build_parser(prog: str = "cloudseg record") -> argparse.ArgumentParser:
    """The options of `cloudseg record` (also this module's command line)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Record a running graph's topics (subscribed raw, each with its QoS) to "
        "one MCAP file in the rosbag2 layout, the message definitions embedded: Foxglove, "
        "the mcap tools and ros2 bag play open it without cloudseg. Ctrl-C stops and closes it.",
    )
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "output",
        metavar="OUT.mcap",
        help="the recording (a new file): a rosbag2 MCAP with the message definitions",
    )
    p.add_argument(
        "--namespace",
        metavar="NS",
        default="",
        help="the graph's namespace, e.g. car1 (default: the root)",
    )
    p.add_argument(
        "--topics",
        nargs="+",
        metavar="TOPIC",
        help="graph topics to record, or 'all' (default: "
        + ", ".join(DEFAULT_TOPICS)
        + f"; any of: {', '.join(TOPICS)})",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=0.0,
        metavar="S",
        help="stop after S seconds (default: at Ctrl-C)",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv if argv is not None else sys.argv[1:])
    try:
        topics = parse_topics(args.topics)
        ns = namespace(args.namespace)
    except (DataError, ValueError) as exc:
        print(f"cloudseg record: {exc}", file=sys.stderr)
        return 2
    return record(args.output, topics, ns, args.duration)


if __name__ == "__main__":
    raise SystemExit(main())
