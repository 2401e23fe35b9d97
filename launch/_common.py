"""Shared by the launch files: builds launch_ros Node actions from cloudseg.graph."""

from __future__ import annotations

from pathlib import Path

from launch_ros.actions import Node

from cloudseg.graph import GRAPHS, NODES, PACKAGE, config_dir


def graph_nodes(graph: str, overrides: dict[str, dict] | None = None) -> list[Node]:
    """One launch_ros Node per node of `graph`, with its config file from config/."""
    configs = config_dir()
    actions = []
    for node_name, config_file in GRAPHS[graph]:
        spec = NODES[node_name]
        params: list = [str(Path(configs) / config_file)]
        if overrides and node_name in overrides:
            params.append(overrides[node_name])
        naming = {} if spec.composes else {"name": spec.name}  # composed: nodes keep names
        actions.append(
            Node(
                package=PACKAGE,
                executable=spec.executable,
                parameters=params,
                output="screen",
                **naming,
            )
        )
    return actions
