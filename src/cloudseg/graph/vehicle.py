"""The vehicle's nodes: source, frame_selector, compressor, camera_labels and the vehicle
process composing the last three; the choices of the stream it sends."""

from __future__ import annotations

from cloudseg.graph.schema import Endpoint, NodeSpec, Param
from cloudseg.graph.topics import (
    BAG_IMAGE_TOPIC,
    COMPRESSED_TOPIC,
    FRAMES_TOPIC,
    IMAGE_TOPIC,
    KNOB_TOPIC,
    LABELS_TOPIC,
)

#: The payload codecs (cloudseg.media.codecs implements them).
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
            "wait_for_graph",
            "",
            "hold the first frame until the other processes of this graph (cloudseg.graph "
            "GRAPHS: 'pipeline', 'vehicle') are up, as `cloudseg run` waits for their `ready` "
            "endpoints in this node's namespace; empty = do not wait (the launch files set it)",
        ),
        Param(
            "wait_timeout",
            10.0,
            "give up waiting for the graph and the subscribers after this many seconds",
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
            "each 4x4 block, as cityscapes_lr was made); "
            "docs/benchmarks/accuracy.md, 'Downsampling kernel'",
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
            "max_frame_bytes",
            0,
            "a fixed per-frame size budget in bytes (0 = none): H.264 frames are encoded under a "
            "VBV of one frame's budget, a frame over it is not sent and the next is an IDR; "
            "a Knob's max_frame_bytes (the controller's) lowers it further",
            min=0,
            max=10_000_000,
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
            "link_timeout",
            10.0,
            "vehicle process: after this many seconds with no subscriber on the frames topic, or "
            "no stats back for frames sent, say the link is down (one line) and recover "
            "(cloudseg.link_health); 0 = no watch",
            min=0.0,
            max=600.0,
        ),
        Param(
            "link_retry",
            3.0,
            "vehicle process, TCP profile: while nothing matches and the cloud's port accepts "
            "connections, re-create the DDS participant every this many seconds",
            min=1.0,
            max=3600.0,
        ),
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
            "max_frame_bytes",
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
    "camera frame's stamp (mono8, and coloured for subscribers), and their age and source frame",
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
