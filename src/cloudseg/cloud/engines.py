"""Where the cloud's batches run: `make_inference`, the one place that turns the node's
``inference`` parameter (`cloudseg.graph.INFERENCE_CHOICES`) into an `Inference`."""

from __future__ import annotations

from cloudseg.cloud.inference import Inference
from cloudseg.cloud.local import LocalInference
from cloudseg.cloud.service import CloudService
from cloudseg.graph import INFERENCE_CHOICES


def make_inference(
    kind: str,
    service: CloudService | None = None,
    overlay_alpha: float = 0.5,
    *,
    triton_urls: str = "localhost:8001",
    triton_policy: str = "round_robin",
    triton_timeout_s: float = 10.0,
    max_batch: int = 8,
) -> Inference:
    """The node's ``inference`` parameter -> an `Inference` (the one place that chooses):
    "local" runs ``service``'s pipelines here; "triton" sends each batch to the servers at
    ``triton_urls`` (comma-separated gRPC ``host:port``), picked by ``triton_policy``, each
    request with a deadline of ``triton_timeout_s``. ``max_batch``: the batcher's largest
    group (the local buckets and warm-up go up to it)."""
    if kind == "local":
        if service is None:
            raise ValueError("inference 'local' needs the cloud's pipelines (a CloudService)")
        return LocalInference(service, overlay_alpha, max_batch=max_batch)
    if kind == "triton":
        from cloudseg.triton.client import TritonInference  # lazy: needs tritonclient

        return TritonInference(triton_urls, triton_policy, triton_timeout_s)
    raise ValueError(
        f"inference {kind!r} is not available (choices: {', '.join(INFERENCE_CHOICES)})"
    )
