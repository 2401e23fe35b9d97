"""The routes from the decoded stream to labels: one list, the cloud's default taken from it,
their committed weights and cards; the compressor's downsampling kernel."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudseg.graph import COMPRESSOR, DOWNSAMPLE_KERNELS, SEGMENTATION, SR
from cloudseg.media.stream import CompressorSettings, StreamRoundTrip
from cloudseg.routes import DEFAULT_ROUTE, ROUTES, seg_weights_for

REPO = Path(__file__).resolve().parents[1]


def test_the_cloud_defaults_are_the_default_route() -> None:
    assert DEFAULT_ROUTE in ROUTES.values() and DEFAULT_ROUTE.learned
    assert SR.defaults()["restore"] == DEFAULT_ROUTE.mode
    assert SEGMENTATION.defaults()["seg_weights"] == DEFAULT_ROUTE.seg_weights
    assert SR.defaults()["seg_weights"] == DEFAULT_ROUTE.seg_weights


def test_a_backend_without_the_route_weights_keeps_its_own() -> None:
    assert seg_weights_for("icnet", DEFAULT_ROUTE.seg_weights) == "default"
    assert seg_weights_for("espnetv2", DEFAULT_ROUTE.seg_weights) == DEFAULT_ROUTE.seg_weights
    assert seg_weights_for("icnet", "/some/file.pth") == "/some/file.pth"


@pytest.mark.parametrize("name", [n for n, r in ROUTES.items() if r.learned])
def test_learned_routes_ship_weights_with_cards(name: str) -> None:
    from cloudseg.models.registry import get_spec
    from cloudseg.models.weights import sha256_file

    route = ROUTES[name]
    infos = []
    if route.sr_weights not in (None, "div2k"):
        infos.append(get_spec("carn_m").weights[route.sr_weights])
    if route.seg_weights != "city":
        infos.append(get_spec(route.segmenter).weights[route.seg_weights])
    assert infos
    for info in infos:
        path = REPO / "weights" / info.filename
        assert path.is_file(), f"{name}: {path} is not committed"
        assert path.stat().st_size < 2_000_000
        card = json.loads(path.with_suffix(".json").read_text())
        assert card["steps"] > 0 and card["metrics"]["val_miou"] > 0
        assert card["degradation"]["kernel"].startswith("bilinear_noaa")  # the data's kernel
        assert "evaluation" in card  # figures on frames never trained on
        assert info.sha256 is not None and sha256_file(path) == info.sha256


def test_kernel_is_a_compressor_parameter(shared_data: Path) -> None:
    rgb = cv2.cvtColor(
        cv2.imread(
            str(
                shared_data
                / "cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000576_leftImg8bit.png"
            )
        ),
        cv2.COLOR_BGR2RGB,
    )
    assert COMPRESSOR.param("kernel").default == "area"
    assert set(DOWNSAMPLE_KERNELS) == set(COMPRESSOR.param("kernel").choices)
    decoded = {}
    for kernel in DOWNSAMPLE_KERNELS:
        roundtrip = StreamRoundTrip(CompressorSettings(kernel=kernel, crf=18))
        decoded[kernel] = roundtrip(rgb).astype(int)
    area = cv2.resize(rgb, (512, 256), interpolation=cv2.INTER_AREA).astype(int)
    linear = cv2.resize(rgb, (512, 256), interpolation=cv2.INTER_LINEAR).astype(int)
    # each stream carries its own kernel's image, not the other's
    assert np.abs(decoded["area"] - area).mean() < np.abs(decoded["area"] - linear).mean()
    assert (
        np.abs(decoded["bilinear_noaa"] - linear).mean()
        < np.abs(decoded["bilinear_noaa"] - area).mean()
    )
    with pytest.raises(ValueError, match="unknown kernel"):
        CompressorSettings(kernel="nearest")
