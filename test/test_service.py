"""CloudService: decode + SR + segmentation of one stream, as the segmentation node uses it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cloudseg.media.stream import CompressorSettings, FrameCompressor
from cloudseg.restore.service import CloudService


@pytest.fixture(scope="module")
def frame(shared_data):
    path = shared_data / "sequences" / "aachen_seq0000" / "aachen_000000_000000_leftImg8bit.jpg"
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_labels_at_camera_size_from_an_encoded_frame(shared_data, frame, monkeypatch):
    monkeypatch.setenv("CLOUDSEG_WEIGHTS", str(shared_data / "weights"))
    service = CloudService(device="cpu", cpu_max_width=256)
    c = FrameCompressor(CompressorSettings(scale=4)).compress(frame)
    result = service.process(c.payload, c.codec, 0, c.scale, c.width, c.height)
    assert result.labels.shape == (1024, 2048) and result.labels.dtype == np.uint8
    assert result.mode == "sr" and not result.untrained
    assert result.restored.shape == (128, 256, 3)  # the CPU mode segmented at 256 px wide
    road = result.labels[900:, 700:1300]  # the road in front of the car
    assert np.mean(road == 0) > 0.5
    assert result.overlay().shape == result.restored.shape
    bypass = service.process(c.payload, c.codec, 1, c.scale, c.width, c.height, sr_bypass=True)
    assert bypass.mode == "bilinear"


def test_untrained_model_is_flagged_on_every_output(frame):
    service = CloudService(
        sr_model=None, backend="icnet", device="cpu", cpu_max_width=128, allow_untrained=True
    )
    c = FrameCompressor(CompressorSettings(scale=4, codec="jpeg")).compress(frame)
    result = service.process(c.payload, c.codec, 0, c.scale, c.width, c.height)
    assert result.untrained
    plain = result.restored.copy()
    assert not np.array_equal(result.overlay(alpha=0.0), plain)  # the warning is drawn


def test_icnet_without_weights_is_refused(monkeypatch, tmp_path):
    from cloudseg.models.weights import WeightsError

    monkeypatch.setenv("CLOUDSEG_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("CLOUDSEG_OFFLINE", "1")
    with pytest.raises((WeightsError, ValueError), match="icnet"):
        CloudService(sr_model=None, backend="icnet", device="cpu")
