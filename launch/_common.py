"""Shared by the launch files: launch arguments and launch_ros Nodes, built from cloudseg.graph.

Every launch file is `graph_launch_description(<graph>)`: the `DeclareLaunchArgument`s that make
sense for the graph, then the graph's nodes (cloudseg.graph.GRAPHS), made once the arguments
are known (an `OpaqueFunction`: an argument left empty keeps the config file's value).

    ros2 launch cloudseg vehicle.launch.py namespace:=car1 input:=<sequence folder>
    ros2 launch cloudseg cloud.launch.py params_file:=my_cloud.yaml
    ros2 launch cloudseg pipeline.launch.py scale:=2 codec:=jpeg
    ros2 launch -s cloudseg vehicle.launch.py      # the arguments, with descriptions

The source (`input:=`) holds its first frame until the graph's other processes are up (their
`ready` endpoints in cloudseg.graph, as `cloudseg run` waits for them: the source's
`wait_for_graph`), and a node that fails (a bad `input:=`, missing weights) stops the launch
with an error and a non-zero exit, as `cloudseg run` does.

Topic names are relative (cloudseg.graph), so `namespace:=car1` puts every node and topic
under /car1 (/car1/camera/image_raw, /car1/cloudseg/frames, ...); inside a `GroupAction` with
`PushRosNamespace('fleet')` a relative namespace nests (/fleet/car1).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from launch import LaunchContext, LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.event_handlers import OnProcessExit
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from cloudseg.graph import (
    CODEC_CHOICES,
    COMPRESSOR,
    GRAPHS,
    IMAGE_TOPIC,
    NODES,
    PACKAGE,
    SCALES,
    SOURCE,
    config_dir,
    namespace,
    ready_endpoints,
)

#: the config file a source added to the vehicle graph (`input:=...`) reads
SOURCE_CONFIG = "source.yaml"
#: how long the source waits for the graph before it starts anyway (the cloud loads its models
#: first: tens of seconds on a CPU); a params_file may set another `wait_timeout`
SOURCE_WAIT_S = 300.0


def _processes(graph: str) -> list[str]:
    return [name for name, _ in GRAPHS[graph]]


def _has_compressor(graph: str) -> bool:
    return any(
        p == COMPRESSOR.name or COMPRESSOR.name in NODES[p].composes for p in _processes(graph)
    )


def _config_value(node: str, name: str) -> object:
    """A parameter's value in the config file of the process running `node` (vehicle.yaml's
    compressor scale, ...), else its default in cloudseg.graph."""
    import yaml

    for graph in GRAPHS.values():
        for process, config in graph:
            if node in (process, *NODES[process].composes):
                data = yaml.safe_load((config_dir() / config).read_text()) or {}
                section = data.get(f"/**/{node}", {}).get("ros__parameters", {})
                if name in section:
                    return section[name]
    return NODES[node].param(name).default


def graph_arguments(graph: str) -> list[DeclareLaunchArgument]:
    """The launch arguments of `graph`'s launch file, with descriptions and defaults."""
    configs = ", ".join(dict.fromkeys(f"config/{c}" for _, c in GRAPHS[graph]))
    args = [
        DeclareLaunchArgument(
            "namespace",
            default_value="",
            description="ROS namespace of every node, e.g. car1: topics /car1/camera/image_raw, "
            "/car1/cloudseg/frames, ... (relative: nested under an enclosing PushRosNamespace); "
            "empty: the root namespace",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value="",
            description=f"a parameter file applied after {configs} (sections "
            "/**/<node>: ros__parameters: ...): its values win; empty: none",
        ),
    ]
    if graph == "vehicle" or SOURCE.name in _processes(graph):
        own = SOURCE.name in _processes(graph)
        args += [
            DeclareLaunchArgument(
                "input",
                default_value="",
                description="what the source node plays as the camera: a rosbag2, a Cityscapes "
                "sequence folder or a video; empty: "
                + ("a generated test clip" if own else "no source, a camera publishes images"),
            ),
            DeclareLaunchArgument(
                "input_topic",
                default_value="",
                description="the image topic the source reads from a rosbag2 input (as "
                "`cloudseg run --topic`); empty: the config file's "
                f"({_config_value(SOURCE.name, 'topic_in_bag')})",
            ),
            DeclareLaunchArgument(
                "loop",
                default_value="false",
                description="the source starts again at the end of its input (true or false)",
                choices=["true", "false"],
            ),
        ]
    if _has_compressor(graph):
        shown_scales = ", ".join(map(str, SCALES))
        args += [
            DeclareLaunchArgument(
                "scale",
                default_value="",
                description=f"downsampling factor of the compressor, one of {shown_scales}; "
                f"empty: the config file's ({_config_value(COMPRESSOR.name, 'scale')})",
            ),
            DeclareLaunchArgument(
                "codec",
                default_value="",
                description=f"payload codec of the compressor, one of {', '.join(CODEC_CHOICES)}; "
                f"empty: the config file's ({_config_value(COMPRESSOR.name, 'codec')})",
            ),
            DeclareLaunchArgument(
                "image_topic",
                default_value=IMAGE_TOPIC,
                description="the camera image topic the vehicle reads (a remapping of "
                f"{IMAGE_TOPIC}, e.g. /camera/color/image_raw; relative names are in the "
                "namespace)",
            ),
        ]
    return args


def graph_launch_description(graph: str) -> LaunchDescription:
    """The launch description of `graph`: its arguments, then its nodes."""
    actions: list = graph_arguments(graph)
    if graph == "pipeline":  # vehicle and cloud on this host: as `cloudseg run pipeline`
        from cloudseg.fastdds import one_host_env

        actions += [
            SetEnvironmentVariable(name, value)
            for name, value in one_host_env().items()
            if not os.environ.get(name)
        ]
    actions.append(OpaqueFunction(function=_launch_nodes, args=[graph]))
    return LaunchDescription(actions)


def _launch_nodes(context: LaunchContext, graph: str) -> list:
    names = [a.name for a in graph_arguments(graph)]
    values = {name: LaunchConfiguration(name).perform(context) for name in names}
    nodes = graph_nodes(graph, **values)
    stops = [OnProcessExit(target_action=n, on_exit=_node_failed) for n in nodes]
    return [*nodes, *map(RegisterEventHandler, stops)]


class NodeFailed(RuntimeError):
    """A node of the graph ended with an error: launch logs this one line, stops the other
    nodes and exits 1 (`cloudseg run` does the same)."""


#: exit codes of a node stopped by Ctrl-C or SIGTERM (a terminal's Ctrl-C reaches the nodes
#: too, maybe before launch itself has started shutting down): not a failure
STOPPED = {-signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGTERM}


def _node_failed(event: ProcessExited, context: LaunchContext) -> None:
    """A node ending on its own with an error (not when launch stops it) stops the launch,
    non-zero; a source that ends cleanly (a finite input) leaves the graph running."""
    if event.returncode and event.returncode not in STOPPED and not context.is_shutdown:
        raise NodeFailed(
            f"{event.process_name} exited with code {event.returncode} (its error is above); "
            "stopping the launch"
        )


def _typed(node: str, name: str, text: str) -> object:
    """A launch argument's text as the node's parameter value, checked (ValueError)."""
    param = NODES[node].param(name)
    return param.check(param.parse(text))


def graph_nodes(
    graph: str,
    namespace: str = "",
    params_file: str = "",
    input: str | None = None,
    input_topic: str = "",
    loop: str = "false",
    scale: str = "",
    codec: str = "",
    image_topic: str = IMAGE_TOPIC,
    overrides: dict[str, dict] | None = None,
) -> list[Node]:
    """One launch_ros Node per process of `graph`, with its config file from config/, then
    `params_file`, then the arguments given (ValueError for a value the node would refuse).
    The vehicle graph gets a source node too when `input` is given; the source waits for the
    graph's other processes (`wait_for_graph`) before its first frame."""
    ns = namespace.strip().rstrip("/")
    _check_namespace(ns)
    if params_file and not Path(params_file).is_file():
        raise FileNotFoundError(f"params_file:={params_file}: no such file")
    entries = list(GRAPHS[graph])
    if graph == "vehicle" and input:
        entries.insert(0, (SOURCE.name, SOURCE_CONFIG))
    given: dict[str, dict] = {}
    for key, text in (("scale", scale), ("codec", codec)):
        if text:
            given.setdefault(COMPRESSOR.name, {})[key] = _typed(COMPRESSOR.name, key, text)
    defaults: dict[str, dict] = {}  # the launch file's own, below a params_file
    if any(process == SOURCE.name for process, _ in entries):
        source = given.setdefault(SOURCE.name, {})
        if input:
            source["input"] = input
        if input_topic:
            source["topic_in_bag"] = input_topic
        source["loop"] = _typed(SOURCE.name, "loop", loop)
        # as `cloudseg run`: the first frame waits until the others are up and their image
        # subscribers matched the source
        others = [process for process, _ in entries if process != SOURCE.name]
        takers = sum(e.kind == "sub" and e.topic == IMAGE_TOPIC for e in ready_endpoints(others))
        defaults[SOURCE.name] = {
            "wait_for_graph": graph,
            "wait_for_subscribers": takers,
            "wait_timeout": SOURCE_WAIT_S,
        }
    remappings = [(IMAGE_TOPIC, image_topic)] if image_topic and image_topic != IMAGE_TOPIC else []
    configs = config_dir()
    actions = []
    for process, config_file in entries:
        spec = NODES[process]
        params: list = [str(Path(configs) / config_file)]
        if process in defaults:
            params.append(defaults[process])
        if params_file:
            params.append(params_file)
        values: dict = {}
        for node in (process, *spec.composes):
            values.update(given.get(node, {}))
        values.update((overrides or {}).get(process, {}))
        if values:
            params.append(values)
        naming = {} if spec.composes else {"name": spec.name}  # composed: nodes keep names
        actions.append(
            Node(
                package=PACKAGE,
                executable=spec.executable,
                namespace=ns,
                parameters=params,
                remappings=remappings,
                output="screen",
                **naming,
            )
        )
    return actions


def _check_namespace(ns: str) -> None:
    """ValueError naming the argument for a namespace ROS refuses."""
    try:
        namespace(ns)
    except ValueError as exc:
        raise ValueError(f"namespace:={ns}: {exc}") from None
