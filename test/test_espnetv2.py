"""ESPNetv2 port: strict loading of the official Cityscapes weights and reference accuracy."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cloudseg.models.espnetv2 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ESPNetv2InputError,
    espnetv2_seg,
    predict_train_ids,
    preprocess,
)

WEIGHTS = "weights/espnetv2/espnetv2_s_2.0_city_{}.pth"
MUNSTER = "cityscapes/{}/val/munster/munster_000061_000019_{}.png"


def _load(shared_data: Path, tag: str) -> torch.nn.Module:
    model = espnetv2_seg(s=2.0, num_classes=20)
    state = torch.load(shared_data / WEIGHTS.format(tag), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _miou_gt_classes(gt: np.ndarray, pred: np.ndarray, n: int = 19) -> float:
    """Mean IoU over the classes present in the ground truth (255 = ignore in GT).

    A prediction of 255 (background) on a valid GT pixel counts as a miss for that class.
    """
    valid = gt != 255
    g = gt[valid].astype(np.int64)
    p = np.minimum(pred[valid].astype(np.int64), n)  # n = "predicted ignore" column
    cm = np.bincount(g * (n + 1) + p, minlength=n * (n + 1)).reshape(n, n + 1)
    tp = np.diag(cm[:, :n]).astype(np.float64)
    gt_px, pred_px = cm.sum(1), cm[:, :n].sum(0)
    iou = tp / np.maximum(gt_px + pred_px - tp, 1)
    return float(iou[gt_px > 0].mean())


def test_miou_helper_on_known_case() -> None:
    gt = np.array([[0, 0, 1, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 2]], np.uint8)
    # class 0: tp 1, union 2 -> 0.5; class 1: tp 1, union 2 -> 0.5; class 2 absent from GT
    assert _miou_gt_classes(gt, pred) == pytest.approx(0.5)


@pytest.mark.parametrize("tag", ["1024x512", "512x256"])
def test_official_checkpoints_load_strictly(shared_data: Path, tag: str) -> None:
    model = espnetv2_seg()
    state = torch.load(shared_data / WEIGHTS.format(tag), map_location="cpu", weights_only=True)
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    ours = model.state_dict()
    assert all(ours[k].shape == v.shape for k, v in state.items())


def test_keys_match_listing(shared_data: Path) -> None:
    listing = shared_data / "weights/espnetv2/espnetv2_s_2.0_city_1024x512.keys.txt"
    expected = {}
    for line in listing.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape, _ = line.split("\t")
            expected[key] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    got = {k: tuple(v.shape) for k, v in espnetv2_seg().state_dict().items()}
    assert got == expected


def test_output_shape_and_determinism() -> None:
    torch.manual_seed(0)
    model = espnetv2_seg().eval()
    x = torch.randn(2, 3, 128, 256)
    with torch.inference_mode():
        a, b = model(x), model(x)
    assert a.shape == (2, 20, 128, 256)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    # batch items are independent
    with torch.inference_mode():
        single = model(x[1:])
    torch.testing.assert_close(single[0], a[1], rtol=1e-4, atol=1e-4)


def test_bad_inputs_raise() -> None:
    model = espnetv2_seg().eval()
    with pytest.raises(ESPNetv2InputError, match="multiples of 16"):
        model(torch.zeros(1, 3, 100, 200))
    with pytest.raises(ESPNetv2InputError, match="N x 3 x H x W"):
        model(torch.zeros(1, 1, 128, 256))
    with pytest.raises(ESPNetv2InputError, match="float"):
        model(torch.zeros(1, 3, 128, 256, dtype=torch.uint8))
    with pytest.raises(ESPNetv2InputError, match="uint8"):
        preprocess(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ESPNetv2InputError, match="H x W x 3"):
        preprocess(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="unsupported width scale"):
        espnetv2_seg(s=3.0)


def test_preprocess_normalises_and_resizes() -> None:
    rgb = np.zeros((4, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 0
    x = preprocess(rgb)
    assert x.shape == (1, 3, 4, 8) and x.dtype == torch.float32
    pixel = (1.0, 128 / 255, 0.0)
    want = [(v - m) / s for v, m, s in zip(pixel, IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor(want))
    assert preprocess(rgb, (4, 2)).shape == (1, 3, 2, 4)
    assert preprocess(rgb, (4, 2), cv2.INTER_AREA).shape == (1, 3, 2, 4)


def test_predict_small_frame_real_image(shared_data: Path) -> None:
    """512x256 weights on the 256x128 mmseg Cityscapes crop: mostly road/building/vegetation."""
    model = _load(shared_data, "512x256")
    small = shared_data / "cityscapes_small_256x128"
    rgb = cv2.cvtColor(
        cv2.imread(
            str(small / "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png")
        ),
        cv2.COLOR_BGR2RGB,
    )
    pred = predict_train_ids(model, rgb, size=(512, 256))
    assert pred.shape == rgb.shape[:2] and pred.dtype == np.uint8
    assert set(np.unique(pred).tolist()) <= set(range(19)) | {255}
    gt = cv2.imread(
        str(small / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png"),
        cv2.IMREAD_UNCHANGED,
    )
    valid = gt != 255
    assert (pred[valid] == gt[valid]).mean() > 0.8


def _munster(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    bgr = cv2.imread(str(shared_data / MUNSTER.format("leftImg8bit", "leftImg8bit")))
    gt = cv2.imread(
        str(shared_data / MUNSTER.format("gtFine", "gtFine_labelTrainIds")), cv2.IMREAD_UNCHANGED
    )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), gt


@pytest.mark.parametrize(
    ("tag", "size", "expected"),
    [
        ("1024x512", (1024, 512), 0.707),
        ("512x256", (512, 256), 0.539),
    ],
)
def test_reference_miou_munster(
    shared_data: Path, tag: str, size: tuple[int, int], expected: float
) -> None:
    """PROVENANCE.md section 3: mIoU of the official weights on munster_000061_000019."""
    model = _load(shared_data, tag)
    rgb, gt = _munster(shared_data)
    pred = predict_train_ids(model, rgb, size=size)
    assert pred.shape == gt.shape
    assert _miou_gt_classes(gt, pred) == pytest.approx(expected, abs=0.01)
