"""The launch files, run for real: `ros2 launch cloudseg <file>.launch.py` with its arguments.

Needs the ROS 2 launch packages: a ROS install, or the wheels from ../shared/wheels that
scripts/setup.sh installs into .venv (docs/running.md#launch-files). Without them every test
here is skipped, saying so. Each test starts `ros2 launch`, checks from a node of this process
(in the root namespace) what comes out under the namespaces it asked for, then stops it with
SIGINT as Ctrl-C does: `ros2 launch` must exit 0 and leave no process behind.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest

from cloudseg.graph import (
    COMPRESSED_TOPIC,
    FRAMES_TOPIC,
    IMAGE_TOPIC,
    LABELS_TOPIC,
    STATS_TOPIC,
    resolve,
)
from cloudseg.processes import ManagedProcess
from support import ros2_command, running, wait_until

pytestmark = pytest.mark.dds

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 320, 160


def _why_no_launch() -> str | None:
    missing = [
        m for m in ("launch", "launch_ros", "ros2launch", "composition_interfaces")
        if importlib.util.find_spec(m) is None
    ]  # fmt: skip
    if missing or ros2_command() is None:
        return (
            f"the ROS 2 launch packages are not installed ({', '.join(missing) or 'ros2'} "
            "missing): scripts/setup.sh installs them from ../shared/wheels, or source a ROS 2 "
            "install"
        )
    return None


def _launch_dir(prefixes: list[str]) -> Path:
    """The launch folder `ros2 launch cloudseg ...` uses: the first prefix that registers the
    package in its ament index."""
    for prefix in prefixes:
        if (Path(prefix) / "share/ament_index/resource_index/packages/cloudseg").is_file():
            return Path(prefix) / "share" / "cloudseg" / "launch"
    pytest.fail(f"no cloudseg package in {prefixes}: run scripts/setup.sh")


@pytest.fixture(scope="module")
def launch_env(tmp_path_factory) -> dict[str, str]:
    """Environment for `ros2 launch`: the venv in AMENT_PREFIX_PATH (where the wheels and the
    cloudseg package register), logs in a temporary folder, this session's DDS domain."""
    reason = _why_no_launch()
    if reason:
        pytest.skip(reason)
    # a prefix in the environment first (an overlay, as a sourced workspace), then the venv
    prefixes = [*filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(":")), sys.prefix]
    installed = _launch_dir(prefixes)
    for name in ("_common.py", "vehicle.launch.py"):
        if (installed / name).read_bytes() != (REPO / "launch" / name).read_bytes():
            pytest.fail(f"{installed / name} differs from launch/{name}: run scripts/setup.sh")
    return {
        **os.environ,
        "AMENT_PREFIX_PATH": ":".join(dict.fromkeys(prefixes)),
        "ROS_LOG_DIR": str(tmp_path_factory.mktemp("ros_log")),
        "PYTHONUNBUFFERED": "1",
    }


class Launch:
    """One `ros2 launch cloudseg FILE ARGS...` process, its output in a log file."""

    def __init__(self, env: dict, log: Path, file: str, *args: str) -> None:
        self.log = log
        self.cmd = [ros2_command(), "launch", "cloudseg", file, *args]
        # Ctrl-C as from a terminal: a test run started in the background (`cmd &` in a
        # script, as CI may) ignores SIGINT, and `ros2 launch` would inherit that
        self.proc = ManagedProcess.start(
            self.cmd, env=env, log=log, own_group=True, default_sigint=True
        )
        self.seen: dict[int, psutil.Process] = {}

    def watch(self) -> None:
        """Remember the node processes launch started (checked after the shutdown)."""
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> None:
        assert self.proc.poll() is None, f"ros2 launch ended early:\n{self.text()}"

    def stop(self, timeout: float = 30.0) -> None:
        """Ctrl-C: SIGINT to `ros2 launch` only; it must stop its nodes and exit 0."""
        self.watch()
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait_exit(timeout)
        if code is None:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"ros2 launch did not stop in {timeout:.0f} s:\n{self.text()}")
        assert self.seen, f"ros2 launch started no node process:\n{self.text()}"
        left = [p for p in self.seen.values() if running(p)]
        for p in left:
            p.kill()
        assert code == 0, f"ros2 launch exited {code}:\n{self.text()}"
        assert not left, f"left behind: {[p.cmdline() for p in left]}\n{self.text()}"


@pytest.fixture()
def ros_node():
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(args=[], context=context)
    node = rclpy.create_node("launch_test", context=context)
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    node.spin = lambda seconds: executor.spin_once(timeout_sec=seconds)
    yield node
    executor.remove_node(node)
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def _tend(node, launches: list[Launch]) -> Callable[[], None]:
    """A wait's step: spin the test node, check each launch still runs and note its nodes."""

    def step() -> None:
        node.spin(0.05)
        for launch in launches:
            launch.alive()
            launch.watch()

    return step


def _camera_image(colour: tuple[int, int, int], i: int) -> np.ndarray:
    """A flat colour with a moving dark bar (each frame differs: the selector sends it)."""
    rgb = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    rgb[:] = colour
    x = (i * 23) % (WIDTH - 40)
    rgb[:, x : x + 40] = 20
    return rgb


def test_vehicle_launch_runs_two_vehicles_under_their_namespaces(launch_env, ros_node, tmp_path):
    """Two `ros2 launch cloudseg vehicle.launch.py` at once, car1 (the config's h264 at x4)
    and car2 (scale:=2 codec:=jpeg): images published on /carN/camera/image_raw come out as
    Frames on /carN/cloudseg/frames only, with that vehicle's settings, stamps and pixels; car2's
    JPEG stream goes to /car2/cloudseg/lowres/compressed, never to image_raw/compressed."""
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header

    from cloudseg.media.image_codecs import decode_image
    from cloudseg.msg import Frame
    from cloudseg.nodes.common import qos_for
    from cloudseg.nodes.convert import numpy_to_image

    cars = {
        "car1": {"args": [], "colour": (200, 40, 40), "scale": 4, "codec": "h264", "sec": 1000},
        "car2": {
            "args": ["scale:=2", "codec:=jpeg"],
            "colour": (40, 40, 200),
            "scale": 2,
            "codec": "jpeg",
            "sec": 2000,
        },
    }
    frames: dict[str, list] = {car: [] for car in cars}
    lowres: dict[str, list] = {car: [] for car in cars}
    pubs = {}
    for car in cars:
        pubs[car] = ros_node.create_publisher(
            Image, resolve(IMAGE_TOPIC, car), qos_for(IMAGE_TOPIC)
        )
        ros_node.create_subscription(
            Frame, resolve(FRAMES_TOPIC, car), frames[car].append, qos_for(FRAMES_TOPIC)
        )
        ros_node.create_subscription(
            CompressedImage,
            resolve(COMPRESSED_TOPIC, car),
            lowres[car].append,
            qos_for(COMPRESSED_TOPIC),
        )
    t0 = time.monotonic()
    launches = [
        Launch(launch_env, tmp_path / f"{car}.log", "vehicle.launch.py", f"namespace:={car}",
               *spec["args"])
        for car, spec in cars.items()
    ]  # fmt: skip
    tend = _tend(ros_node, launches)
    try:
        assert wait_until(
            lambda: all(
                ros_node.count_publishers(resolve(FRAMES_TOPIC, car)) >= 1
                and pubs[car].get_subscription_count() >= 1
                for car in cars
            ),
            40,
            tend,
        ), "\n".join(x.text() for x in launches)
        i = 0
        while min(len(f) for f in frames.values()) < 5 and time.monotonic() - t0 < 50:
            for car, spec in cars.items():
                header = Header(frame_id="camera")
                header.stamp.sec, header.stamp.nanosec = spec["sec"] + i, 0
                pubs[car].publish(numpy_to_image(_camera_image(spec["colour"], i), "rgb8", header))
            i += 1
            wait_until(lambda: False, 0.1, tend)  # the camera's pace, tending the launches
        for car, spec in cars.items():
            got = frames[car]
            assert len(got) >= 5, f"{car}: {len(got)} frames\n{launches[0].text()}"
            for f in got:
                assert spec["sec"] <= f.header.stamp.sec < spec["sec"] + i, car  # its own images
                assert (f.scale, f.codec) == (spec["scale"], spec["codec"])
                assert (f.width, f.height) == (WIDTH, HEIGHT)
        # car2's pixels: its colour, at half size (decoded from the JPEG payload)
        f = frames["car2"][-1]
        small = decode_image(bytes(f.data), "jpeg")
        assert small.shape == (HEIGHT // 2, WIDTH // 2, 3)
        index = f.header.stamp.sec - cars["car2"]["sec"]
        expected = _camera_image(cars["car2"]["colour"], index)[::2, ::2]
        assert np.abs(small.astype(int) - expected).mean() < 12
        assert lowres["car2"] and not lowres["car1"]  # JPEG only: h264 has no viewer stream
        for car in cars:  # image_transport: image_raw/compressed is not the low-res stream
            assert ros_node.count_publishers(resolve(IMAGE_TOPIC, car) + "/compressed") == 0
        assert ros_node.count_publishers("/cloudseg/frames") == 0  # nothing in the root
    finally:
        for launch in launches:
            launch.stop()
    for launch in launches:
        assert "compressor" in launch.text()


def _fast_cloud_params(path: Path, extra: str = "") -> Path:
    """A params_file: bilinear restoration, ESPNetv2 on the CPU at 256 px (fast here)."""
    path.write_text(
        "/**/sr:\n  ros__parameters:\n    restore: bilinear\n"
        "/**/segmentation:\n  ros__parameters:\n    device: cpu\n    cpu_max_width: 256\n" + extra
    )
    return path


def test_cloud_launch_segments_frames_under_its_namespace(
    launch_env, ros_node, tmp_path, weights_env
):
    """`cloud.launch.py namespace:=car3 params_file:=<bilinear, CPU at 256 px>`: JPEG Frames
    published on /car3/cloudseg/frames come back as labels at the camera size on
    /car3/cloudseg/labels."""
    from sensor_msgs.msg import Image

    from cloudseg.media.image_codecs import encode_image
    from cloudseg.msg import Frame
    from cloudseg.nodes.common import qos_for

    env = {
        **launch_env,
        **{k: os.environ[k] for k in ("CLOUDSEG_WEIGHTS", "CLOUDSEG_OFFLINE", "XDG_CACHE_HOME")},
    }
    labels: list = []
    pub = ros_node.create_publisher(Frame, resolve(FRAMES_TOPIC, "car3"), qos_for(FRAMES_TOPIC))
    ros_node.create_subscription(
        Image, resolve(LABELS_TOPIC, "car3"), labels.append, qos_for(LABELS_TOPIC)
    )
    params = _fast_cloud_params(tmp_path / "fast_cloud.yaml")
    launch = Launch(env, tmp_path / "cloud.log", "cloud.launch.py", "namespace:=car3",
                    f"params_file:={params}")  # fmt: skip
    try:
        tend = _tend(ros_node, [launch])
        assert wait_until(
            lambda: ros_node.count_publishers(resolve(LABELS_TOPIC, "car3")), 50, tend
        ), launch.text()
        payload = encode_image(_camera_image((90, 160, 90), 0)[::2, ::2].copy(), "jpeg", 90)
        seq = 0
        while not labels and seq < 200:
            f = Frame(seq=seq, scale=2, width=WIDTH, height=HEIGHT, codec="jpeg", keyframe=True)
            f.header.stamp.sec = 3000 + seq
            f.data = payload
            pub.publish(f)
            seq += 1
            wait_until(lambda: bool(labels), 0.3, tend)
        assert labels, launch.text()
        assert (labels[0].width, labels[0].height, labels[0].encoding) == (WIDTH, HEIGHT, "mono8")
        text = launch.text()
        assert "[car3.sr]" in text and "[car3.segmentation]" in text  # both under /car3
        # the params_file reached both nodes of the process
        assert "SR bypassed" in text and "at most 256 px wide on CPU" in text
    finally:
        launch.stop()


def test_pipeline_launch_with_arguments_delivers_labels(
    launch_env, ros_node, tmp_path, shared_data, weights_env
):
    """`pipeline.launch.py input:=<aachen_seq0000> namespace:=car4 loop:=true scale:=4
    params_file:=...`: source, vehicle, cloud and controller under /car4; labels of the real
    sequence's 2048x1024 frames come back on /car4/cloudseg/labels."""
    from sensor_msgs.msg import Image

    from cloudseg.nodes.common import qos_for

    env = {
        **launch_env,
        **{k: os.environ[k] for k in ("CLOUDSEG_WEIGHTS", "CLOUDSEG_OFFLINE", "XDG_CACHE_HOME")},
    }
    labels: list = []
    ros_node.create_subscription(
        Image, resolve(LABELS_TOPIC, "car4"), labels.append, qos_for(LABELS_TOPIC)
    )
    params = _fast_cloud_params(
        tmp_path / "fast_pipeline.yaml",
        "/**/source:\n  ros__parameters:\n    rate: 4.0\n"
        "/**/controller:\n  ros__parameters:\n    full_frame_every_s: 0.0\n",
    )
    sequence = shared_data / "sequences" / "aachen_seq0000"
    arguments = ["namespace:=car4", f"input:={sequence}", "loop:=true", "scale:=4"]
    arguments.append(f"params_file:={params}")
    launch = Launch(env, tmp_path / "pipeline.log", "pipeline.launch.py", *arguments)
    try:
        assert wait_until(lambda: bool(labels), 55, _tend(ros_node, [launch])), launch.text()
        assert (labels[0].width, labels[0].height) == (2048, 1024)
        text = launch.text()
        for node in ("source", "frame_selector", "compressor", "sr", "segmentation", "controller"):
            assert f"[car4.{node}]" in text, node  # every node under /car4
        assert "looping on /car4/camera/image_raw at 4.0 Hz" in text  # input, loop, params_file
    finally:
        launch.stop()


@pytest.fixture(scope="module")
def front_bag(tmp_path_factory, shared_data) -> Path:
    """8 frames of the Udacity clip (960x540) in a rosbag2 on /front/image_raw: not the
    default image topic, as a robot's bag."""
    from cloudseg.data.bag_writer import convert_to_bag

    bag = tmp_path_factory.mktemp("front") / "front.bag"
    clip = shared_data / "video" / "solidWhiteRight.mp4"
    assert convert_to_bag(clip, bag, topic="/front/image_raw", limit=8, progress=False) == 8
    return bag


def test_pipeline_launch_waits_for_the_cloud_and_reads_the_bag_topic(
    launch_env, ros_node, tmp_path, front_bag, weights_env
):
    """`pipeline.launch.py input:=<bag> input_topic:=/front/image_raw`: the source holds its
    first frame until the graph is up (as `cloudseg run`), so the cloud receives all 8 frames
    (none "lost; waiting for the next IDR frame": before, 5 of 30 came through)."""
    from cloudseg.msg import FrameStats
    from cloudseg.nodes.common import qos_for

    env = {
        **launch_env,
        **{k: os.environ[k] for k in ("CLOUDSEG_WEIGHTS", "CLOUDSEG_OFFLINE", "XDG_CACHE_HOME")},
    }
    received: list[int] = []
    ros_node.create_subscription(
        FrameStats,
        resolve(STATS_TOPIC, "car5"),
        lambda m: received.append(m.frames_received),
        qos_for(STATS_TOPIC),
    )
    # the controller holds its start entry: a probe up within these 2 s could bring an entry
    # whose frame selection (<= 8.5 fps, thresholds) keeps some of the 8 frames back
    params = _fast_cloud_params(
        tmp_path / "fast.yaml",
        "/**/source:\n  ros__parameters:\n    rate: 4.0\n"
        "/**/controller:\n  ros__parameters:\n    hold_s: 600.0\n",
    )
    arguments = [f"input:={front_bag}", "input_topic:=/front/image_raw", f"params_file:={params}"]
    launch = Launch(env, tmp_path / "wait.log", "pipeline.launch.py", "namespace:=car5", *arguments)
    try:
        tend = _tend(ros_node, [launch])
        assert wait_until(lambda: max(received, default=0) >= 8, 90, tend), launch.text()
        text = launch.text()
        assert "pipeline graph up after" in text  # the source waited
        assert "input finished: 8 frames published" in text
        assert "a frame was lost" not in text, text
        assert max(received) == 8
    finally:
        launch.stop()


def test_launch_stops_non_zero_when_a_node_fails(launch_env, tmp_path, front_bag, weights_env):
    """The bag without `input_topic:=`: the source cannot open it, and launch stops the other
    nodes and exits non-zero with one line saying which node failed (before, they ran on and
    launch exited 0)."""
    launch = Launch(launch_env, tmp_path / "fail.log", "pipeline.launch.py", f"input:={front_bag}")
    deadline = time.monotonic() + 60
    while launch.proc.poll() is None and time.monotonic() < deadline:
        launch.watch()  # the node processes, checked below
        time.sleep(0.1)
    code = launch.proc.poll()
    if code is None:
        launch.stop()
        pytest.fail(f"ros2 launch ran on after the source failed:\n{launch.text()}")
    text = launch.text()
    assert code != 0, text
    assert "[source]: cannot open input" in text, text
    lines = [ln for ln in text.splitlines() if "exited with code 1 (its error is above)" in ln]
    assert len(lines) == 1 and "source_node" in lines[0], text
    # launch's own output: no traceback (a node stopped while importing may print its own)
    assert not any(line.startswith("Traceback") for line in text.splitlines()), text
    assert launch.seen, text
    left = [p for p in launch.seen.values() if running(p)]
    assert not left, [p.cmdline() for p in left]


def test_ros2_launch_needs_no_ament_prefix_path():
    """`ros2 launch` and `ros2 interface` straight after scripts/setup.sh, AMENT_PREFIX_PATH
    unset (no ROS sourced): the venv's cloudseg_ament_prefix.pth supplies the venv prefix."""
    reason = _why_no_launch()
    if reason:
        pytest.skip(reason)
    import sysconfig

    pth = Path(sysconfig.get_paths()["purelib"]) / "cloudseg_ament_prefix.pth"
    shipped = REPO / "scripts" / "cloudseg_ament_prefix.pth"
    if not pth.is_file() or pth.read_bytes() != shipped.read_bytes():
        pytest.fail(f"{pth} missing or not scripts/{shipped.name}: run scripts/setup.sh")
    env = {k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"}
    for args, expected in (
        (["launch", "-s", "cloudseg", "pipeline.launch.py"], "'input':"),
        (["interface", "show", "cloudseg/msg/Frame"], "uint64 seq"),
    ):
        result = subprocess.run(
            [ros2_command(), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        out = result.stdout + result.stderr
        assert result.returncode == 0 and expected in out, out
        assert "AMENT_PREFIX_PATH" not in out and "Traceback" not in out, out
