"""CARN / CARN-M: official checkpoint layout, real-image quality, multi-scale pyramid."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cloudseg.models.carn import CARN, carn, carn_m, clamp_sr, upscale_image
from cloudseg.models.weights import load_state_dict_file

FRAME = "cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"


def parse_keys(path: Path) -> dict[str, tuple[int, ...]]:
    """key -> shape from a ``key<TAB>shape<TAB>dtype`` listing (``#`` lines are comments)."""
    out: dict[str, tuple[int, ...]] = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _dtype = line.split("\t")
        out[key] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def official(shared_data: Path) -> CARN:
    model = carn_m()
    model.load_state_dict(
        load_state_dict_file(shared_data / "weights/carn/carn_m.pth"), strict=True
    )
    return model.eval()


@pytest.fixture(scope="module")
def frame(shared_data: Path) -> np.ndarray:
    bgr = cv2.imread(str(shared_data / FRAME), cv2.IMREAD_COLOR)
    assert bgr is not None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_carn_m_layout_matches_official_listing(shared_data: Path) -> None:
    listing = parse_keys(shared_data / "weights/carn/carn_m.keys.txt")
    state = carn_m().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == listing
    assert sum(v.numel() for v in state.values()) == 414_811


def test_full_carn_layout_matches_official_listing(shared_data: Path) -> None:
    listing = parse_keys(shared_data / "weights/carn.keys.txt")
    state = carn().state_dict()
    assert list(state) == list(listing)  # same order too, as the official module tree
    assert {k: tuple(v.shape) for k, v in state.items()} == listing
    assert sum(v.numel() for v in state.values()) == 1_591_963


def test_carn_m_reuses_one_residual_block_three_times(official: CARN) -> None:
    calls: list[int] = []
    official.b2.b1.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        official(torch.rand(1, 3, 8, 8), 2)
    official.b2.b1._forward_hooks.clear()
    assert len(calls) == 3
    assert not hasattr(official.b2, "b2")


@pytest.mark.parametrize(("x0", "y0"), [(768, 384), (512, 256)])
def test_sr_beats_bilinear_after_area_downsampling(
    official: CARN, frame: np.ndarray, x0: int, y0: int
) -> None:
    hr = frame[y0 : y0 + 128, x0 : x0 + 256]
    lr = cv2.resize(hr, (64, 32), interpolation=cv2.INTER_AREA)
    sr = upscale_image(official, lr, 4)
    assert sr.shape == hr.shape and sr.dtype == np.uint8
    bilinear = cv2.resize(lr, (256, 128), interpolation=cv2.INTER_LINEAR)
    gain = psnr(sr, hr) - psnr(bilinear, hr)
    assert gain > 1.0, f"CARN-M gains only {gain:.2f} dB over bilinear"


def test_reproduces_provenance_figure(official: CARN, frame: np.ndarray) -> None:
    """PROVENANCE: 30.26 dB vs bicubic 28.19 dB; the LR there was made with PIL's
    (antialiased) bicubic, 512x256 crop at (512, 256). cv2.INTER_CUBIC does not antialias."""
    image = pytest.importorskip("PIL.Image")
    hr = frame[256:512, 512:1024]
    lr = np.asarray(image.fromarray(hr).resize((128, 64), image.BICUBIC))
    sr = upscale_image(official, lr, 4)
    bicubic = cv2.resize(lr, (512, 256), interpolation=cv2.INTER_CUBIC)
    assert psnr(bicubic, hr) == pytest.approx(28.19, abs=0.05)
    assert psnr(sr, hr) == pytest.approx(30.26, abs=0.1)


def test_pyramid_runs_body_once_and_matches_forward(official: CARN, frame: np.ndarray) -> None:
    lr = torch.from_numpy(frame[400:424, 800:832].copy()).permute(2, 0, 1)[None].float() / 255
    calls: list[int] = []
    hook = official.entry.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        pyramid = official.forward_pyramid(lr, scales=(2, 4))
    hook.remove()
    assert calls == [1]
    assert set(pyramid) == {2, 4}
    with torch.no_grad():
        assert torch.equal(pyramid[4], official(lr, 4))
        assert torch.equal(pyramid[2], official(lr, 2))
        clamped = official.forward_pyramid(lr, scales=(4,), clamp=True)[4]
    assert torch.equal(clamped, clamp_sr(pyramid[4]))
    assert pyramid[2].shape == (1, 3, 48, 64) and pyramid[4].shape == (1, 3, 96, 128)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shapes(official: CARN, scale: int) -> None:
    with torch.no_grad():
        out = official(torch.rand(2, 3, 10, 12), scale)
    assert out.shape == (2, 3, 10 * scale, 12 * scale)


def test_scale_subset_and_bad_input() -> None:
    model = carn_m(scales=(2, 4))
    assert hasattr(model.upsample, "up4") and not hasattr(model.upsample, "up3")
    with pytest.raises(ValueError, match="scale 3 not available"):
        model(torch.rand(1, 3, 8, 8), 3)
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        model(torch.rand(3, 8, 8), 2)
    with pytest.raises(ValueError, match="float"):
        model(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="subset"):
        CARN(scales=(2, 5))
    with pytest.raises(ValueError, match="uint8"):
        upscale_image(model, np.zeros((8, 8, 3), np.float32), 2)


def test_mean_shift_is_frozen_and_identity() -> None:
    model = carn()
    assert not any(p.requires_grad for p in model.sub_mean.parameters())
    x = torch.rand(1, 3, 4, 4)
    assert torch.allclose(model.add_mean(model.sub_mean(x)), x, atol=1e-6)
