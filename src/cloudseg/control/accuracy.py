"""Online profiling on the cloud side: the accuracy estimate of the controller.

Now and then the controller asks the vehicle for one frame at full resolution (Knob
``request_full_frame``). When the cloud receives it while the stream runs at scale k > 1, it
segments the full frame as usual and also the same frame as the stream would have delivered it:
downsampled by k (the compressor's default kernel), coded as one H.264 IDR at the stream's
CRF with the compressor's default preset when the stream is H.264 with constant quality (a CBR
stream's rate cannot be reproduced on a lone frame: then no codec), and restored as the stream
is (SR or bilinear), by the cloud's own pipeline (its default route). The share of
pixels whose labels agree is the estimate (no ground truth needed; the full frame's labels are
the reference, as `cloudseg profile` does without ground truth). No ROS here.
"""

from __future__ import annotations

import numpy as np

from cloudseg.media.resize import downsample
from cloudseg.media.stream import default_compressor_settings, make_decoder, make_encoder


def label_agreement(labels: np.ndarray, reference: np.ndarray) -> float:
    """The share of pixels with the same label (0..1); the shapes must match."""
    if labels.shape != reference.shape:
        raise ValueError(f"label shapes differ: {labels.shape} vs {reference.shape}")
    return float(np.mean(labels == reference))


def as_streamed(rgb: np.ndarray, scale: int, crf: int | None) -> np.ndarray:
    """A full-resolution frame as the stream delivers it before restoration: downsampled by
    `scale` and, when `crf` is given, coded as one H.264 IDR at that CRF and decoded."""
    compressor = default_compressor_settings()  # the vehicle's kernel and preset
    small = downsample(rgb, scale, compressor.kernel)
    if crf is None:
        return small
    small = np.ascontiguousarray(small[: small.shape[0] & ~1, : small.shape[1] & ~1])
    encoder = make_encoder("h264", crf=int(crf), gop=1, preset=compressor.preset)
    encoded = encoder.encode(small)
    decoded = make_decoder("h264").decode(encoded.payload, 0)
    return small if decoded is None else decoded


def estimate_accuracy(
    service, rgb: np.ndarray, full_labels: np.ndarray, scale: int, sr_bypass: bool, crf: int | None
) -> float:
    """Label agreement of the frame restored from the stream's scale with the full frame's
    labels. `service`: a cloudseg.cloud.service.CloudService."""
    lr = as_streamed(rgb, scale, crf)
    height, width = full_labels.shape[:2]
    result = service.segment_lr(lr, scale, width, height, sr_bypass)
    return label_agreement(result.labels, full_labels)
