"""Start graph nodes as separate processes (the `ros2 launch` stand-in of the `cloudseg` command).

Uses the same node list and config files as the launch files (`cloudseg.graph.GRAPHS`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cloudseg.graph import GRAPHS, NODES, config_dir

LOCAL_DDS_PROFILE = "fastdds_local.xml"


def local_env(one_host: bool = True) -> dict[str, str]:
    """Environment for node processes: the shared weights when $CLOUDSEG_WEIGHTS is not set;
    for a graph on one host also DDS on this host only and the large-message Fast DDS profile.
    Settings already in the environment win."""
    env = {}
    if one_host:
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(config_dir() / LOCAL_DDS_PROFILE)
    from cloudseg.models.weights import shared_weights_dir  # lazy: it imports torch

    weights = shared_weights_dir()
    if weights:
        env["CLOUDSEG_WEIGHTS"] = str(weights)
    return {**env, **{k: os.environ[k] for k in env if os.environ.get(k)}}


def _param_value(value: Any) -> str:
    """A value as `-p name:=value` expects it (YAML): JSON is valid YAML for these types."""
    return json.dumps(value)


def node_command(
    node: str, config_file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> list[str]:
    """The command line that runs one node with its parameter file and overrides."""
    spec = NODES[node]
    cmd = [sys.executable, "-m", spec.module, "--ros-args"]
    if not spec.composes:  # a composed process keeps each node's own name
        cmd += ["-r", f"__node:={spec.name}"]
    if config_file is not None:
        cmd += ["--params-file", str(config_file)]
    for name, value in (overrides or {}).items():
        spec.param(name).check(value)
        cmd += ["-p", f"{name}:={_param_value(value)}"]
    return cmd


class NodeProcesses:
    """A set of node processes, stopped together (SIGINT, then SIGKILL after a grace period)."""

    def __init__(self, env: dict[str, str] | None = None, log_dir: Path | None = None) -> None:
        self.env = {**os.environ, **(env or {})}
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(
        self,
        node: str,
        config_file: str | Path | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> subprocess.Popen:
        cmd = node_command(node, config_file, overrides)
        if self.log_dir is None:
            proc = subprocess.Popen(cmd, env=self.env)
        else:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_dir / f"{node}.log", "w") as out:  # the child keeps its own fd
                proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs[node] = proc
        return proc

    def start_graph(
        self,
        graph: str,
        overrides: dict[str, dict[str, Any]] | None = None,
        only: tuple[str, ...] | None = None,
    ) -> None:
        for node, config in GRAPHS[graph]:
            if only is None or node in only:
                self.start(node, config_dir() / config, (overrides or {}).get(node))

    def wait(self, node: str, timeout: float | None = None) -> int | None:
        try:
            return self.procs[node].wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop_all(self, grace: float = 5.0) -> dict[str, int]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes

    def __enter__(self) -> NodeProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def run_graph(graph: str, overrides: dict[str, dict[str, Any]] | None = None) -> int:
    """Run a whole graph in the foreground until Ctrl-C (or until every node has ended)."""
    with NodeProcesses(env=local_env(one_host=graph == "pipeline")) as procs:
        procs.start_graph(graph, overrides)
        try:
            while any(p.poll() is None for p in procs.procs.values()):
                time.sleep(0.2)
        except KeyboardInterrupt:
            print(f"stopping the {graph} graph", file=sys.stderr)
    return 0
