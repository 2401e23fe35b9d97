"""The cloud's nodes: sr, segmentation and the cloud process composing them."""

from __future__ import annotations

from cloudseg.graph.schema import Endpoint, NodeSpec, Param
from cloudseg.graph.topics import (
    FRAMES_TOPIC,
    LABELS_TOPIC,
    RESTORED_TOPIC,
    STATS_TOPIC,
    TOPICS,
)
from cloudseg.graph.vehicle import SCALES
from cloudseg.routes import DEFAULT_ROUTE

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
DEVICE = Param(
    "device",
    "auto",
    "torch device: auto (CUDA where a GPU is usable, else the CPU), cpu, cuda or cuda:N",
    choices=("auto", "cpu", "cuda", *(f"cuda:{i}" for i in range(8))),
)
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
        f"is the root namespace's stream); empty: discover them (every <ns>/{FRAMES_TOPIC} "
        f"topic of type {TOPICS[FRAMES_TOPIC].type} with a publisher, plus the root's)",
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
        Param("publish_restored", True, f"publish the restored image on {RESTORED_TOPIC}"),
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
    f"the newest image on {RESTORED_TOPIC} in a worker thread; publishes labels (at the "
    "camera size; coloured for subscribers; their class names once, on label_info), overlay "
    "and timings",
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
