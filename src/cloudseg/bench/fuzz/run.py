"""The fuzz run: the node processes, the fuzzer node, the loop of hostile messages and valid
bursts, and the memory samples."""

from __future__ import annotations

import functools
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudseg.bench import cuda_available
from cloudseg.bench.fuzz.catalogue import KINDS, Hostile
from cloudseg.bench.fuzz.messages import (
    DEFAULT_SEQUENCE,
    HOSTILE_ID,
    OWN_LABELS_ID,
    OWN_REQUEST_ID,
    PROG,
    VALID_ID,
    VEHICLE_FRAMES_TOPIC,
    Item,
    ValidStream,
    describe,
    stamp_ns,
)
from cloudseg.bench.fuzz.report import result
from cloudseg.fastdds import ros_domain_id
from cloudseg.graph import (
    FRAMES_TOPIC,
    IMAGE_TOPIC,
    KEYFRAME_REQUEST_TOPIC,
    KNOB_TOPIC,
    LABELS_TOPIC,
    STATS_TOPIC,
    config_dir,
)
from cloudseg.launcher import local_env, start_node
from cloudseg.processes import ManagedProcess


@dataclass(frozen=True)
class Death:
    """A node process that exited while the fuzzer ran: its code, when (seconds into the run)
    and after how many hostile messages."""

    code: int
    at_s: float
    after_message: int


class FuzzError(Exception):
    """Bad options or a run that cannot go on; main() prints one line and returns 2."""


@dataclass
class Answers:
    """What came back, filled by the subscription callbacks (executor thread)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    valid_stats: set[int] = field(default_factory=set)  # capture stamps (ns) of valid frames
    valid_labels: set[int] = field(default_factory=set)
    hostile_stats: int = 0
    hostile_labels: int = 0
    cloud_frames_received: int = 0  # FrameStats.frames_received, newest
    vehicle_frames: int = 0
    vehicle_valid: set[int] = field(default_factory=set)  # camera stamps the vehicle sent on
    vehicle_knob_seqs: set[int] = field(default_factory=set)
    keyframe_requests: int = 0
    keyframe_reasons: Counter = field(default_factory=Counter)


class Progress:
    """A one-line progress bar on stderr (a line every 10% when stderr is not a terminal)."""

    def __init__(self, total: int | None, seconds: float | None, enabled: bool) -> None:
        self.total, self.seconds, self.enabled = total, seconds, enabled
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.last = 0.0
        self.last_decile = -1

    def update(self, done: int, note: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.seconds:
            frac = min((now - self.t0) / self.seconds, 1.0)
        else:
            frac = min(done / max(self.total or 1, 1), 1.0)
        decile = int(frac * 10)
        if self.tty:
            if not force and now - self.last < 0.25:
                return
            bar = "#" * int(frac * 30) + "." * (30 - int(frac * 30))
            of = f"{done}" if self.seconds else f"{done}/{self.total}"
            sys.stderr.write(f"\r[{bar}] {frac:4.0%} {of} sent  {note}\x1b[K")
            sys.stderr.flush()
        elif decile != self.last_decile or force:
            print(f"{PROG}: {frac:4.0%} {done} sent  {note}", file=sys.stderr, flush=True)
            self.last_decile = decile
        self.last = now

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


@dataclass
class Options:
    frames: int = 10_000
    soak_minutes: float = 0.0
    valid_only: bool = False
    rate: float = 60.0
    valid_every: int = 100
    final_bursts: int = 5
    answer_timeout: float = 6.0
    startup_timeout: float = 300.0
    rss_every: float = 10.0
    seed: int = 0
    input: str = DEFAULT_SEQUENCE
    cloud_params: dict[str, Any] = field(default_factory=dict)
    log_dir: Path | None = None
    keep_logs: bool = False
    domain_id: int | None = None
    progress: bool = True


class Fuzz:
    """The processes, the fuzzer node and the loop; :meth:`run` returns the result dict."""

    def __init__(self, opts: Options, stream: ValidStream) -> None:
        self.o = opts
        self.stream = stream
        self.hostile = Hostile(stream, opts.seed)
        self.answers = Answers()
        self.nodes: list[ManagedProcess] = []
        self.dead: dict[str, Death] = {}  # node processes that exited while we ran
        self.per_kind: Counter[str] = Counter()
        self.sent = 0
        self.publish_errors: Counter[str] = Counter()
        self.recent: deque[str] = deque(maxlen=20)
        self.valid_sent = 0
        self.bursts = self.bursts_answered = 0
        self.vehicle_images = 0
        self.image_stamps: list[int] = []  # capture stamps of the valid camera images
        self.rss: dict[str, dict[str, float | None]] = {}
        self.timeline: list[list[float | None]] = []
        self.warm_index = 0  # the timeline's sample taken after warm-up
        self.t0 = time.monotonic()
        self.log_dir = opts.log_dir or Path(tempfile.mkdtemp(prefix="cloudseg-fuzz-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # -- set-up -------------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        env = local_env(one_host=True)
        domain = self.o.domain_id
        env["ROS_DOMAIN_ID"] = str(domain if domain is not None else ros_domain_id())
        env["PYTHONUNBUFFERED"] = "1"
        os.environ.update(env)  # the fuzzer node in this process talks on the same domain
        return {**os.environ}

    def start(self) -> None:
        env = self.environment()
        cloud = dict(self.o.cloud_params)
        if "device" not in cloud and not cuda_available():
            cloud["device"] = "cpu"
        if cloud.get("device", "auto") == "cpu":
            cloud.setdefault("cpu_max_width", 512)
        # each in a session of its own: what it leaves in its group shows, and is killed
        node = functools.partial(start_node, env=env, log_dir=self.log_dir, own_group=True)
        self.nodes.append(node("cloud", config_dir() / "cloud.yaml", cloud))
        # relative, as the node's own name: it matches in whatever namespace the node runs
        remap = ["-r", f"{FRAMES_TOPIC}:={VEHICLE_FRAMES_TOPIC}"]
        self.nodes.append(node("vehicle", config_dir() / "vehicle.yaml", {}, extra_args=remap))

    def make_node(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        from cloudseg.msg import Frame, FrameStats, KeyframeRequest, Knob
        from cloudseg.nodes.common import qos_for

        rclpy.init(args=[])
        self.node = node = rclpy.create_node("cloudseg_fuzzer")
        self.pubs = {
            "frames": node.create_publisher(Frame, FRAMES_TOPIC, qos_for(FRAMES_TOPIC)),
            "knob": node.create_publisher(Knob, KNOB_TOPIC, qos_for(KNOB_TOPIC)),
            "image": node.create_publisher(Image, IMAGE_TOPIC, qos_for(IMAGE_TOPIC)),
            "keyframe_request": node.create_publisher(
                KeyframeRequest, KEYFRAME_REQUEST_TOPIC, qos_for(KEYFRAME_REQUEST_TOPIC)
            ),
            "labels": node.create_publisher(Image, LABELS_TOPIC, qos_for(LABELS_TOPIC)),
        }
        a = self.answers

        def on_stats(m: Any) -> None:
            with a.lock:
                if m.header.frame_id == VALID_ID:
                    a.valid_stats.add(stamp_ns(m.header.stamp))
                else:
                    a.hostile_stats += 1
                a.cloud_frames_received = max(a.cloud_frames_received, int(m.frames_received))

        def on_labels(m: Any) -> None:
            if m.header.frame_id == OWN_LABELS_ID:
                return  # our own hostile labels
            with a.lock:
                if m.header.frame_id == VALID_ID:
                    a.valid_labels.add(stamp_ns(m.header.stamp))
                else:
                    a.hostile_labels += 1

        def on_vehicle_frame(m: Any) -> None:
            with a.lock:
                a.vehicle_frames += 1
                a.vehicle_knob_seqs.add(int(m.knob_seq))
                if m.header.frame_id == VALID_ID:
                    a.vehicle_valid.add(stamp_ns(m.header.stamp))

        def on_request(m: Any) -> None:
            if m.header.frame_id == OWN_REQUEST_ID:
                return  # our own
            with a.lock:
                a.keyframe_requests += 1
                a.keyframe_reasons[str(m.reason)[:20]] += 1

        node.create_subscription(FrameStats, STATS_TOPIC, on_stats, qos_for(STATS_TOPIC))
        node.create_subscription(Image, LABELS_TOPIC, on_labels, qos_for(LABELS_TOPIC))
        node.create_subscription(
            Frame, VEHICLE_FRAMES_TOPIC, on_vehicle_frame, qos_for(FRAMES_TOPIC)
        )
        node.create_subscription(
            KeyframeRequest, KEYFRAME_REQUEST_TOPIC, on_request, qos_for(KEYFRAME_REQUEST_TOPIC)
        )
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(node)
        self.spinner = threading.Thread(target=self._spin, name="fuzz-spin", daemon=True)
        self.spinner.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass
        except Exception as exc:  # the fuzzer's own receiving side: say so, stop receiving
            print(f"{PROG}: fuzzer node stopped receiving: {exc}", file=sys.stderr)

    def close(self) -> None:
        import rclpy

        executor = getattr(self, "executor", None)
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        spinner = getattr(self, "spinner", None)
        if spinner is not None:
            # a spin still inside rclpy's wait when the interpreter exits ends the process
            # with "terminate called without an active exception": let it return first
            spinner.join(timeout=5.0)
        node = getattr(self, "node", None)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()

    # -- checks -------------------------------------------------------------------------------

    def check_nodes(self) -> None:
        for p in self.nodes:
            if p.name not in self.dead and not p.alive():
                self.dead[p.name] = Death(p.returncode, time.monotonic() - self.t0, self.sent)
                print(
                    f"\n{PROG}: the {p.name} process exited (code {p.returncode}) after "
                    f"{self.sent} messages; log {p.log}; the last messages sent:",
                    file=sys.stderr,
                )
                for line in self.recent:
                    print(f"    {line}", file=sys.stderr)

    def sample_rss(self, label: str | None = None) -> dict[str, float | None]:
        values = {p.name: p.rss_mb() for p in self.nodes}
        if label:
            for name, v in values.items():
                self.rss.setdefault(name, {})[label] = None if v is None else round(v, 1)
        t = round(time.monotonic() - self.t0, 1)
        self.timeline.append([t, *(None if v is None else round(v, 1) for v in values.values())])
        return values

    # -- sending ------------------------------------------------------------------------------

    def publish(self, item: Item) -> None:
        try:
            self.pubs[item.topic].publish(item.msg)
        except Exception as exc:  # a message our own rclpy refuses to send: count it
            self.publish_errors[f"{type(exc).__name__}"] += 1

    def send_hostile(self, kind: str, count: bool = True) -> int:
        items = self.hostile.make(kind)
        for it in items:
            self.publish(it)
            self.recent.append(f"{kind}: {it.what} {describe(it.msg)}")
        if count:
            self.per_kind[kind] += len(items)
            self.sent += len(items)
        return len(items)

    def burst(self, wait: bool = True) -> bool:
        """One valid GOP (paced) and one camera image; True when FrameStats for a frame of it
        came back within the answer timeout."""
        frames = self.stream.burst()
        stamps = {stamp_ns(f.header.stamp) for f in frames}
        image = self.stream.camera_image()
        self.image_stamps.append(stamp_ns(image.header.stamp))
        self.publish(Item("image", image, "valid camera image"))
        self.vehicle_images += 1
        for f in frames:
            self.publish(Item("frames", f, "valid"))
            self.valid_sent += 1
            time.sleep(0.1)
        self.bursts += 1
        if not wait:
            return False
        end = time.monotonic() + self.o.answer_timeout
        while time.monotonic() < end:
            with self.answers.lock:
                if stamps & self.answers.valid_stats:
                    self.bursts_answered += 1
                    return True
            time.sleep(0.02)
            self.check_nodes()
        return False

    def wait_for_graph(self) -> None:
        """Until both processes subscribe to what the fuzzer sends, and the cloud answers."""
        end = time.monotonic() + self.o.startup_timeout
        need = ("frames", "knob", "image", "keyframe_request", "labels")
        while not all(self.pubs[k].get_subscription_count() for k in need):
            self.check_nodes()
            if self.dead:
                raise FuzzError(f"a node died at start; logs in {self.log_dir}")
            if time.monotonic() > end:
                raise FuzzError(f"the nodes did not come up; logs in {self.log_dir}")
            time.sleep(0.2)
        time.sleep(1.0)  # discovery is not symmetric: let them match us too
        while not self.burst():
            self.check_nodes()
            if self.dead:
                raise FuzzError(f"a node died at start; logs in {self.log_dir}")
            if time.monotonic() > end:
                raise FuzzError(f"no FrameStats came back; logs in {self.log_dir}")

    def warm_up(self) -> None:
        """Every kind twice (not counted), every allowed scale once with time to build its
        pipeline, then valid bursts until one is answered."""
        for _ in range(2):
            for kind in KINDS:
                self.send_hostile(kind, count=False)
                time.sleep(0.02)
        c = self.stream.idrs[0]
        for scale in (1, 2, 3, 4, 8):
            f = self.stream.frame(c, HOSTILE_ID, seq=self.stream.seq)
            f.scale = scale
            f.width, f.height = c.width // c.scale * scale, c.height // c.scale * scale
            self.publish(Item("frames", f, "warm-up scale"))
            time.sleep(1.5)
        for _ in range(10):
            if self.burst():
                break
        time.sleep(2.0)

    def run(self) -> dict[str, Any]:
        o = self.o
        self.start()
        self.make_node()
        progress = Progress(
            None if o.soak_minutes else o.frames, o.soak_minutes * 60 or None, o.progress
        )
        try:
            if o.progress:
                print(f"{PROG}: starting the cloud and vehicle processes", file=sys.stderr)
            self.wait_for_graph()
            self.sample_rss("start")
            if o.progress:
                print(f"{PROG}: the cloud answers; warming up", file=sys.stderr)
            self.warm_up()
            self.check_nodes()
            self.sample_rss("after_warmup")
            self.warm_index = len(self.timeline) - 1
            t_main = time.monotonic()
            soak_end = t_main + o.soak_minutes * 60 if o.soak_minutes else None
            kinds = list(KINDS)
            rng = random.Random(o.seed + 1)
            order: list[str] = []
            next_t = time.monotonic()
            last_rss = last_check = time.monotonic()
            since_burst = 0
            while True:
                now = time.monotonic()
                if soak_end is not None:
                    if now >= soak_end:
                        break
                elif self.sent >= o.frames:
                    break
                if o.valid_only:
                    self.burst()
                    time.sleep(max(0.0, 1.0 / max(o.rate, 1e-3)))
                else:
                    if not order:
                        order = kinds[:]
                        rng.shuffle(order)
                    n = self.send_hostile(order.pop())
                    since_burst += n
                    if since_burst >= o.valid_every:
                        since_burst = 0
                        self.burst()
                        next_t = time.monotonic()
                    next_t += n / o.rate
                    delay = next_t - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    else:
                        next_t = time.monotonic()
                now = time.monotonic()
                if now - last_check > 0.5:
                    self.check_nodes()
                    last_check = now
                    if self.dead:
                        break  # a crash is the finding: stop fuzzing, check what still serves
                if now - last_rss > o.rss_every:
                    self.sample_rss()
                    last_rss = now
                with self.answers.lock:
                    answered = len(self.answers.valid_stats)
                rss = self.timeline[-1][1:] if self.timeline else []
                mem = " ".join(
                    f"{p.name} {v:.0f}MB" if v is not None else f"{p.name} DEAD"
                    for p, v in zip(self.nodes, rss, strict=False)
                )
                progress.update(self.sent, f"answered {answered}/{self.valid_sent} valid  {mem}")
            progress.update(self.sent, "final batch", force=True)
            main_seconds = time.monotonic() - t_main
            # the final batch: valid bursts only
            time.sleep(1.0)
            first_final = len(self.image_stamps)
            final = [self.burst() for _ in range(o.final_bursts)]
            time.sleep(2.0)
            final_images = set(self.image_stamps[first_final:])
            with self.answers.lock:
                vehicle_final = len(final_images & self.answers.vehicle_valid)
            self.check_nodes()
            self.sample_rss("end")
        finally:
            progress.close()
            codes = self.stop()
            self.close()
        return result(self, final, main_seconds, codes, vehicle_final)

    def stop(self) -> dict[str, dict[str, Any]]:
        out = {}
        for p in reversed(self.nodes):
            stopped = p.stop(grace=10.0)
            out[p.name] = {
                "code": stopped.code,
                "seconds": round(stopped.seconds, 1),
                "left_behind": stopped.leftover,
            }
        return out

    # -- results ------------------------------------------------------------------------------
