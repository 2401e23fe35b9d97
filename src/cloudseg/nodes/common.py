"""What every cloudseg node shares: QoS profiles, the callback boundary (`boundary`: no
exception from a message leaves a callback), Python logs into the node's log and a clean
main(). Parameters: `cloudseg.nodes.parameters`."""

from __future__ import annotations

import faulthandler
import functools
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from cloudseg.graph import TOPICS
from cloudseg.guard import BadInput, BadInputCounter, check_stamp
from cloudseg.stop_signals import StopSignals

#: How long one turn of a node's executor waits for work (s): a stop signal is seen within it.
SPIN_TURN_S = 0.1


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
    # vision_msgs/LabelInfo: once per publisher, kept for late subscribers (as CameraInfo-like
    # metadata is in image pipelines)
    "latched": QoSProfile(
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


def stop_worker(node: Node, attr: str, what: str, timeout: float = 30.0) -> None:
    """Stop the node's worker thread `node.<attr>` (a NewestFirst or Batcher: it finishes what
    it holds), wait for it and drop it; nothing when it is not there (a failed start)."""
    worker = getattr(node, attr, None)
    if worker is None:
        return
    if not worker.stop(timeout):
        node.get_logger().warning(f"{what} did not stop within {timeout:g} s")
    setattr(node, attr, None)


def forward_logs(logger_name: str, node: Node) -> None:
    """The Python log lines of `logger_name` (and below, from INFO) into the node's log."""
    node_logger = node.get_logger()

    class _ToNode(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if record.levelno >= logging.ERROR:
                node_logger.error(text)
            elif record.levelno >= logging.WARNING:
                node_logger.warning(text)
            else:
                node_logger.info(text)

    logger = logging.getLogger(logger_name)
    logger.setLevel(logging.INFO)
    logger.addHandler(_ToNode())
    logger.propagate = False


#: The result of a node's `finished` future that asks `run_nodes` to start the process again
#: in place (a new DDS participant), e.g. when discovery never matched (cloudseg.link_health).
RESTART_CONTEXT = "restart-context"


def restart_in_place() -> None:
    """Replace this process with a fresh run of its own command line (same pid, same log).

    Not a teardown: destroying the nodes of a participant whose TCP discovery stalled hangs in
    rmw (measured: `destroy_node` never returns), so nothing is destroyed. Every descriptor but
    stdin/stdout/stderr is closed first, so the kernel drops the stalled TCP connection and
    Fast DDS's shared-memory locks, and the next participant starts clean."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.closerange(3, 1 << 16)
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def run_nodes(
    factory: Callable[[], list[Node]], args: list[str] | None = None, name: str | None = None
) -> int:
    """Init rclpy, spin the nodes `factory` makes in one executor until Ctrl-C or SIGTERM,
    or a node's `finished` future (a player that ends); clean up; return an exit code.

    The signals go through `StopSignals`, not rclpy's handlers: a signal while the nodes are
    made stops the start (KeyboardInterrupt); once they spin, it is a flag the loop reads
    between turns, so the context stays valid until every node (and its worker threads) is
    destroyed, and no exception lands inside rclpy's callbacks. Either way: exit 0, no
    traceback, a second signal ignored. A `finished` result of RESTART_CONTEXT starts the
    process again (`restart_in_place`)."""
    # `kill -USR1 <pid>` prints every thread's stack to stderr (the node's log): a node that
    # hangs can be looked at without stopping it
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    stop = StopSignals(raising=True).install()
    nodes: list[Node] = []
    executor: SingleThreadedExecutor | None = None
    try:
        rclpy.init(
            args=args if args is not None else sys.argv,
            signal_handler_options=SignalHandlerOptions.NO,
        )
        executor = SingleThreadedExecutor()
        nodes = factory()
        for node in nodes:
            executor.add_node(node)
        finished = next((n.finished for n in nodes if getattr(n, "finished", None)), None)
        stop.raising = False  # from here a signal is read between turns of the executor
        while stop.requested is None:
            executor.spin_once(timeout_sec=SPIN_TURN_S)
            if finished is not None and finished.done():
                if finished.result() == RESTART_CONTEXT:
                    restart_in_place()
                return int(finished.result() or 0)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # a failed start: one line, no traceback
        if stop.requested is not None or not rclpy.ok():
            return 0  # stopped while starting: a clean stop
        print(f"{name or getattr(factory, '__name__', 'cloudseg')}: {exc}", file=sys.stderr)
        return 1
    finally:
        stop.raising = False  # a second Ctrl-C must not break cleanup
        for node in nodes:
            node.destroy_node()
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """`run_nodes` for a single node class."""
    return run_nodes(lambda: [factory()], args, name=getattr(factory, "__name__", None))
