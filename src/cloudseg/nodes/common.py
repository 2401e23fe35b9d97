"""What every cloudseg node shares: QoS profiles, parameter declaration, the callback
boundary (`boundary`: no exception from a message leaves a callback) and a clean main()."""

from __future__ import annotations

import array
import faulthandler
import functools
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import rclpy
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from cloudseg.graph import TOPICS, NodeSpec, Param
from cloudseg.guard import BadInput, BadInputCounter, check_stamp


def _best_effort(depth: int = 5) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


#: QoS per role (DESIGN.md): a late frame is worthless, so frames and results are best-effort
#: with a small keep-last depth; knobs are reliable and transient-local (late joiners get the
#: last one); requests (the cloud's keyframe requests) are reliable and volatile (an old
#: request is worthless to a node that starts later).
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
    "request": QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=2,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    ),
}


def qos_for(topic: str) -> QoSProfile:
    """The QoS profile of a graph topic."""
    return QOS[TOPICS[topic].qos]


def stamp_ns(header) -> int:
    """A header's stamp in nanoseconds; BadInput for a stamp no clock can hold (negative)."""
    return check_stamp(header.stamp, "header.stamp")


def _descriptor(p: Param, read_only: bool) -> ParameterDescriptor:
    text = p.description
    if p.choices:
        text += f" ({'each ' if isinstance(p.default, list) else ''}one of: "
        text += f"{', '.join(map(str, p.choices))})"
    if read_only:
        text += " [read-only once the node runs]"
    d = ParameterDescriptor(description=text, read_only=read_only)
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


def _plain(value: Any) -> Any:
    """A parameter value as plain Python (rclpy gives arrays as array.array)."""
    return list(value) if isinstance(value, (array.array, tuple)) else value


class ParameterError(ValueError):
    """An invalid start-up parameter value: the node does not start (one line says why)."""


def declare_parameters(node: Node, spec: NodeSpec, composed: bool = False) -> dict[str, Any]:
    """Declare every parameter of `spec` on `node` (descriptions, ranges; read-only unless
    `spec.live` names it) and return their values. `composed`: the node runs composed with
    others in one process; the parameters `spec.standalone` names are then not declared.

    A start-up value outside its range or choices fails the node's start (ParameterError,
    with the reason). Live parameters change at run time through a parameter callback that
    checks each value against the graph's range and then calls ``node.on_parameters(changes)``
    (when the node has one) to apply it; a refused change leaves everything as it was, and
    `ros2 param set` prints the reason. Setting a read-only one is refused by rclpy, saying so.
    """
    values: dict[str, Any] = {}
    for p in spec.declared(composed):
        descriptor = _descriptor(p, read_only=not spec.is_live(p.name))
        try:
            value = node.declare_parameter(p.name, p.default, descriptor).value
        except Exception as exc:  # rclpy raises several kinds for out-of-range or mistyped values
            override = getattr(node, "_parameter_overrides", {}).get(p.name)
            given = _plain(override.value) if override is not None else None
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            try:
                p.check(given)
            except ValueError as mine:
                reason = str(mine)
            else:
                reason = f"{p.name}={given!r}: {reason}"
            raise ParameterError(f"invalid parameter of {spec.name}: {reason}") from None
        try:
            values[p.name] = p.check(_plain(value))
        except ValueError as exc:
            raise ParameterError(f"invalid parameter of {spec.name}: {exc}") from None
    if spec.live:
        node.add_on_set_parameters_callback(functools.partial(_on_set, node, spec))
    return values


def _on_set(node: Node, spec: NodeSpec, parameters: list[Parameter]) -> SetParametersResult:
    changes: dict[str, Any] = {}
    for prm in parameters:
        try:
            p = spec.param(prm.name)
        except KeyError:
            continue  # not one of ours (e.g. use_sim_time)
        if not spec.is_live(p.name):
            return SetParametersResult(successful=False, reason=f"{p.name} is read-only")
        try:
            changes[p.name] = p.check(_plain(prm.value))
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
    if not changes:
        return SetParametersResult(successful=True)
    apply = getattr(node, "on_parameters", None)
    try:
        if apply is not None:
            apply(changes)
    except Exception as exc:  # the node cannot use the values together: refused, unchanged
        return SetParametersResult(successful=False, reason=f"{type(exc).__name__}: {exc}")
    params = getattr(node, "params", None)
    if isinstance(params, dict):
        params.update(changes)
    shown = ", ".join(f"{k}={v!r}" for k, v in changes.items())
    node.get_logger().info(f"parameters changed: {shown}")
    return SetParametersResult(successful=True)


F = TypeVar("F", bound=Callable[..., Any])


def bad_inputs(node: Node) -> BadInputCounter:
    """The node's counter of dropped inputs (made on first use)."""
    counter = node.__dict__.get("bad_inputs")
    if counter is None:
        counter = node.__dict__["bad_inputs"] = BadInputCounter()
    return counter


def drop_input(
    node: Node, callback: str, exc: BaseException, what: str | None = None, kind: str | None = None
) -> None:
    """Count one dropped input of `callback` and log it, rate-limited per kind: the first of a
    kind, then at most one line every 10 s (or 1000 drops) with the count. An input refused by
    a check (BadInput, CodecError) is a warning; any other exception is an error naming where
    it was raised (no traceback: one line)."""
    line = bad_inputs(node).drop(callback, exc, kind)
    if line is None:
        return
    if what:
        line = what + line[len(callback) :]
    if isinstance(exc, BadInput):
        node.get_logger().warning(line)
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
        node.get_logger().error(line + where)


def boundary(callback: str) -> Callable[[F], F]:
    """Decorator for a node's subscription and timer callbacks: every callback is a boundary.
    No exception from a message leaves it (one would end `executor.spin()` and the process):
    the message is dropped, counted and logged (`drop_input`) under `callback`, e.g. "frame"."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def guarded(self: Node, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:  # this is the boundary: nothing leaves it
                # the message: the first argument that has a seq (a stream's callbacks get
                # their namespace first)
                seq = next((a.seq for a in args if hasattr(a, "seq")), None)
                what = f"{callback} {seq}" if isinstance(seq, int) else None
                drop_input(self, callback, exc, what if what and what not in str(exc) else None)
                return None

        return guarded  # type: ignore[return-value]

    return wrap


def run_nodes(
    factory: Callable[[], list[Node]], args: list[str] | None = None, name: str | None = None
) -> int:
    """Init rclpy, spin the nodes `factory` makes in one executor until Ctrl-C, shutdown, or
    a node's `finished` future (a player that ends); clean up; return an exit code."""
    # `kill -USR1 <pid>` prints every thread's stack to stderr (the node's log): a node that
    # hangs can be looked at without stopping it
    faulthandler.register(signal.SIGUSR1, all_threads=True)
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
        if not rclpy.ok():  # SIGTERM / SIGINT shut the context down under the executor (rclpy
            return 0  # then raises "failed to initialize wait set ..."): a clean stop
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
