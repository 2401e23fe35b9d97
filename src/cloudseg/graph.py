"""The node graph, defined once: topics, QoS roles, nodes and their parameters.

Nodes declare their parameters from here, the launch files and the `cloudseg` command start
the nodes listed here with the config files named here, and the tests check against it.
This module imports nothing from ROS.

Topic names are relative (`cloudseg/frames`): a node started in a namespace
(`--ros-args -r __ns:=/car1`, `Node(namespace=...)` in a launch file, `cloudseg run vehicle
--namespace car1`) uses `/car1/cloudseg/frames`, and one in the root namespace `/cloudseg/frames`.
Whatever compares them with names from the ROS graph resolves them first (`resolve`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudseg.routes import DEFAULT_ROUTE

PACKAGE = "cloudseg"


@dataclass(frozen=True)
class Topic:
    """A topic name with the QoS role it is published with (see `nodes.qos`)."""

    name: str
    type: str
    qos: str  # "frames" | "sensor" | "knob" | "request" | "results"
    description: str


TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        Topic("camera/image_raw", "sensor_msgs/msg/Image", "sensor", "camera images (rgb8)"),
        Topic(
            "cloudseg/lowres/compressed",
            "sensor_msgs/msg/CompressedImage",
            "sensor",
            "the low-resolution JPEG/PNG stream the cloud gets, for stock viewers: the "
            "'compressed' image_transport of the base topic cloudseg/lowres (its own base "
            "topic: camera/image_raw/compressed would have to carry the camera's image)",
        ),
        Topic("cloudseg/frames", "cloudseg/msg/Frame", "frames", "encoded frames over the WAN"),
        Topic("cloudseg/knob", "cloudseg/msg/Knob", "knob", "the controller's settings"),
        Topic(
            "cloudseg/keyframe_request",
            "cloudseg/msg/KeyframeRequest",
            "request",
            "cloud -> vehicle: make the next frame an H.264 IDR (after a lost or undecodable "
            "frame; at most one every 200 ms while the cloud waits)",
        ),
        Topic(
            "cloudseg/restored",
            "sensor_msgs/msg/Image",
            "results",
            "restored images (rgb8): at the size the cloud segments at (cloud, cloud_split), "
            "at the camera size (cloud_bilinear)",
        ),
        Topic(
            "cloudseg/restored/info",
            "cloudseg/msg/RestoredInfo",
            "results",
            "split cloud: for each restored image, its frame's seq, scale and camera size",
        ),
        Topic("cloudseg/labels", "sensor_msgs/msg/Image", "results", "mono8 train ids 0..18"),
        Topic("cloudseg/overlay", "sensor_msgs/msg/Image", "results", "rgb8 colour overlay"),
        Topic("cloudseg/stats", "cloudseg/msg/FrameStats", "results", "per-frame timings"),
        Topic(
            "cloudseg/camera_labels",
            "sensor_msgs/msg/Image",
            "results",
            "vehicle: for every camera frame the newest labels (mono8 train ids, the camera "
            "frame's stamp)",
        ),
        Topic(
            "cloudseg/camera_labels/info",
            "cloudseg/msg/LabelAge",
            "results",
            "vehicle: for every camera frame, which frame its labels came from and their age",
        ),
    )
}

IMAGE_TOPIC = "camera/image_raw"
#: image_transport base topic of the compressor's low-resolution stream (only its 'compressed'
#: transport is published)
LOWRES_TOPIC = "cloudseg/lowres"
COMPRESSED_TOPIC = f"{LOWRES_TOPIC}/compressed"
FRAMES_TOPIC = "cloudseg/frames"
KNOB_TOPIC = "cloudseg/knob"
KEYFRAME_REQUEST_TOPIC = "cloudseg/keyframe_request"
RESTORED_TOPIC = "cloudseg/restored"
RESTORED_INFO_TOPIC = "cloudseg/restored/info"
LABELS_TOPIC = "cloudseg/labels"
OVERLAY_TOPIC = "cloudseg/overlay"
STATS_TOPIC = "cloudseg/stats"
CAMERA_LABELS_TOPIC = "cloudseg/camera_labels"
CAMERA_LABELS_INFO_TOPIC = "cloudseg/camera_labels/info"

#: the image topic read from a rosbag2 file by default (bags hold fully qualified names)
BAG_IMAGE_TOPIC = "/" + IMAGE_TOPIC

_NS_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def namespace(text: str | None) -> str:
    """A ROS namespace as a fully qualified one: `car1`, `/car1/` -> `/car1`; empty or None ->
    `/` (the root). ValueError for a name ROS refuses (tokens of letters, digits and `_`, not
    starting with a digit)."""
    tokens = [t for t in (text or "").strip().split("/") if t]
    for token in tokens:
        if not _NS_TOKEN.fullmatch(token):
            raise ValueError(
                f"namespace {text!r}: {token!r} is not a valid name (letters, digits and _, "
                f"not starting with a digit)"
            )
    return "/" + "/".join(tokens)


def resolve(topic: str, ns: str | None = "/") -> str:
    """The fully qualified name of a graph topic for a node in namespace `ns`
    (`cloudseg/frames`, `car1` -> `/car1/cloudseg/frames`); an absolute name is kept."""
    if topic.startswith("/"):
        return topic
    base = namespace(ns)
    return f"{base.rstrip('/')}/{topic}"


@dataclass(frozen=True)
class Param:
    """A node parameter: default, description and allowed range or choices."""

    name: str
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] | None = None  # for a list parameter: what each item may be

    def parse(self, text: str) -> Any:
        """A value from the command line (`-p node.name:=TEXT`), typed like the default; raise
        ValueError saying what is expected."""
        kind = type(self.default)
        try:
            if kind is bool:
                word = text.strip().lower()
                if word not in ("true", "false"):
                    raise ValueError
                return word == "true"
            if kind is int:
                return int(text)
            if kind is float:
                return float(text)
        except ValueError:
            what = {bool: "true or false", int: "an integer", float: "a number"}[kind]
            raise ValueError(f"{self.name}={text!r}: must be {what}") from None
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            return text[1:-1]  # a quoted string, as YAML reads it
        return text

    def check(self, value: Any) -> Any:
        """Return `value` if it is allowed, else raise ValueError saying why (a value of
        another type than the default's, NaN, out of range, not one of the choices)."""
        if isinstance(self.default, list):
            if not isinstance(value, (list, tuple)) or not value:
                raise ValueError(f"{self.name}={value!r}: must be a non-empty list")
            for item in value:
                self._check_one(item)
            return list(value)
        return self._check_one(value)

    def _check_one(self, value: Any) -> Any:
        kind = type(self.default[0] if isinstance(self.default, list) else self.default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not kind:
            raise ValueError(f"{self.name}={value!r}: must be a {kind.__name__}")
        if kind is float and not math.isfinite(value):
            raise ValueError(f"{self.name}={value!r}: must be a finite number")
        if self.choices is not None and value not in self.choices:
            shown = ", ".join(map(str, self.choices))
            raise ValueError(f"{self.name}={value!r}: must be one of {shown}")
        if self.min is not None and value < self.min:
            raise ValueError(f"{self.name}={value!r}: must be >= {self.min}")
        if self.max is not None and value > self.max:
            raise ValueError(f"{self.name}={value!r}: must be <= {self.max}")
        return value


@dataclass(frozen=True)
class Endpoint:
    """A publisher or subscription a node has on a topic (`kind`: "pub" or "sub")."""

    node: str
    kind: str
    topic: str

    def describe(self, ns: str | None = "/") -> str:
        """`node (publisher of topic)`, the topic resolved in namespace `ns`."""
        role = "publisher" if self.kind == "pub" else "subscriber"
        return f"{self.node} ({role} of {resolve(self.topic, ns)})"


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph: its name, entry module, side and parameters."""

    name: str
    executable: str
    side: str  # "vehicle" | "cloud" | "tools"
    description: str
    params: tuple[Param, ...] = field(default_factory=tuple)
    composes: tuple[str, ...] = ()  # an executable running several nodes in one process
    #: parameters that change at run time (`ros2 param set`, checked against the ranges here);
    #: the others are read-only once the node runs
    live: frozenset[str] = frozenset()
    # endpoints the process has once it has started (created after its models, encoder or
    # profile are ready): `cloudseg run` and the demo wait for them before the source starts
    ready: tuple[Endpoint, ...] = ()
    #: parameters declared only when the node runs in a process of its own; composed, another
    #: node's apply (the split cloud's sr node takes the pipeline's, the segmentation node's
    #: in the cloud process)
    standalone: frozenset[str] = frozenset()
    #: parameters declared only when the node runs composed (the cloud process's sr node
    #: serves many streams in batches; on its own it serves the root stream, one by one)
    composed_only: frozenset[str] = frozenset()

    @property
    def module(self) -> str:
        return f"{PACKAGE}.nodes.{self.executable}"

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def is_live(self, name: str) -> bool:
        return name in self.live

    def declared(self, composed: bool = False) -> tuple[Param, ...]:
        """The parameters the node declares: on its own all but `composed_only`, composed
        all but `standalone`."""
        skip = self.standalone if composed else self.composed_only
        return tuple(p for p in self.params if p.name not in skip)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"node {self.name} has no parameter {name!r}")


CODEC_CHOICES = ("h264", "jpeg", "png")
#: The compressor's downsampling kernels (names of cloudseg.media.resize.downsample's methods).
DOWNSAMPLE_KERNELS = ("area", "bilinear_noaa")

#: The downsampling factors the system serves: full resolution (1), the heads of CARN-M
#: (2, 3, 4) and 8 (bilinear restoration). The compressor's `scale`, the Knob's and the cloud's
#: `scales` are chosen from these; the cloud builds at most one pipeline for each.
SCALES = (1, 2, 3, 4, 8)

SOURCE = NodeSpec(
    name="source",
    executable="source_node",
    side="vehicle",
    description="Publishes camera images from a rosbag2 file, a frame folder or a video",
    params=(
        Param(
            "input",
            "",
            "rosbag2 (mcap/sqlite3), Cityscapes sequence folder, video file; "
            "empty = generated test clip",
        ),
        Param("topic_in_bag", BAG_IMAGE_TOPIC, "image topic to read from a bag"),
        Param(
            "rate",
            17.0,
            "publish rate in Hz (0 = follow the bag's or video's stamps)",
            min=0.0,
            max=240.0,
        ),
        Param("loop", False, "start again at the end of the input"),
        Param("limit", 0, "stop after this many frames (0 = all)", min=0, max=10_000_000),
        Param(
            "stamp_mode",
            "original",
            "header stamps: 'original' keeps the input's stamps, "
            "'now' stamps each frame when it is published (as a live camera)",
            choices=("original", "now"),
        ),
        Param("frame_id", "camera", "header frame id of the published images"),
        Param(
            "wait_for_subscribers",
            0,
            "hold the first frame until this many subscribers "
            "have matched (best-effort frames sent before that are lost)",
            min=0,
            max=100,
        ),
        Param(
            "wait_timeout",
            10.0,
            "give up waiting for subscribers after this many seconds",
            min=0.0,
            max=600.0,
        ),
    ),
)

COMPRESSOR = NodeSpec(
    name="compressor",
    executable="compressor_node",
    side="vehicle",
    description="Downsamples and encodes camera images into Frames for the cloud",
    params=(
        Param(
            "scale",
            4,
            "downsampling factor (area interpolation)",
            min=1,
            max=max(SCALES),
            step=1,
            choices=SCALES,
        ),
        Param(
            "kernel",
            "area",
            "downsampling kernel: 'area' (cv2.INTER_AREA, the mean of each scale x scale block) "
            "or 'bilinear_noaa' (cv2.INTER_LINEAR, no antialiasing: the centre 2x2 pixels of "
            "each 4x4 block, as cityscapes_lr was made); BENCHMARKS.md, 'Downsampling kernel'",
            choices=DOWNSAMPLE_KERNELS,
        ),
        Param("codec", "h264", "payload codec", choices=CODEC_CHOICES),
        Param(
            "bitrate_kbps",
            0,
            "H.264 target bitrate in kbit/s (0 = constant quality, crf)",
            min=0,
            max=100_000,
        ),
        Param(
            "crf",
            25,
            "H.264 constant rate factor when bitrate_kbps is 0 (with preset veryfast: about "
            "480 kbit/s at 4x on the Cityscapes clips, cloudseg bench codec)",
            min=0,
            max=51,
        ),
        Param(
            "maxrate_kbps",
            0,
            "H.264 cap on the crf mode's rate in kbit/s over a 0.5 s VBV buffer (0 = no cap)",
            min=0,
            max=100_000,
        ),
        Param(
            "gop",
            17,
            "H.264 keyframe interval in frames (1: every frame a stream of its own)",
            min=1,
            max=1000,
        ),
        Param(
            "intra_refresh",
            False,
            "H.264 periodic intra refresh (every gop frames) instead of periodic IDRs: no IDR "
            "bursts; forced KEY frames are still IDRs",
        ),
        Param(
            "preset",
            "veryfast",
            "libx264 preset (veryfast: ~40% fewer bits than ultrafast at the same CRF, ~3.3 ms "
            "per 512x256 frame on one core)",
            choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium"),
        ),
        Param("quality", 80, "JPEG quality (PNG: compression level 0..9)", min=0, max=100),
        Param(
            "publish_compressed",
            True,
            "also publish JPEG/PNG frames as sensor_msgs/CompressedImage on "
            f"{COMPRESSED_TOPIC} (the low-resolution stream, for stock viewers)",
        ),
    ),
    live=frozenset(
        (
            "scale",
            "kernel",
            "codec",
            "bitrate_kbps",
            "crf",
            "maxrate_kbps",
            "gop",
            "intra_refresh",
            "preset",
            "quality",
            "publish_compressed",
        )
    ),
    ready=(Endpoint("compressor", "sub", KNOB_TOPIC),),
)

FRAME_SELECTOR = NodeSpec(
    name="frame_selector",
    executable="vehicle_node",
    side="vehicle",
    description="Two-level frame selection: KEY frames (an H.264 IDR), USEFUL frames "
    "(P-frames) and STALE frames (not sent); runs in the vehicle process in front of the "
    "compressor",
    params=(
        Param(
            "mode",
            "pixel",
            "deviation measure: 'pixel' (grey difference of a small copy), 'learned' (predicted "
            "fraction of labels changed), 'off' (send every frame)",
            choices=("pixel", "learned", "off"),
        ),
        Param(
            "key_threshold",
            0.0,
            "deviation from the last KEY or last sent frame that makes a KEY frame "
            "(0 together with useful_threshold 0: the mode's default)",
            min=0.0,
            max=1.0,
        ),
        Param(
            "useful_threshold",
            0.0,
            "deviation from the last sent frame that makes a USEFUL frame (else STALE, not "
            "sent); at most key_threshold",
            min=0.0,
            max=1.0,
        ),
        Param(
            "max_key_interval",
            1.0,
            "a KEY frame at least every this many seconds of capture time",
            min=0.0,
            max=600.0,
        ),
        Param(
            "max_gap",
            0.5,
            "a frame sent at least every this many seconds of capture time",
            min=0.0,
            max=600.0,
        ),
        Param(
            "max_fps",
            0.0,
            "send at most this many frames per second of capture time (0 = no cap)",
            min=0.0,
            max=240.0,
        ),
        Param(
            "learned_weights",
            "default",
            "weights of the learned measure: 'default' (weights/selector_learned.pth) or a "
            "checkpoint path (cloudseg train selector)",
        ),
    ),
    live=frozenset(
        ("mode", "key_threshold", "useful_threshold", "max_key_interval", "max_gap", "max_fps")
    ),
    ready=(Endpoint("frame_selector", "sub", IMAGE_TOPIC),),
)

CAMERA_LABELS = NodeSpec(
    name="camera_labels",
    executable="camera_labels_node",
    side="vehicle",
    description="For every camera frame, publishes the newest labels from the cloud with the "
    "camera frame's stamp, and their age and source frame",
    params=(
        Param(
            "warp",
            False,
            "move the labels to the current frame along dense optical flow (OpenCV Farneback)",
        ),
    ),
    live=frozenset(("warp",)),
    ready=(Endpoint("camera_labels", "sub", LABELS_TOPIC),),
)

VEHICLE = NodeSpec(
    name="vehicle",
    executable="vehicle_node",
    side="vehicle",
    description="The frame_selector, compressor and camera_labels nodes in one process: each "
    "camera image crosses DDS once",
    params=FRAME_SELECTOR.params + COMPRESSOR.params + CAMERA_LABELS.params,
    live=FRAME_SELECTOR.live | COMPRESSOR.live | CAMERA_LABELS.live,
    composes=(FRAME_SELECTOR.name, COMPRESSOR.name, CAMERA_LABELS.name),
    ready=(
        Endpoint("frame_selector", "sub", IMAGE_TOPIC),
        Endpoint("compressor", "pub", FRAMES_TOPIC),
        Endpoint("camera_labels", "sub", LABELS_TOPIC),
    ),
)

# The cloud pipeline's models and device: the segmentation node's (it owns the models in the
# cloud process); a split cloud's sr node, on its own, takes them too (restoring only).
BACKEND = Param("backend", "espnetv2", "segmentation model", choices=("espnetv2", "icnet"))
SR_WEIGHTS = Param(
    "sr_weights",
    "default",
    "SR weights: 'default' (this project's CARN-M fine-tuned for the default stream and "
    "segmenter, weights/carn_m_ft.pth), 'div2k' (the official CARN-M), or the path of a "
    "checkpoint with a model card (cloudseg train)",
)
SEG_WEIGHTS = Param(
    "seg_weights",
    DEFAULT_ROUTE.seg_weights,
    f"segmenter weights: '{DEFAULT_ROUTE.seg_weights}' (the default route's, "
    f"{DEFAULT_ROUTE.description}; a backend without them uses its own default), 'city' (the "
    "official ESPNetv2), 'default' (the backend's registry default), or the path of a "
    "checkpoint with a model card (cloudseg train stream)",
)
DEVICE = Param("device", "auto", "torch device", choices=("auto", "cpu", "cuda"))
DTYPE = Param(
    "dtype",
    "fp16",
    "precision on CUDA (the CPU runs fp32)",
    choices=("fp32", "fp16", "bf16"),
)
ALLOW_UNTRAINED = Param(
    "allow_untrained", False, "run a model without weights (random; every output says so)"
)

#: The cloud's `inference` choices: the one place they are listed (cloudseg.cloud.inference
#: builds them): this process's pipeline, or Triton Inference Servers over gRPC.
INFERENCE_CHOICES = ("local", "triton")
#: How the Triton client picks a server for each batch (cloudseg.triton.client).
TRITON_POLICIES = ("round_robin", "least_outstanding")

#: The cloud process's many-vehicle parameters (the sr node's, composed only).
FLEET_PARAMS = (
    Param(
        "streams",
        "",
        "namespaces of the vehicle streams to serve, comma-separated (e.g. '/car1,/car2'; '/' "
        "is the root namespace's stream); empty: discover them (every <ns>/cloudseg/frames "
        "topic of type cloudseg/msg/Frame with a publisher, plus the root's)",
    ),
    Param(
        "discovery_period_s",
        1.0,
        "scan the ROS graph for new streams (and forget idle ones) this often",
        min=0.1,
        max=600.0,
    ),
    Param(
        "stream_idle_s",
        30.0,
        "forget a stream (its decoders, sequence and counters) after this long without a frame",
        min=1.0,
        max=86_400.0,
    ),
    Param(
        "max_batch",
        8,
        "at most this many frames (the newest of as many streams) per inference batch",
        min=1,
        max=256,
    ),
    Param(
        "max_wait_ms",
        5.0,
        "run a batch at most this long after its first frame arrived, however full",
        min=0.0,
        max=10_000.0,
    ),
    Param(
        "inference",
        "local",
        "where batches run: 'local' (this process's pipeline on `device`); 'triton' (Triton "
        "Inference Servers at `triton_urls`, over gRPC, with failover: models from `cloudseg "
        "export triton` for the vehicles' camera size; labels only, no restored image or "
        "overlay)",
        choices=INFERENCE_CHOICES,
    ),
    Param(
        "triton_urls",
        "localhost:8001",
        "with inference 'triton': the servers' gRPC addresses, comma-separated host:port "
        "(e.g. 'gpu1:8001,gpu2:8001')",
    ),
    Param(
        "triton_policy",
        "round_robin",
        "with inference 'triton': which server takes each batch ('round_robin', or "
        "'least_outstanding': the one with the fewest requests in flight)",
        choices=TRITON_POLICIES,
    ),
    Param(
        "triton_timeout_s",
        10.0,
        "with inference 'triton': deadline of one request; a server that does not answer in "
        "time is marked down (the batch goes to another; it is asked again every few seconds)",
        min=0.1,
        max=600.0,
    ),
)

SR = NodeSpec(
    name="sr",
    executable="sr_node",
    side="cloud",
    description="Decodes Frames and restores them (super-resolution or bilinear); in the "
    "cloud process it serves every vehicle stream (namespace) with its own decoders, batches "
    "the newest frame of each and segments them with the segmentation node's models; on its "
    "own it restores the root stream newest frame first and publishes the restored image",
    params=(
        Param(
            "restore",
            DEFAULT_ROUTE.mode,
            "'sr': CARN-M super-resolution; 'bilinear': bilinear x2 (the Knob's sr_bypass "
            f"switches between them); default: the default route's ({DEFAULT_ROUTE.name}: "
            f"{DEFAULT_ROUTE.description})",
            choices=("sr", "bilinear"),
        ),
        Param("publish_restored", True, "publish the restored image on cloudseg/restored"),
        Param(
            "max_width",
            4096,
            "largest camera width a Frame may claim (wider frames are dropped before anything "
            "is decoded or allocated)",
            min=16,
            max=16384,
        ),
        Param(
            "max_height",
            4096,
            "largest camera height a Frame may claim",
            min=16,
            max=16384,
        ),
        Param(
            "scales",
            list(SCALES),
            "downsampling factors accepted from the vehicle (frames at others are dropped); "
            "the cloud keeps one pipeline per scale it meets",
            choices=SCALES,
        ),
        # on its own only (in the cloud process the segmentation node's models apply)
        Param(
            "restored_size",
            "segmenter",
            "size of the published image: 'segmenter' (what the segmentation node segments: "
            "the backend's trained resolution, at most cpu_max_width wide on CPU; a split "
            "cloud), 'camera' (the camera size, at most cpu_max_width wide on CPU; the "
            "bilinear baseline)",
            choices=("segmenter", "camera"),
        ),
        BACKEND,
        Param(
            "sr_model",
            "carn_m",
            "super-resolution model ('none' = bilinear only, whatever restore or the Knob say)",
            choices=("carn_m", "carn", "none"),
        ),
        SR_WEIGHTS,
        SEG_WEIGHTS,
        DEVICE,
        DTYPE,
        Param(
            "cpu_max_width",
            1024,
            "on CPU, restore at most this wide (as the cloud process does; the segmentation "
            "node scales its labels back to the camera size); 0 = no cap",
            min=0,
            max=8192,
        ),
        ALLOW_UNTRAINED,
        *FLEET_PARAMS,
    ),
    live=frozenset(("restore", "publish_restored")),
    ready=(Endpoint("sr", "sub", FRAMES_TOPIC), Endpoint("sr", "pub", STATS_TOPIC)),
    standalone=frozenset(
        (
            "restored_size",
            "backend",
            "sr_model",
            "sr_weights",
            "seg_weights",
            "device",
            "dtype",
            "cpu_max_width",
            "allow_untrained",
        )
    ),
    composed_only=frozenset(p.name for p in FLEET_PARAMS),
)

SEGMENTATION = NodeSpec(
    name="segmentation",
    executable="segmentation_node",
    side="cloud",
    description="Segments the SR pyramid handed over in the cloud process, or (run on its own) "
    "the newest image on cloudseg/restored in a worker thread; publishes labels (at the "
    "camera size), overlay and timings",
    params=(
        BACKEND,
        Param(
            "sr_model",
            "carn_m",
            "super-resolution model of the cloud process's pipeline ('none' = bilinear only)",
            choices=("carn_m", "carn", "none"),
        ),
        SR_WEIGHTS,
        SEG_WEIGHTS,
        DEVICE,
        DTYPE,
        Param(
            "cpu_max_width",
            1024,
            "on CPU, run SR + segmentation at most this wide (labels are scaled back to the "
            "camera size; the segmenter's trained resolution, 1024 for ESPNetv2, applies "
            "first); 0 = no cap",
            min=0,
            max=8192,
        ),
        ALLOW_UNTRAINED,
        Param("overlay_alpha", 0.5, "weight of the label colours in the overlay", min=0.0, max=1.0),
    ),
    live=frozenset(("overlay_alpha",)),
    ready=(Endpoint("segmentation", "sub", RESTORED_TOPIC),),
)

CLOUD = NodeSpec(
    name="cloud",
    executable="cloud_node",
    side="cloud",
    description="The sr and segmentation nodes in one process: the SR pyramid goes to the "
    "segmenter in process, on the GPU, never through DDS",
    params=SR.declared(composed=True) + SEGMENTATION.params,
    live=SR.live | SEGMENTATION.live,
    composes=(SR.name, SEGMENTATION.name),
    ready=(
        Endpoint("segmentation", "pub", LABELS_TOPIC),
        Endpoint("sr", "sub", FRAMES_TOPIC),
    ),
)

CONTROLLER = NodeSpec(
    name="controller",
    executable="controller_node",
    side="vehicle",
    description="Adaptive controller: measures goodput, loss, latency trend, cloud time and an "
    "online accuracy estimate from cloudseg/stats; picks a profile entry and publishes Knob",
    params=(
        Param("profile", "", "profile file (cloudseg profile); empty = config/profile.json"),
        Param("window_s", 1.0, "measurement window: one decision per window", min=0.1, max=60.0),
        Param(
            "safety", 0.8, "use at most this fraction of the measured goodput", min=0.05, max=1.0
        ),
        Param(
            "latency_bound_ms",
            500.0,
            "predicted transport + cloud time per frame an entry must fit (0 = no bound)",
            min=0.0,
            max=60_000.0,
        ),
        Param(
            "start_kbps",
            500.0,
            "start at the most accurate entry under this rate (0 = the lowest entry); 500: "
            "about the compressor's default stream (x4, veryfast CRF 25)",
            min=0.0,
            max=1_000_000.0,
        ),
        Param("hold_s", 5.0, "no step up sooner than this after a change", min=0.0, max=600.0),
        Param("up_windows", 3, "good windows in a row before a probe up", min=1, max=100),
        Param(
            "bad_windows",
            2,
            "bad windows (loss, rising latency) in a row before a step down",
            min=1,
            max=100,
        ),
        Param("loss_bad", 0.05, "a window with more loss is bad", min=0.0, max=1.0),
        Param(
            "loss_severe", 0.3, "a window with this much loss steps down at once", min=0.0, max=1.0
        ),
        Param(
            "trend_bad_ms_per_s",
            50.0,
            "a window whose transport latency rises faster than this (ms per s) is bad",
            min=0.0,
            max=100_000.0,
        ),
        Param(
            "stall_s",
            1.0,
            "no stats for this long (after some arrived; at least 3x the cloud's time per "
            "frame): step to the lowest entry. Under 2 s: best-effort UDP collapses within "
            "about that when the sender outruns the link",
            min=0.1,
            max=600.0,
        ),
        Param(
            "probe_backoff_s",
            20.0,
            "a failed probe up is not retried for this long (doubling each time)",
            min=0.0,
            max=3600.0,
        ),
        Param(
            "accuracy_floor",
            0.6,
            "worst case below this accuracy estimate (confirmed twice): bypass SR, then raise "
            "the resolution (0 = off)",
            min=0.0,
            max=1.0,
        ),
        Param(
            "accuracy_hold_s", 30.0, "how long the worst-case setting is kept", min=0.0, max=3600.0
        ),
        Param(
            "full_frame_every_s",
            10.0,
            "online profiling: ask for one full-resolution frame this often (0 = never)",
            min=0.0,
            max=3600.0,
        ),
        Param(
            "full_frame_min_kbps",
            3000.0,
            "online profiling only while the goodput is at least this (a full-resolution IDR "
            "blocks a thin link for about a second)",
            min=0.0,
            max=1_000_000.0,
        ),
        Param(
            "climb_factor",
            2.0,
            "a step up goes to the most accurate entry at most this x the current rate (several "
            "entries at once; 1 = the next entry only)",
            min=1.0,
            max=100.0,
        ),
        Param(
            "ceiling_s",
            15.0,
            "after a step down, no step up above safety x the goodput the link carried when it "
            "was overrun, for this long (0 = off)",
            min=0.0,
            max=3600.0,
        ),
    ),
    live=frozenset(
        (
            "safety",
            "latency_bound_ms",
            "hold_s",
            "up_windows",
            "bad_windows",
            "loss_bad",
            "loss_severe",
            "trend_bad_ms_per_s",
            "stall_s",
            "probe_backoff_s",
            "accuracy_floor",
            "accuracy_hold_s",
            "full_frame_every_s",
            "full_frame_min_kbps",
            "climb_factor",
            "ceiling_s",
        )
    ),
    ready=(Endpoint("controller", "sub", STATS_TOPIC),),
)

NODES: dict[str, NodeSpec] = {
    n.name: n
    for n in (
        SOURCE,
        FRAME_SELECTOR,
        COMPRESSOR,
        CAMERA_LABELS,
        VEHICLE,
        SR,
        SEGMENTATION,
        CLOUD,
        CONTROLLER,
    )
}

CONFIG_DIR_NAME = "config"

#: Which nodes each launch file / `cloudseg run` target starts, and with which config file.
GRAPHS: dict[str, tuple[tuple[str, str], ...]] = {
    "vehicle": (("vehicle", "vehicle.yaml"),),
    "cloud": (("cloud", "cloud.yaml"),),
    "cloud_split": (("sr", "cloud_split.yaml"), ("segmentation", "cloud_split.yaml")),
    "cloud_bilinear": (("sr", "cloud_bilinear.yaml"),),  # the LR-bilinear baseline
    "pipeline": (
        ("source", "source.yaml"),
        ("vehicle", "vehicle.yaml"),
        ("cloud", "cloud.yaml"),
        ("controller", "controller.yaml"),
    ),
    "controller": (("controller", "controller.yaml"),),
}


def config_dir() -> Path:
    """The folder holding the parameter files: the source tree's, or the installed share/."""
    here = Path(__file__).resolve()
    for candidate in (
        here.parents[2] / CONFIG_DIR_NAME,  # source checkout: <repo>/src/cloudseg/graph.py
        here.parents[4] / "share" / PACKAGE / CONFIG_DIR_NAME,  # <prefix>/lib/pythonX/site-packages
    ):
        if candidate.is_dir():
            return candidate
    try:  # a sourced ROS workspace
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE)) / CONFIG_DIR_NAME
    except Exception as exc:
        raise FileNotFoundError(f"cannot find the {PACKAGE} config folder") from exc
