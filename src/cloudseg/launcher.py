"""Start graph nodes as separate processes (the `ros2 launch` stand-in of the `cloudseg` command).

Uses the same node list and config files as the launch files (`cloudseg.graph.GRAPHS`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cloudseg.fastdds import PEER_ADDRESS_ENV, PEER_PORT_ENV, one_host_env, wait_for_tcp_peer
from cloudseg.graph import (
    FRAMES_TOPIC,
    GRAPHS,
    IMAGE_TOPIC,
    NODES,
    Endpoint,
    config_dir,
    namespace,
    ready_endpoints,
)
from cloudseg.processes import ManagedProcess, stop_all
from cloudseg.stop_signals import INTERRUPTED_EXIT, StopSignals


def local_env(one_host: bool = True) -> dict[str, str]:
    """Environment for node processes: the shared weights when $CLOUDSEG_WEIGHTS is not set;
    for a graph on one host also DDS on this host only and the large-message Fast DDS profile.
    Settings already in the environment win."""
    env = one_host_env() if one_host else {}
    from cloudseg.models.weights import shared_weights_dir  # lazy: it imports torch

    weights = shared_weights_dir()
    if weights:
        env["CLOUDSEG_WEIGHTS"] = str(weights)
    return {**env, **{k: os.environ[k] for k in env if os.environ.get(k)}}


_OVERRIDE = re.compile(r"^(?P<node>[A-Za-z_]\w*)[.:](?P<name>[A-Za-z_]\w*):?=(?P<value>.*)$", re.S)


def graph_processes(graph: str) -> dict[str, str]:
    """Every node name reachable in `graph` -> the process (graph entry) that runs it: the
    graph's own entries and the nodes composed into them."""
    owners = {}
    for process, _config in GRAPHS[graph]:
        owners[process] = process
        for part in NODES[process].composes:
            owners.setdefault(part, process)
    return owners


def parse_param_overrides(graph: str, items: list[str]) -> dict[str, dict[str, Any]]:
    """`NODE.NAME:=VALUE` (or `NODE:NAME=VALUE`) items as {process: {name: value}} for the
    processes of `graph`, each value typed and checked against the node's parameter in
    cloudseg.graph; ValueError with a clear reason otherwise. A node composed into a process
    (e.g. compressor in vehicle) is set through that process."""
    owners = graph_processes(graph)
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        m = _OVERRIDE.match(item)
        if not m:
            raise ValueError(f"-p {item!r}: expected NODE.NAME:=VALUE, e.g. compressor.scale:=2")
        node, name, text = m["node"], m["name"], m["value"]
        if node not in owners:
            raise ValueError(
                f"-p {item}: graph {graph} has no node {node!r} (its nodes: "
                f"{', '.join(sorted(owners))})"
            )
        spec = NODES[node]
        try:
            param = spec.param(name)
        except KeyError:
            names = ", ".join(p.name for p in spec.params)
            raise ValueError(
                f"-p {item}: node {node} has no parameter {name!r} (its parameters: {names})"
            ) from None
        try:
            value = param.check(param.parse(text))
        except ValueError as exc:
            raise ValueError(f"-p {item}: {exc}") from None
        out.setdefault(owners[node], {})[name] = value
    return out


def parse_node_params(
    node: str, items: Sequence[str], flag: str, error: type[Exception] = ValueError
) -> dict[str, Any]:
    """`NAME=VALUE` items (VALUE as JSON where it parses, else a string) as {name: value} for
    `node`'s parameters, each typed and checked; `error` naming `flag` otherwise (the
    benchmarks' `--cloud-param` and `--controller-param`)."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise error(f"{flag} {item!r}: expected NAME=VALUE")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        try:
            spec = NODES[node].param(name)
            if isinstance(spec.default, float) and isinstance(value, int):
                value = float(value)
            out[name] = spec.check(value)
        except (KeyError, ValueError, TypeError) as exc:
            raise error(f"{flag} {item}: {str(exc).strip(chr(34))}") from None
    return out


_ROS_LOG = re.compile(r"^\[(?P<level>[A-Z]+)\] \[[\d.]+\] \[(?P<node>[^\]]*)\]: (?P<text>.*)$")


def log_reason(path: Path, max_chars: int = 600) -> str:
    """The last meaningful error line of a node's log: its one-line failure (`run_nodes`), a
    ROS ERROR/FATAL line (as `node: text`) or an exception's last line; skips tracebacks,
    INFO/DEBUG/WARN lines and blank lines. Empty when the log holds nothing of the kind."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    fallback = ""
    for line in reversed(lines):
        text = line.rstrip()
        if not text or text[0].isspace() or text.startswith(("Traceback", "During handling")):
            continue
        m = _ROS_LOG.match(text)
        if m:
            if m["level"] in ("ERROR", "FATAL"):
                return f"{m['node']}: {m['text']}"[:max_chars]
            fallback = fallback or f"{m['node']}: {m['text']}"
            continue
        if text.startswith(("^", "~")):  # traceback carets
            continue
        return text[:max_chars]
    return fallback[:max_chars]


def _param_value(value: Any) -> str:
    """A value as `-p name:=value` expects it (YAML): JSON is valid YAML for these types."""
    return json.dumps(value)


def node_command(
    node: str,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    ns: str | None = None,
) -> list[str]:
    """The command line that runs one node with its parameter file and overrides, in
    namespace `ns` (`car1` or `/car1`; None or `/`: the root namespace, no remap)."""
    spec = NODES[node]
    cmd = [sys.executable, "-m", spec.module, "--ros-args"]
    if not spec.composes:  # a composed process keeps each node's own name
        cmd += ["-r", f"__node:={spec.name}"]
    ns = namespace(ns)
    if ns != "/":  # every node of the process, composed ones too
        cmd += ["-r", f"__ns:={ns}"]
    if config_file is not None:
        cmd += ["--params-file", str(config_file)]
    for name, value in (overrides or {}).items():
        value = spec.param(name).check(value)  # e.g. 6 -> 6.0 for a float parameter
        cmd += ["-p", f"{name}:={_param_value(value)}"]
    return cmd


def start_node(
    node: str,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    ns: str | None = None,
    extra_args: Sequence[str] = (),
    own_group: bool = False,
) -> ManagedProcess:
    """Start one node process (`node_command` plus `extra_args`, e.g. remappings) as `name`
    (default the node's); its output goes to `log_dir/NAME.log` (None: to ours). `env`: the
    whole environment (None: ours). `own_group`: in a session of its own (a terminal's Ctrl-C
    reaches only us, who stop it), ended with us even when we are killed."""
    name = name or node
    cmd = node_command(node, config_file, overrides, ns) + list(extra_args)
    log = None if log_dir is None else log_dir / f"{name}.log"
    return ManagedProcess.start(
        cmd, name=name, env=env, log=log, own_group=own_group, die_with_parent=own_group
    )


class NodeProcesses:
    """A set of node processes, stopped together (SIGTERM, then SIGKILL after a grace period),
    all in namespace `ns` (default the root); each one's output goes to `log_dir/NAME.log`
    (None: to ours); with `own_group` each runs in a session of its own, so that a terminal's
    Ctrl-C reaches only us and each node gets exactly one signal, from us. SIGTERM, not
    SIGINT: a node stops on either once it runs (`run_nodes`), and one still importing its
    modules ends at once instead of printing a KeyboardInterrupt traceback."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        ns: str | None = None,
        own_group: bool = False,
    ) -> None:
        self.env = {**os.environ, **(env or {})}
        self.log_dir = log_dir
        self.ns = namespace(ns)
        self.own_group = own_group
        self.procs: dict[str, ManagedProcess] = {}

    def start(
        self,
        node: str,
        config_file: str | Path | None = None,
        overrides: dict[str, Any] | None = None,
        extra_args: Sequence[str] = (),
        name: str | None = None,
        ns: str | None = None,
    ) -> ManagedProcess:
        """Start `node` (as `name`, default the node's: several copies need names) with its
        parameter file, overrides and `extra_args` (e.g. remappings), in namespace `ns`
        (default the set's)."""
        proc = start_node(
            node,
            config_file,
            overrides,
            name=name,
            env=self.env,
            log_dir=self.log_dir,
            ns=self.ns if ns is None else ns,
            extra_args=extra_args,
            own_group=self.own_group,
        )
        self.procs[proc.name] = proc
        return proc

    def start_graph(
        self,
        graph: str,
        overrides: dict[str, dict[str, Any]] | None = None,
        only: tuple[str, ...] | None = None,
        exclude: tuple[str, ...] = (),
    ) -> list[str]:
        """Start the graph's processes (or `only` those, less `exclude`); return their names."""
        started = []
        for node, config in GRAPHS[graph]:
            if (only is None or node in only) and node not in exclude:
                self.start(node, config_dir() / config, (overrides or {}).get(node))
                started.append(node)
        return started

    def exited(self, names: list[str] | None = None) -> dict[str, int]:
        """Processes (of `names`, default all) that have ended, with their exit codes."""
        chosen = self.procs if names is None else {n: self.procs[n] for n in names}
        return {n: p.returncode for n, p in chosen.items() if p.poll() is not None}

    def reason(self, node: str) -> str:
        """Why `node` ended, from its log (when logs go to files): one line, or ''."""
        return log_reason(self.log_dir / f"{node}.log") if self.log_dir else ""

    def failure(self, node: str, code: int) -> str:
        """`node exited (code N): <its reason>` for error messages."""
        reason = self.reason(node)
        return f"{node} exited (code {code})" + (f": {reason}" if reason else "")

    def wait(self, node: str, timeout: float | None = None) -> int | None:
        return self.procs[node].wait_exit(timeout)

    def stop_all(self, grace: float = 5.0) -> dict[str, int]:
        return stop_all(self.procs.values(), grace, signal.SIGTERM)

    def __enter__(self) -> NodeProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def run_graph(
    graph: str,
    overrides: dict[str, dict[str, Any]] | None = None,
    dds: dict[str, str] | None = None,
    ns: str | None = None,
    record: str | Path | None = None,
) -> int:
    """Run a whole graph in the foreground until Ctrl-C (or until every node has ended).

    A graph with a source (pipeline) starts its other nodes first and starts the source once
    they are up (the endpoints `cloudseg.graph` lists as `ready`), so no frame goes out before
    the cloud listens. A node that fails stops the graph (exit 1); the source ending (a finite
    input) does not. `dds`: environment from `dds_env` for vehicle and cloud on different hosts
    (it wins over the one-host settings). `ns`: the namespace of every node (`car1`: the
    vehicle's topics are /car1/camera/image_raw, /car1/cloudseg/frames, ...). `record`: a
    recorder process writes this MCAP file (`start_recorder`), up before the source starts."""
    ns = namespace(ns)
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    has_source = any(node == "source" for node, _ in GRAPHS[graph])
    # Ctrl-C reaches only this process (the nodes run in sessions of their own): a flag the
    # loops below read, then one SIGTERM to each node and one line
    with StopSignals() as stop:
        try:
            env = local_env(one_host=graph == "pipeline" and not dds)  # imports torch: seconds
            if dds:
                os.environ.pop("ROS_DISCOVERY_SERVER", None)  # the profile's, not this one
            stop.check()
            if dds and PEER_ADDRESS_ENV in dds:
                peer = dds[PEER_ADDRESS_ENV], int(dds[PEER_PORT_ENV])
                print(f"waiting for the cloud to listen at {peer[0]}:{peer[1]}", file=sys.stderr)
                while not wait_for_tcp_peer(*peer, timeout=1.0):
                    stop.check()
            with NodeProcesses(env={**env, **(dds or {})}, ns=ns, own_group=True) as procs:
                started = procs.start_graph(graph, overrides, exclude=("source",))
                if record:
                    start_recorder(procs, record)
                if has_source:
                    _start_source_when_ready(procs, graph, started, overrides, env, stop)
                return _supervise(procs, stop)
        except NodeFailed as exc:
            print(f"cloudseg run: {exc}; stopped the {graph} graph", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"cloudseg run: interrupted; stopped the {graph} graph", file=sys.stderr)
            return INTERRUPTED_EXIT


#: the recorder process's name (and its node's: cloudseg.nodes.recorder_node)
RECORDER = "recorder"


def start_recorder(procs: NodeProcesses, output: str | Path) -> None:
    """`--record`: the recorder (cloudseg.nodes.recorder_node, the default topics) as one
    more process of `procs`, in their namespace; stopping them (SIGTERM) closes its file."""
    cmd = [sys.executable, "-m", "cloudseg.nodes.recorder_node", str(output)]
    cmd += ["--namespace", procs.ns]
    log = None if procs.log_dir is None else procs.log_dir / f"{RECORDER}.log"
    procs.procs[RECORDER] = ManagedProcess.start(
        cmd, name=RECORDER, env=procs.env, log=log, own_group=procs.own_group
    )


def _start_source_when_ready(
    procs: NodeProcesses,
    graph: str,
    started: list[str],
    overrides: dict[str, dict[str, Any]],
    env: dict[str, str],
    stop: StopSignals,
) -> None:
    from cloudseg.nodes.graph_watch import GraphWatcher  # rclpy, only here

    endpoints = ready_endpoints(started)
    if RECORDER in procs.procs:  # the recording starts with the first frame
        started = [*started, RECORDER]
        endpoints.append(Endpoint(RECORDER, "sub", FRAMES_TOPIC))
    os.environ.update(env)  # the watcher looks at the graph as the nodes do
    print(f"starting {', '.join(started)}; the source starts once they are up", file=sys.stderr)
    t0 = time.monotonic()
    with GraphWatcher() as watcher:
        wait_until_ready(
            procs,
            started,
            lambda: watcher.missing(endpoints, procs.ns),
            lambda seconds: (time.sleep(seconds), stop.check()),
            progress=lambda line: print(line, file=sys.stderr),
            ns=procs.ns,
        )
    # the source holds its first frame until the graph's image subscribers matched it too
    source = overrides.setdefault("source", {})
    takers = sum(e.kind == "sub" and e.topic == IMAGE_TOPIC for e in endpoints)
    source.setdefault("wait_for_subscribers", takers)
    print(f"graph up after {time.monotonic() - t0:.1f} s; starting the source", file=sys.stderr)
    config = dict(GRAPHS[graph])["source"]
    procs.start("source", config_dir() / config, source)


def _supervise(procs: NodeProcesses, stop: StopSignals) -> int:
    """Wait while nodes run: a node that fails raises NodeFailed; the source ending is said;
    a stop signal raises KeyboardInterrupt."""
    said: set[str] = set()
    while True:
        stop.check()
        for name, code in procs.exited().items():
            if code:
                raise NodeFailed(procs.failure(name, code))
            if name not in said:
                said.add(name)
                rest = "" if name != "source" else "; the graph runs on until Ctrl-C"
                print(f"{name} ended{rest}", file=sys.stderr)
        if len(said) == len(procs.procs):
            return 0
        time.sleep(0.2)


class NodeFailed(RuntimeError):
    """A node process ended while the graph was starting or running."""


def wait_until_ready(
    procs: NodeProcesses,
    names: list[str],
    missing: Callable[[], list[Endpoint]],
    spin: Callable[[float], object],
    timeout: float | None = None,
    progress: Callable[[str], object] | None = None,
    progress_every: float = 10.0,
    ns: str = "/",
) -> None:
    """Wait until none of the endpoints is `missing()` (the processes `names` are up), calling
    `spin(seconds)` meanwhile (an executor's spin_once, or a sleep). NodeFailed as soon as one
    of them ends (with its log's reason); TimeoutError after `timeout` seconds, naming what is
    still missing (their topics resolved in namespace `ns`). `progress` gets a line every
    `progress_every` seconds while waiting."""
    start = time.monotonic()
    last_note = start
    while True:
        gone = procs.exited(names)
        if gone:
            name, code = next(iter(gone.items()))
            raise NodeFailed(procs.failure(name, code))
        left = missing()
        if not left:
            return
        now = time.monotonic()
        waiting = ", ".join(e.describe(ns) for e in left)
        if timeout is not None and now - start > timeout:
            raise TimeoutError(f"the graph did not come up in {timeout:.0f} s; missing: {waiting}")
        if progress is not None and now - last_note >= progress_every:
            progress(f"waiting for the graph ({now - start:.0f} s): {waiting}")
            last_note = now
        spin(0.1)
