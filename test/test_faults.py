"""Faults over real Fast DDS (issue 9): the cloud process killed and restarted, the frame topic
blocked for 10 s (the cloud process stopped), and Ctrl-C / SIGTERM to both processes.

The vehicle process (frame_selector + compressor + camera_labels) and the cloud process (SR +
segmentation on the CPU, 256 px wide so that a frame takes a fraction of a second) run as
separate processes, each in a session of its own (so a process left behind in its group
shows); this test is the camera: real frames of aachen_seq0000 at 5 Hz, stamped now."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudseg.graph import FRAMES_TOPIC, IMAGE_TOPIC, LABELS_TOPIC, STATS_TOPIC, config_dir
from cloudseg.launcher import start_node
from cloudseg.processes import ManagedProcess, process_group, rss_mb
from support import running, spin_for, spin_until, wait_until

pytestmark = [pytest.mark.dds, pytest.mark.slow]

CAMERA_HZ = 5.0
CLOUD = {"device": "cpu", "cpu_max_width": 256}
RESUME_S = 2.0  # labels and FrameStats must be back within this of the fault's end
UP_LINE = "cloudseg/frames -> "  # the cloud's sr node is constructed; spinning follows


class Camera:
    """The test node: publishes camera images on a timer and records what comes back
    (arrival time, capture stamp) on /cloudseg/labels, /cloudseg/stats and /cloudseg/frames."""

    def __init__(self, shared_data: Path, node) -> None:
        from sensor_msgs.msg import Image

        from cloudseg.msg import Frame, FrameStats
        from cloudseg.nodes.common import qos_for

        folder = shared_data / "sequences" / "aachen_seq0000"
        self.images = [
            cv2.resize(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), (1024, 512))
            for p in sorted(folder.glob("*.jpg"))[:30]
        ]
        self.node = node
        self.pub = node.create_publisher(Image, IMAGE_TOPIC, qos_for(IMAGE_TOPIC))
        self.labels: list[tuple[float, int]] = []
        self.stats: list[tuple[float, int]] = []
        self.frames: list[tuple[float, int]] = []

        def record(into):
            def cb(msg) -> None:
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                into.append((time.monotonic(), stamp))

            return cb

        node.create_subscription(Image, LABELS_TOPIC, record(self.labels), qos_for(LABELS_TOPIC))
        node.create_subscription(FrameStats, STATS_TOPIC, record(self.stats), qos_for(STATS_TOPIC))
        node.create_subscription(Frame, FRAMES_TOPIC, record(self.frames), qos_for(FRAMES_TOPIC))
        self.sent = 0
        self.timer = node.create_timer(1.0 / CAMERA_HZ, self.publish)
        self.timer.cancel()

    def publish(self) -> None:
        from cloudseg.nodes.convert import numpy_to_image

        msg = numpy_to_image(self.images[self.sent % len(self.images)], "rgb8")
        msg.header.frame_id = "camera"
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub.publish(msg)
        self.sent += 1

    def start(self) -> None:
        self.timer.reset()


@pytest.fixture
def camera(shared_data, weights_env, fastdds_local, ros, monkeypatch) -> Camera:
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    return Camera(shared_data, ros)


class Graph:
    """The vehicle and cloud processes of one test; whatever is left is killed at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[ManagedProcess] = []
        self.restarts = 0

    def start(self, which: str) -> ManagedProcess:
        # each in a session of its own, so a process left behind in its group shows
        opts = {"env": dict(os.environ), "log_dir": self.log_dir, "own_group": True}
        if which == "cloud":
            name = "cloud" if not self.restarts else f"cloud{self.restarts}"
            p = start_node("cloud", config_dir() / "cloud.yaml", CLOUD, name=name, **opts)
        else:
            p = start_node("vehicle", config_dir() / "vehicle.yaml", {}, **opts)
        self.procs.append(p)
        return p

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log.read_text()}" for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            if p.alive() or process_group(p.pid):
                p.stop(grace=5.0)


@pytest.fixture
def graph(tmp_path):
    g = Graph(tmp_path)
    try:
        yield g
    finally:
        g.close()


def _first_after(events: list[tuple[float, int]], t: float, fresh: bool = False) -> float | None:
    """Arrival time (monotonic) of the first event that arrived after `t`; `fresh`: and is the
    result of a frame captured after `t` (capture stamps are wall-clock ns)."""
    wall_ns = (time.time() - (time.monotonic() - t)) * 1e9  # `t` on the wall clock
    for arrival, stamp in events:
        if arrival >= t and (not fresh or stamp >= wall_ns - 50e6):
            return arrival
    return None


def _s(t: float | None, t0: float) -> str:
    return "never" if t is None else f"{t - t0:.2f} s"


def _streaming(camera: Camera, graph: Graph, timeout: float = 240.0) -> None:
    camera.start()
    n = len(camera.labels)
    assert spin_until(camera.node, lambda: len(camera.labels) > n + 2 and camera.stats, timeout), (
        graph.logs()
    )


FRESH_PROCESS = "CLOUDSEG_FAULT_TESTS"  # set: this pytest process runs the kill/stop tests
ORDER_DEPENDENT = pytest.mark.skipif(
    not os.environ.get(FRESH_PROCESS),
    reason="runs in a Python process of its own (test_kill_and_stop_faults_in_a_fresh_process; "
    f"alone: {FRESH_PROCESS}=1 .venv/bin/python -m pytest test/test_faults.py)",
)


def test_kill_and_stop_faults_in_a_fresh_process():
    """The two tests below in a fresh pytest process. Inside the full suite (after ~400 tests
    that started and stopped rclpy contexts in this process) this process's subscriber got
    the vehicle's frames only now and then once the cloud was killed or stopped (13 of ~50 in
    10 s), on a DDS domain of the test's own too; run in a process of their own they pass.
    The vehicle and cloud are separate processes either way: what is tested is the same."""
    if os.environ.get(FRESH_PROCESS):
        pytest.skip("this is the fresh process: the two tests run here themselves")
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", __file__]
    cmd += ["-k", "killed_and_restarted or blocked_for_10_s"]
    env = {**os.environ, FRESH_PROCESS: "1"}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    out = run.stdout + run.stderr
    print(out[-3000:])
    assert run.returncode == 0, out[-12000:]
    assert "2 passed" in out, out[-12000:]


@ORDER_DEPENDENT
def test_cloud_killed_and_restarted_the_vehicle_runs_on_and_labels_resume(camera, graph):
    vehicle = graph.start("vehicle")
    cloud = graph.start("cloud")
    _streaming(camera, graph)
    cloud.send_signal(signal.SIGKILL)
    cloud.wait(10)
    t_kill = time.monotonic()
    # the vehicle runs on without its cloud; then the restart comes within the lease: the new
    # cloud comes up on the dead one's ports while the vehicle still holds the dead
    # participant (config/fastdds_local.xml: a 10 s lease)
    spin_for(camera.node, 3.0)
    alone = [a for a, _ in camera.frames if a > t_kill + 0.5]
    assert len(alone) >= 5, f"the vehicle stopped sending without its cloud\n{graph.logs()}"
    graph.restarts += 1
    restarted = graph.start("cloud")
    # spin while the new cloud loads (the vehicle's frames keep coming)
    spin_until(camera.node, lambda: UP_LINE in restarted.log_text() or not restarted.alive(), 240)
    assert UP_LINE in restarted.log_text(), graph.logs()
    up = time.monotonic()
    print(f"the restarted cloud was up {up - t_kill:.1f} s after the kill")
    assert vehicle.alive(), graph.logs()
    spin_for(camera.node, RESUME_S + 3.0)
    labels, stats = _first_after(camera.labels, up), _first_after(camera.stats, up)
    print(f"labels {_s(labels, up)}, FrameStats {_s(stats, up)} after the restart was up")
    assert labels is not None and stats is not None, graph.logs()
    assert labels - up <= RESUME_S, graph.logs()
    assert stats - up <= RESUME_S, graph.logs()
    assert vehicle.alive() and restarted.alive(), graph.logs()
    assert "Traceback" not in graph.logs()


@ORDER_DEPENDENT
def test_frame_topic_blocked_for_10_s_resumes_without_a_backlog(camera, graph):
    vehicle = graph.start("vehicle")
    cloud = graph.start("cloud")
    _streaming(camera, graph)
    spin_for(camera.node, 5.0)  # settle: every pipeline and buffer in use
    before = {"cloud": rss_mb(cloud.pid), "vehicle": rss_mb(vehicle.pid)}
    os.kill(cloud.pid, signal.SIGSTOP)
    t_stop = time.monotonic()
    try:
        spin_for(camera.node, 10.0)
        blocked = {"cloud": rss_mb(cloud.pid), "vehicle": rss_mb(vehicle.pid)}
        answered_while_stopped = [a for a, _ in camera.labels if a > t_stop + 0.5]
    finally:
        os.kill(cloud.pid, signal.SIGCONT)
    t_cont = time.monotonic()
    sent_while_stopped = [a for a, _ in camera.frames if t_stop < a < t_cont]
    spin_for(camera.node, RESUME_S + 1.0)
    labels = _first_after(camera.labels, t_cont, fresh=True)
    stats = _first_after(camera.stats, t_cont, fresh=True)
    spin_for(camera.node, 10.0)
    after = {"cloud": rss_mb(cloud.pid), "vehicle": rss_mb(vehicle.pid)}
    late = [(a, s) for a, s in camera.labels if a > t_cont + RESUME_S + 1.0]
    # how old each result is when it arrives (capture stamp -> arrival), after the resume
    wall0 = time.time() - time.monotonic()
    ages = [a + wall0 - s / 1e9 for a, s in late]
    print(f"RSS MB before {before}, while blocked {blocked}, 10 s after {after}")
    print(
        f"labels of a fresh frame {_s(labels, t_cont)}, FrameStats {_s(stats, t_cont)} after "
        f"SIGCONT; result age after that: max {max(ages, default=0):.2f} s"
    )
    logs = graph.logs()
    assert not answered_while_stopped, logs
    assert len(sent_while_stopped) >= 30, f"the vehicle stopped sending\n{logs}"
    assert labels is not None and labels - t_cont <= RESUME_S, logs
    assert stats is not None and stats - t_cont <= RESUME_S, logs
    assert vehicle.alive() and cloud.alive(), logs
    # no backlog: what comes back after the resume is fresh, not the 50 frames of the stop
    assert late and max(ages) < RESUME_S, logs
    # no unbounded queue: neither process grew by the 10 s of frames (50 x ~100 KB) nor keeps on
    assert blocked["vehicle"] - before["vehicle"] < 50, (before, blocked)
    assert after["cloud"] - before["cloud"] < 100, (before, after)
    assert after["vehicle"] - before["vehicle"] < 50, (before, after)
    assert "Traceback" not in logs


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for c in map(int, children):
                if c not in out:
                    out.add(c)
                    todo.append(c)
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signals_stop_both_processes_quickly_leaving_nothing_behind(camera, graph, sig):
    procs = [graph.start("vehicle"), graph.start("cloud")]
    _streaming(camera, graph)  # both are busy: frames in flight, the cloud's worker running
    children = {p.name: _descendants(p.pid) for p in procs}
    t0 = time.monotonic()
    for p in procs:
        p.send_signal(sig)
    took = {}
    for p in procs:
        try:
            code = p.wait(15)
        except Exception:
            code = None
        took[p.name] = (code, round(time.monotonic() - t0, 2))
    print(f"{signal.Signals(sig).name}: (exit code, seconds) {took}; children {children}")
    logs = graph.logs()
    for p in procs:
        code, seconds = took[p.name]
        assert code == 0, f"{p.name}: exit code {code}\n{logs}"
        assert seconds <= 5.0, f"{p.name} took {seconds} s\n{logs}"

    # what they leave behind (their group, their children) goes a moment after their exit
    def left() -> dict[str, list[int]]:
        alive = {p.name: process_group(p.pid) for p in procs}
        for p in procs:
            alive[p.name] += [c for c in children[p.name] if Path(f"/proc/{c}").exists()]
        return {name: pids for name, pids in alive.items() if pids}

    assert wait_until(lambda: not left(), 5), f"left behind: {left()}"
    assert "Traceback" not in logs


def test_descendants_helper_sees_a_child(tmp_path):
    """The check above can see children: a shell's sleeping child is found, then gone."""
    proc = ManagedProcess.start(["sh", "-c", "sleep 30 & wait"], own_group=True)
    try:
        assert wait_until(lambda: _descendants(proc.pid), 5.0)
        assert len(process_group(proc.pid)) == 2
    finally:
        proc.kill()
        proc.wait()
    assert wait_until(lambda: not process_group(proc.pid), 5.0)


def test_rss_of_this_process_is_read(tmp_path):
    assert rss_mb(os.getpid()) > 10
    assert rss_mb(2**22 + 12345) is None
    assert np.isfinite(rss_mb(os.getpid()))


# --------------------------------------------------------------------------- Ctrl-C on the CLI

#: `cloudseg demo` and `cloudseg run` as small as they go: the generated clip at 4 fps, the
#: bilinear cloud (demo) or a 256 px wide CPU cloud (run), the controller on.
CTRL_C_ARGV = {
    "demo": ["demo", "--frames", "200", "--rate", "4", "--restore", "bilinear-only",
             "--select", "off", "--control", "on"],
    "run": ["run", "pipeline", "-p", "source.loop:=true", "-p", "source.rate:=4",
            "-p", "segmentation.device:=cpu", "-p", "segmentation.cpu_max_width:=256"],
}  # fmt: skip


def _node_processes(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _source_running(pid: int) -> bool:
    """The source node has started (the graph is up; frames go out a moment later)."""
    for child in _node_processes(pid):
        try:
            if "cloudseg.nodes.source_node" in " ".join(child.cmdline()):
                return True
        except Exception:  # gone meanwhile
            continue
    return False


MOMENTS = {
    # while Python imports the command's modules
    "starting": lambda pid: True,
    # the node processes are starting (importing torch, loading models)
    "nodes_starting": lambda pid: bool(_node_processes(pid)),
    # the graph streams: the source runs (2 s later: frames restored, knobs published)
    "streaming": _source_running,
}


@pytest.mark.parametrize("moment", list(MOMENTS))
@pytest.mark.parametrize("command", list(CTRL_C_ARGV))
def test_ctrl_c_ends_with_one_line_and_exit_130(
    command, moment, tmp_path, fresh_ros_domain, weights_env, monkeypatch
):
    """Ctrl-C as a terminal sends it (SIGINT to the whole foreground process group) at three
    moments: exit 130 with one `interrupted` line, no traceback, no "Unable to convert call
    argument" (an exception inside an rclpy callback), no "publisher's context is invalid"
    (publishing after rclpy's signal handler shut the context down), no process left; the
    demo prints the summary of what ran, with the controller's settings and why."""
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloudseg.cli", *CTRL_C_ARGV[command]],
            stdout=o,
            stderr=e,
            start_new_session=True,  # its own foreground group, as in a terminal
        )
    children: set = set()

    def ready() -> bool:
        children.update(_node_processes(proc.pid))
        return MOMENTS[moment](proc.pid) or proc.poll() is not None

    try:
        assert wait_until(ready, 240, poll_s=0.1), err.read_text()
        if moment == "streaming":
            time.sleep(3.0)
        elif moment == "starting":
            time.sleep(0.3)
        children.update(_node_processes(proc.pid))
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stdout, stderr = out.read_text(), err.read_text()
    both = f"--- stdout\n{stdout}\n--- stderr\n{stderr}"
    assert code == 130, both
    for bad in ("Traceback", "Unable to convert", "context is invalid", "KeyboardInterrupt"):
        assert bad not in both, both
    said = [line for line in stderr.splitlines() if "interrupted" in line]
    assert len(said) == 1 and said[0].startswith(f"cloudseg {command}: interrupted"), both
    if command == "demo" and moment != "starting":
        assert stdout.startswith("frames in / sent / received"), both
    if command == "demo" and moment == "streaming":
        assert "  knob 1: x" in stdout and ": start" in stdout, both  # where it started, why
    assert wait_until(lambda: not [c for c in children if running(c)], 10), children
