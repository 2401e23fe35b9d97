"""What every cloudseg node shares: QoS profiles, parameter declaration, a clean main()."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from cloudseg.graph import TOPICS, NodeSpec, Param
from cloudseg.media.codecs import CodecError


def _best_effort(depth: int = 5) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


#: QoS per role (DESIGN.md): a late frame is worthless, so frames and results are best-effort
#: with a small keep-last depth; knobs are reliable and transient-local (late joiners get the
#: last one).
QOS: dict[str, QoSProfile] = {
    "sensor": _best_effort(),
    "frames": _best_effort(),
    "results": _best_effort(),
    "knob": QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    ),
}


def qos_for(topic: str) -> QoSProfile:
    """The QoS profile of a graph topic."""
    return QOS[TOPICS[topic].qos]


def stamp_ns(header) -> int:
    """A header's stamp in nanoseconds."""
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _descriptor(p: Param) -> ParameterDescriptor:
    text = p.description
    if p.choices:
        text += f" (one of: {', '.join(p.choices)})"
    d = ParameterDescriptor(description=text)
    if p.min is not None or p.max is not None:
        if isinstance(p.default, bool):
            pass
        elif isinstance(p.default, int):
            d.integer_range = [
                IntegerRange(from_value=int(p.min), to_value=int(p.max), step=int(p.step or 1))
            ]
        elif isinstance(p.default, float):
            d.floating_point_range = [
                FloatingPointRange(from_value=float(p.min), to_value=float(p.max), step=0.0)
            ]
    return d


def declare_parameters(node: Node, spec: NodeSpec) -> dict[str, Any]:
    """Declare every parameter of `spec` on `node` (descriptions, ranges) and return values.

    A value outside its range or choices is refused with the reason, and the default is kept.
    """
    values: dict[str, Any] = {}
    for p in spec.params:
        descriptor = _descriptor(p)
        try:
            values[p.name] = p.check(node.declare_parameter(p.name, p.default, descriptor).value)
        except Exception as exc:  # rclpy raises several kinds for out-of-range or mistyped values
            node.get_logger().error(f"parameter {p.name}: {exc}; using default {p.default!r}")
            if node.has_parameter(p.name):
                node.set_parameters([Parameter(p.name, value=p.default)])
            else:
                node.declare_parameter(p.name, p.default, descriptor, ignore_override=True)
            values[p.name] = p.default
    return values


def decode_frame(node: Node, frame, decode) -> tuple:
    """Decode a Frame with `decode(payload, codec, seq, scale, width, height)`.

    Returns (lr, decode_ms), or (None, 0) when the frame is dropped: a bad frame is logged with
    its reason, and a lost frame once per gap ("waiting for the next IDR frame").
    """
    try:
        lr, ms = decode(
            frame.data,
            frame.codec,
            int(frame.seq),
            int(frame.scale),
            int(frame.width),
            int(frame.height),
        )
    except (CodecError, ValueError) as exc:
        node.get_logger().warning(f"frame {frame.seq} dropped: {exc}")
        return None, 0.0
    waiting = getattr(node, "_waiting_for_idr", False)
    if lr is None and not waiting:
        node.get_logger().warning(
            f"frame {frame.seq}: a frame was lost; waiting for the next IDR frame"
        )
    elif lr is not None and waiting:
        node.get_logger().info(f"frame {frame.seq}: IDR received, decoding again")
    node._waiting_for_idr = lr is None
    return lr, ms


def run_nodes(
    factory: Callable[[], list[Node]], args: list[str] | None = None, name: str | None = None
) -> int:
    """Init rclpy, spin the nodes `factory` makes in one executor until Ctrl-C, shutdown, or
    a node's `finished` future (a player that ends); clean up; return an exit code."""
    rclpy.init(args=args if args is not None else sys.argv)
    nodes: list[Node] = []
    executor = SingleThreadedExecutor()
    try:
        nodes = factory()
        for node in nodes:
            executor.add_node(node)
        finished = next((n.finished for n in nodes if getattr(n, "finished", None)), None)
        if finished is None:
            executor.spin()
        else:
            executor.spin_until_future_complete(finished)
            return int(finished.result() or 0)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # a failed start: one line, no traceback
        print(f"{name or getattr(factory, '__name__', 'cloudseg')}: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break cleanup
        for node in nodes:
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """`run_nodes` for a single node class."""
    return run_nodes(lambda: [factory()], args, name=getattr(factory, "__name__", None))
