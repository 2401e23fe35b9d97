"""The graph is defined once: config files, launch files and CMake agree with cloudseg.graph."""

from __future__ import annotations

import importlib
import re
import sys
import types
from pathlib import Path

import pytest
import yaml

from cloudseg import graph

REPO = Path(__file__).resolve().parents[1]


def test_config_files_hold_only_declared_parameters_within_range():
    for node_name, config_file in {c for g in graph.GRAPHS.values() for c in g}:
        data = yaml.safe_load((REPO / "config" / config_file).read_text())
        composed = bool(graph.NODES[node_name].composes)
        for spec in _nodes_in_process(graph.NODES[node_name]):
            assert spec.name in data, f"{config_file} has no section for node {spec.name}"
            _check_section(spec, data[spec.name]["ros__parameters"], config_file, composed)


def _nodes_in_process(spec: graph.NodeSpec) -> list[graph.NodeSpec]:
    return [graph.NODES[n] for n in spec.composes] if spec.composes else [spec]


def _check_section(
    spec: graph.NodeSpec, params: dict, config_file: str, composed: bool = False
) -> None:
    assert set(params) == {p.name for p in spec.declared(composed)}, config_file
    for name, value in params.items():
        p = spec.param(name)
        p.check(value)
        assert type(value) is type(p.default), f"{config_file}: {name} has the wrong type"


def test_param_check_refuses_out_of_range_and_unknown_choices():
    with pytest.raises(ValueError, match="scale"):
        graph.COMPRESSOR.param("scale").check(0)
    with pytest.raises(ValueError, match="one of"):
        graph.COMPRESSOR.param("codec").check("vp9")


class _RecordedNode:
    """Stand-in for launch_ros.actions.Node: records what a launch file asks for."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs


class _RecordedLaunchDescription(list):
    """Stand-in for launch.LaunchDescription."""


@pytest.fixture()
def launch_stand_in(monkeypatch):
    """Install stand-ins for `launch` and `launch_ros` (not available as pip wheels)."""
    launch = types.ModuleType("launch")
    launch.LaunchDescription = _RecordedLaunchDescription
    launch_ros = types.ModuleType("launch_ros")
    actions = types.ModuleType("launch_ros.actions")
    actions.Node = _RecordedNode
    launch_ros.actions = actions
    for name, module in {
        "launch": launch,
        "launch_ros": launch_ros,
        "launch_ros.actions": actions,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "_common", raising=False)


def _executables_in_cmake() -> set[str]:
    text = (REPO / "CMakeLists.txt").read_text()
    match = re.search(r"set\(CLOUDSEG_EXECUTABLES ([^)]*)\)", text)
    assert match, "CMakeLists.txt lists no CLOUDSEG_EXECUTABLES"
    return set(match.group(1).split())


@pytest.mark.parametrize("graph_name", sorted(graph.GRAPHS))
def test_launch_file_starts_the_graph_with_existing_executables_and_configs(
    graph_name, launch_stand_in
):
    path = REPO / "launch" / f"{graph_name}.launch.py"
    module_globals: dict = {"__file__": str(path), "__name__": f"launch_{graph_name}"}
    exec(compile(path.read_text(), str(path), "exec"), module_globals)
    description = module_globals["generate_launch_description"]()
    nodes = [a for a in description if isinstance(a, _RecordedNode)]
    assert [n.kwargs.get("name") or n.kwargs["executable"] for n in nodes] == [
        spec.executable if spec.composes else spec.name
        for spec in (graph.NODES[name] for name, _ in graph.GRAPHS[graph_name])
    ]
    installed = _executables_in_cmake()
    for node in nodes:
        assert node.kwargs["package"] == "cloudseg"
        executable = node.kwargs["executable"]
        assert executable in installed, f"{executable} is not installed by CMakeLists.txt"
        module = importlib.import_module(f"cloudseg.nodes.{executable}")
        assert callable(module.main)
        for param in node.kwargs["parameters"]:
            if isinstance(param, str):
                assert Path(param).is_file(), f"missing config file {param}"


def test_every_graph_executable_is_installed():
    assert {spec.executable for spec in graph.NODES.values()} <= _executables_in_cmake()


def test_launcher_command_uses_the_node_module_and_checks_overrides():
    from cloudseg.launcher import node_command

    cmd = node_command("compressor", "vehicle.yaml", {"scale": 2, "codec": "jpeg"})
    assert cmd[1:3] == ["-m", "cloudseg.nodes.compressor_node"]
    assert cmd[-2:] == ["-p", 'codec:="jpeg"']
    with pytest.raises(ValueError):
        node_command("compressor", None, {"scale": 0})


def test_param_check_refuses_nan_wrong_types_and_bad_list_items():
    import math

    key = graph.FRAME_SELECTOR.param("key_threshold")
    assert key.check(1) == 1.0 and isinstance(key.check(1), float)  # an int for a float
    for bad in (math.nan, math.inf, "0.5", True):
        with pytest.raises(ValueError):
            key.check(bad)
    with pytest.raises(ValueError, match="must be a int"):
        graph.COMPRESSOR.param("crf").check(25.0)
    scales = graph.SR.param("scales")
    assert scales.check([4, 2]) == [4, 2]
    for bad in ([], [4, 5], [0], 4):
        with pytest.raises(ValueError):
            scales.check(bad)
    assert graph.COMPRESSOR.param("scale").choices == graph.SCALES


def test_live_parameters_are_parameters_and_composites_keep_them():
    for spec in graph.NODES.values():
        assert spec.live <= {p.name for p in spec.params}, spec.name
        if spec.composes:
            parts = [graph.NODES[n] for n in spec.composes]
            assert spec.live == frozenset().union(*(p.live for p in parts))
    assert graph.COMPRESSOR.is_live("crf") and not graph.SR.is_live("max_width")
