"""CloudService: decode + SR + segmentation of one stream, as the segmentation node uses it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cloudseg.cloud.service import CloudService
from cloudseg.media.stream import CompressorSettings, FrameCompressor


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


def test_restore_only_service_and_split_segmentation_give_camera_size_labels(
    shared_data, frame, monkeypatch
):
    """The split cloud: the sr process restores (no segmenter) to the size the segmentation
    process segments at; that one scales its labels back to the camera size it is told."""
    monkeypatch.setenv("CLOUDSEG_WEIGHTS", str(shared_data / "weights"))
    sr = CloudService(device="cpu", cpu_max_width=256, restore_only=True)
    assert sr.first.segmenter is None
    c = FrameCompressor(CompressorSettings(scale=4)).compress(frame)
    lr, _ = sr.decode(c.payload, c.codec, 0, c.scale, c.width, c.height)
    image = sr.restore_image(lr, c.scale)
    assert image.rgb.shape == (128, 256, 3) and image.reduced_by == 8 and image.mode == "sr"
    assert sr.restore_image(lr, c.scale, sr_bypass=True).mode == "bilinear"
    seg = CloudService(sr_model=None, device="cpu", cpu_max_width=256)
    result = seg.segment_restored(image.rgb, (c.width, c.height))
    assert result.labels.shape == (1024, 2048) and result.work_labels.shape == (128, 256)
    assert np.mean(result.labels[900:, 700:1300] == 0) > 0.5  # the road in front of the car
    assert seg.segment_restored(image.rgb).labels.shape == (128, 256)  # no camera size: as is
    camera = CloudService(
        sr_model=None, device="cpu", cpu_max_width=None, restore_only=True, seg_size="full"
    )  # the bilinear baseline: the camera size
    assert camera.restore_image(lr, c.scale).rgb.shape == (1024, 2048, 3)
