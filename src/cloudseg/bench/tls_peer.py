"""One side of a TLS-link exchange (`cloudseg bench tls` and test/test_tls.py): a ROS 2 node
that publishes `Frame`s carrying a marker string on one topic and counts those arriving on
another, with the graph's frame QoS (best effort, small depth).

    python -m cloudseg.bench.tls_peer --pub /cloudseg/frames --sub /cloudseg/back \\
        --marker VEHICLE-MARKER --size 5000 --count 200 --rate 50 --want 5 --seconds 30

Prints one line per event, `TLSPEER {json}`: `matched` (a subscriber of --pub is known),
`start` (the first message went out), `published` (the --count messages went out), and last
`result` (messages received, the markers they carried, seconds to the first one).
Publishing starts once a subscriber has matched (or at once with --count 0: publish at --rate
until the end). The run ends after
--seconds, or once --want messages arrived and the --count messages went out (then it keeps
publishing --linger seconds so that the other side reaches its count too), or on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

PREFIX = "TLSPEER "


@dataclass(frozen=True)
class PeerOptions:
    """One peer's exchange (the command's options, same names)."""

    pub: str = "-"  # topic to publish on ('-': none)
    sub: str = "-"  # topic to count ('-': none)
    marker: str = "CLOUDSEG-MARKER"
    size: int = 5000  # bytes per message
    count: int = 0  # messages to publish (0: until the end)
    rate: float = 20.0  # messages per second
    want: int = 0  # stop after this many received
    seconds: float = 30.0  # longest run
    linger: float = 2.0  # keep publishing after `want`
    settle: float = 1.0  # wait after matching (s)


def emit(event: str, **data) -> None:
    print(PREFIX + json.dumps({"event": event, **data}), flush=True)


def payload(marker: str, size: int, seq: int) -> bytes:
    """`size` bytes: the marker, then bytes that do not repeat it (random, seeded per message)."""
    head = f"{marker}#{seq:08d}#".encode()
    rest = max(size - len(head), 0)
    return (head + os.urandom(rest))[: max(size, len(head))]


def build_parser() -> argparse.ArgumentParser:
    d = PeerOptions()
    p = argparse.ArgumentParser(prog="python -m cloudseg.bench.tls_peer", description=__doc__)
    p.add_argument("--pub", default=d.pub, help="topic to publish on ('-': none)")
    p.add_argument("--sub", default=d.sub, help="topic to count ('-': none)")
    p.add_argument("--marker", default=d.marker)
    p.add_argument("--size", type=int, default=d.size, help="bytes per message")
    p.add_argument(
        "--count", type=int, default=d.count, help="messages to publish (0: until the end)"
    )
    p.add_argument("--rate", type=float, default=d.rate, help="messages per second")
    p.add_argument("--want", type=int, default=d.want, help="stop after this many received")
    p.add_argument("--seconds", type=float, default=d.seconds, help="longest run")
    p.add_argument("--linger", type=float, default=d.linger, help="keep publishing after --want")
    p.add_argument("--settle", type=float, default=d.settle, help="wait after matching (s)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the exchange."""
    return run_peer(PeerOptions(**vars(build_parser().parse_args(argv))))


def run_peer(options: PeerOptions) -> int:
    """Run one exchange as a ROS 2 node; its events go to stdout (see the module docstring)."""
    import rclpy

    from cloudseg.graph import FRAMES_TOPIC
    from cloudseg.msg import Frame
    from cloudseg.nodes.common import qos_for

    rclpy.init(args=[])
    node = rclpy.create_node(f"tls_peer_{os.getpid()}")
    qos = qos_for(FRAMES_TOPIC)
    t0 = time.monotonic()
    got: list[float] = []
    markers: dict[str, int] = {}

    def on_frame(msg) -> None:
        got.append(time.monotonic() - t0)
        head = bytes(msg.data[:64]).split(b"#", 1)[0].decode(errors="replace")
        markers[head] = markers.get(head, 0) + 1

    if options.sub != "-":
        node.create_subscription(Frame, options.sub, on_frame, qos)
    pub = node.create_publisher(Frame, options.pub, qos) if options.pub != "-" else None
    msg = Frame(codec="jpeg")
    sent = 0
    start_at = None  # when publishing may start (--count: after matching and settling)
    next_pub = 0.0
    done_at = None
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    try:
        while time.monotonic() - t0 < options.seconds and not stop:
            now = time.monotonic()
            if pub is not None and start_at is None and pub.get_subscription_count() > 0:
                emit("matched", t=round(now - t0, 2))
                start_at = now + (options.settle if options.count else 0.0)
            if pub is not None and now >= next_pub:
                if options.count == 0:
                    may_send = True  # continuous: also before matching, as a camera would
                else:
                    may_send = start_at is not None and now >= start_at and sent < options.count
                if may_send:
                    if sent == 0:
                        emit("start", t=round(now - t0, 2))
                    msg.seq = sent
                    msg.data = payload(options.marker, options.size, sent)
                    pub.publish(msg)
                    sent += 1
                    next_pub = now + 1.0 / options.rate
                    if sent == options.count:
                        emit("published", count=sent, t=round(time.monotonic() - t0, 2))
            if done_at is None:
                enough = (not options.want or len(got) >= options.want) and (
                    not options.count or sent >= options.count
                )
                if enough and (options.want or options.count):
                    done_at = now
            elif now - done_at >= options.linger:
                break
            rclpy.spin_once(node, timeout_sec=0.002)
    except KeyboardInterrupt:
        pass
    emit(
        "result",
        received=len(got),
        sent=sent,
        markers=markers,
        first_s=round(got[0], 2) if got else None,
    )
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def parse_events(text: str) -> list[dict]:
    """The `TLSPEER` events in a log."""
    lines = text.splitlines()
    return [json.loads(line[len(PREFIX) :]) for line in lines if line.startswith(PREFIX)]


if __name__ == "__main__":
    sys.exit(main())
