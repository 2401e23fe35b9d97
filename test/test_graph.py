"""The graph is defined once: config files, launch files and CMake agree with cloudseg.graph."""

from __future__ import annotations

import importlib
import logging
import re
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
            # /**/<node>: the node in whatever namespace it runs (a bare name is the root's only)
            key = f"/**/{spec.name}"
            assert key in data, f"{config_file} has no section {key} for node {spec.name}"
            _check_section(spec, data[key]["ros__parameters"], config_file, composed)


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


def _executables_in_cmake() -> set[str]:
    text = (REPO / "CMakeLists.txt").read_text()
    match = re.search(r"set\(CLOUDSEG_EXECUTABLES ([^)]*)\)", text)
    assert match, "CMakeLists.txt lists no CLOUDSEG_EXECUTABLES"
    return set(match.group(1).split())


@pytest.fixture()
def launch_api():
    """The real `launch` and `launch_ros` packages (a ROS install, or the wheels that
    scripts/setup.sh installs from ../shared/wheels); skipped, saying so, without them."""
    logger_class = logging.getLoggerClass()
    pytest.importorskip(
        "launch_ros.actions",
        reason="the ROS 2 launch packages are not installed: scripts/setup.sh installs them "
        "from ../shared/wheels (or source a ROS 2 install)",
    )
    import launch

    # `import launch` makes every logger created afterwards a LaunchLogger, which does not
    # propagate: later tests' caplog would see nothing of loggers first made after this test
    yield launch
    logging.setLoggerClass(logger_class)


def _description(graph_name: str):
    """generate_launch_description() of launch/<graph>.launch.py, as ros2 launch loads it."""
    path = REPO / "launch" / f"{graph_name}.launch.py"
    module_globals: dict = {"__file__": str(path), "__name__": f"launch_{graph_name}"}
    exec(compile(path.read_text(), str(path), "exec"), module_globals)
    return module_globals["generate_launch_description"]()


def _launched_nodes(description, pushed: str | None = None, **arguments: str) -> list:
    """The launch_ros Nodes the description starts with these launch arguments (the others
    at their defaults), their names, namespaces and parameters expanded as at launch;
    `pushed`: included after a PushRosNamespace(pushed), as a fleet launch file would."""
    from launch import LaunchContext
    from launch.actions import OpaqueFunction
    from launch_ros.actions import Node, PushRosNamespace

    context = LaunchContext()
    if pushed:
        PushRosNamespace(pushed).visit(context)
    context.launch_configurations.update(arguments)
    for argument in description.get_launch_arguments():
        argument.visit(context)  # the defaults of those not given
    nodes = []
    for entity in description.entities:
        if isinstance(entity, OpaqueFunction):
            nodes += [e for e in entity.visit(context) or [] if isinstance(e, Node)]
        elif isinstance(entity, Node):
            nodes.append(entity)
    for node in nodes:
        node._perform_substitutions(context)
    return nodes


def _parameter_files(node) -> list[Path]:
    return [Path(path) for path, _is_file in node._Node__expanded_parameter_arguments]


def _given_values(node) -> dict:
    """The values a node gets from the launch file itself (not from its parameter files)."""
    values: dict = {}
    for path in _parameter_files(node):
        if path.name.startswith("launch_params_"):  # launch_ros writes a dict to a temp file
            for section in yaml.safe_load(path.read_text()).values():
                values.update(section["ros__parameters"])
            path.unlink()
    return values


@pytest.mark.parametrize("graph_name", sorted(graph.GRAPHS))
def test_launch_file_starts_the_graph_with_existing_executables_and_configs(graph_name, launch_api):
    description = _description(graph_name)
    assert isinstance(description, launch_api.LaunchDescription)
    installed = _executables_in_cmake()
    for namespace, expected_ns in (("", "/"), ("car1", "/car1"), ("/fleet/car2", "/fleet/car2")):
        nodes = _launched_nodes(description, namespace=namespace)
        specs = [graph.NODES[name] for name, _ in graph.GRAPHS[graph_name]]
        assert [n.node_executable for n in nodes] == [spec.executable for spec in specs]
        for node, spec in zip(nodes, specs, strict=True):
            assert node.node_package == "cloudseg"
            assert node.expanded_node_namespace == expected_ns
            if not spec.composes:  # a composed process keeps each node's own name
                assert node.node_name == f"{expected_ns.rstrip('/')}/{spec.name}"
            assert node.node_executable in installed, f"{node.node_executable} not installed"
            module = importlib.import_module(f"cloudseg.nodes.{node.node_executable}")
            assert callable(module.main)
            files = _parameter_files(node)
            config = dict(graph.GRAPHS[graph_name])[spec.name]
            assert files[0].name == config and files[0].is_file(), f"missing config {files[0]}"
            _given_values(node)


def test_launch_arguments_fit_each_graph(launch_api):
    for graph_name, entries in graph.GRAPHS.items():
        arguments = {a.name: a for a in _description(graph_name).get_launch_arguments()}
        processes = [name for name, _ in entries]
        expected = {"namespace", "params_file"}
        if "source" in processes or graph_name == "vehicle":
            expected |= {"input", "input_topic", "loop"}
        if any("compressor" in (p, *graph.NODES[p].composes) for p in processes):
            expected |= {"scale", "codec", "image_topic"}
        assert set(arguments) == expected, graph_name
        for argument in arguments.values():
            assert argument.description and argument.description != "no description given"
        assert arguments["namespace"].default_value[0].text == ""  # the root by default


def test_launch_arguments_reach_the_nodes(launch_api, tmp_path):
    description = _description("vehicle")
    assert [n.node_executable for n in _launched_nodes(description)] == ["vehicle_node"]
    extra = tmp_path / "mine.yaml"
    extra.write_text("/**/compressor:\n  ros__parameters:\n    crf: 30\n")
    source, vehicle = _launched_nodes(
        description,
        namespace="car7",
        input="clip.mp4",
        loop="true",
        scale="2",
        codec="jpeg",
        image_topic="/camera/color/image_raw",
        params_file=str(extra),
    )  # input:= adds a source that plays it as the camera
    assert (source.node_name, source.node_executable) == ("/car7/source", "source_node")
    assert _given_values(source) == {
        "input": "clip.mp4",
        "loop": True,
        # as `cloudseg run`: the first frame waits for the graph and its image subscriber
        "wait_for_graph": "vehicle",
        "wait_for_subscribers": 1,
        "wait_timeout": 300.0,
    }
    assert _given_values(vehicle) == {"scale": 2, "codec": "jpeg"}
    assert _parameter_files(vehicle)[1] == extra  # after vehicle.yaml
    for node in (source, vehicle):
        assert node.expanded_remapping_rules == [(graph.IMAGE_TOPIC, "/camera/color/image_raw")]
    (vehicle,) = _launched_nodes(description, pushed="fleet", namespace="car8")
    assert vehicle.expanded_node_namespace == "/fleet/car8"  # a relative namespace nests
    for bad, reason in (
        ({"scale": "5"}, "scale=5"),
        ({"codec": "vp9"}, "codec='vp9'"),
        ({"namespace": "car-1"}, "namespace"),
        ({"params_file": str(tmp_path / "none.yaml")}, "params_file"),
    ):
        with pytest.raises((ValueError, FileNotFoundError), match=re.escape(reason)):
            _launched_nodes(description, **bad)


def test_pipeline_launch_source_waits_for_the_graph_and_reads_the_bag_topic(launch_api, tmp_path):
    """The pipeline's source waits for the graph's other processes (their `ready` endpoints, as
    `cloudseg run`), reads `input_topic:=` from the bag, and a params_file still overrides the
    launch file's waiting defaults; every node's failure stops the launch (an exit handler)."""
    from launch.actions import OpaqueFunction, RegisterEventHandler
    from launch.event_handlers import OnProcessExit

    description = _description("pipeline")
    mine = tmp_path / "mine.yaml"
    mine.write_text("/**/source:\n  ros__parameters:\n    wait_timeout: 20.0\n")
    nodes = _launched_nodes(
        description, input="robot.bag", input_topic="/front/image_raw", params_file=str(mine)
    )
    source = nodes[0]
    assert source.node_executable == "source_node"
    files = _parameter_files(source)
    assert files[0].name == "source.yaml" and files[2] == mine  # launch defaults, then mine
    assert _given_values(source) == {
        "input": "robot.bag",
        "topic_in_bag": "/front/image_raw",
        "loop": False,
        "wait_for_graph": "pipeline",
        "wait_for_subscribers": 1,  # the vehicle's frame_selector
        "wait_timeout": 300.0,
    }
    (make,) = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    from launch import LaunchContext

    context = LaunchContext()
    for argument in description.get_launch_arguments():
        argument.visit(context)
    handlers = [e for e in make.visit(context) if isinstance(e, RegisterEventHandler)]
    assert len(handlers) == len(graph.GRAPHS["pipeline"])
    assert all(isinstance(h.event_handler, OnProcessExit) for h in handlers)


def test_topic_names_are_relative_and_resolve_in_a_namespace():
    for topic in graph.TOPICS:
        assert not topic.startswith("/"), topic
    assert graph.FRAMES_TOPIC == "cloudseg/frames"
    assert graph.resolve(graph.FRAMES_TOPIC) == "/cloudseg/frames"
    assert graph.resolve(graph.FRAMES_TOPIC, "car1") == "/car1/cloudseg/frames"
    assert graph.resolve(graph.FRAMES_TOPIC, "/fleet/car2/") == "/fleet/car2/cloudseg/frames"
    assert graph.resolve("/tf", "car1") == "/tf"
    assert graph.namespace("") == graph.namespace(None) == "/"
    for bad in ("car-1", "1car", "car 1"):
        with pytest.raises(ValueError, match="namespace"):
            graph.namespace(bad)
    # image_transport: <camera>/image_raw/compressed would have to carry the camera's image
    assert f"{graph.LOWRES_TOPIC}/compressed" == graph.COMPRESSED_TOPIC
    assert not graph.COMPRESSED_TOPIC.startswith(graph.IMAGE_TOPIC)
    assert graph.BAG_IMAGE_TOPIC == "/camera/image_raw"  # bags hold fully qualified names


def test_launcher_command_runs_the_node_in_a_namespace():
    from cloudseg.launcher import NodeProcesses, node_command

    assert "__ns:=/car1" not in " ".join(node_command("compressor", None))
    cmd = node_command("vehicle", None, None, "car1")
    assert cmd[-2:] == ["-r", "__ns:=/car1"]
    assert NodeProcesses(ns="/car2/").ns == "/car2"
    with pytest.raises(ValueError):
        node_command("vehicle", None, None, "car-1")


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


def test_every_topic_constant_is_a_graph_topic():
    """Each topic name is written once (cloudseg.graph.topics) and TOPICS holds them all."""
    from cloudseg.graph import topics

    not_published = {"BAG_IMAGE_TOPIC", "LOWRES_TOPIC"}  # a bag's name; an image_transport base
    names = {
        value
        for name, value in vars(topics).items()
        if name.endswith("_TOPIC") and name not in not_published
    }
    assert names == set(graph.TOPICS)


def test_one_codec_list():
    from cloudseg.guard import FrameLimits
    from cloudseg.media.codecs import CODECS

    assert CODECS is graph.CODEC_CHOICES
    assert FrameLimits().codecs is graph.CODEC_CHOICES
    assert graph.COMPRESSOR.param("codec").choices is graph.CODEC_CHOICES
