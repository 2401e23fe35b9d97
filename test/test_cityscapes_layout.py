"""Cityscapes layout: image/label pairs, labelIds -> trainIds, train-id colours."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudseg.data.cityscapes import (
    LABEL_ID_TO_TRAIN_ID,
    TRAIN_ID_COLORS,
    colorize,
    list_pairs,
    load_label_train_ids,
    load_rgb,
)
from cloudseg.data.frames import DataError

VAL_NAMES = [
    "frankfurt_000000_000294",
    "frankfurt_000000_000576",
    "frankfurt_000001_057181",
    "frankfurt_000001_058914",
    "lindau_000005_000019",
    "munster_000061_000019",
    "munster_000075_000019",
]


def test_list_pairs_val(shared_data: Path) -> None:
    pairs = list_pairs(shared_data / "cityscapes", "val")
    assert [p.name for p in pairs] == VAL_NAMES
    for p in pairs:
        assert p.image_path.name == f"{p.name}_leftImg8bit.png"
        assert p.label_path.name == f"{p.name}_gtFine_labelTrainIds.png"
        assert p.label_path.parent.name == p.image_path.parent.name  # same city
    labels = load_label_train_ids(pairs[0].label_path)
    assert labels.shape == (1024, 2048) and labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) <= set(range(19)) | {255}
    rgb = load_rgb(pairs[0].image_path)
    assert rgb.shape == (1024, 2048, 3)


def test_label_ids_to_train_ids_matches_shipped(shared_data: Path) -> None:
    gt = shared_data / "cityscapes" / "gtFine" / "val" / "frankfurt"
    converted = load_label_train_ids(gt / "frankfurt_000000_000576_gtFine_labelIds.png")
    shipped = load_label_train_ids(gt / "frankfurt_000000_000576_gtFine_labelTrainIds.png")
    np.testing.assert_array_equal(converted, shipped)
    assert (converted != 255).mean() > 0.5
    # Spot values of the cityscapesScripts table: road 7->0, car 26->13, license plate -1 n/a.
    assert LABEL_ID_TO_TRAIN_ID[7] == 0 and LABEL_ID_TO_TRAIN_ID[26] == 13
    assert LABEL_ID_TO_TRAIN_ID[0] == 255 and LABEL_ID_TO_TRAIN_ID[33] == 18


def test_label_ids_fallback_and_unlabelled_skipped(tmp_path: Path, shared_data: Path, caplog):
    src = shared_data / "cityscapes"
    name = "frankfurt_000000_000576"
    img_dir = tmp_path / "leftImg8bit" / "val" / "frankfurt"
    gt_dir = tmp_path / "gtFine" / "val" / "frankfurt"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    (img_dir / f"{name}_leftImg8bit.png").symlink_to(
        src / "leftImg8bit" / "val" / "frankfurt" / f"{name}_leftImg8bit.png"
    )
    (gt_dir / f"{name}_gtFine_labelIds.png").symlink_to(
        src / "gtFine" / "val" / "frankfurt" / f"{name}_gtFine_labelIds.png"
    )
    (img_dir / "frankfurt_000000_999999_leftImg8bit.png").write_bytes(b"unlabelled")
    with caplog.at_level(logging.WARNING):
        pairs = list_pairs(tmp_path, "val")
    assert [p.name for p in pairs] == [name]
    assert pairs[0].label_path.name.endswith("_gtFine_labelIds.png")
    assert "frankfurt_000000_999999_leftImg8bit.png" in caplog.text
    with pytest.raises(DataError, match=r"gtFine/train is missing"):
        (tmp_path / "leftImg8bit" / "train").mkdir()
        list_pairs(tmp_path, "train")
    with pytest.raises(DataError, match=r"leftImg8bit/test is missing"):
        list_pairs(tmp_path, "test")


def test_bad_labels(tmp_path: Path) -> None:
    bad = tmp_path / "x_gtFine_labelTrainIds.png"
    cv2.imwrite(str(bad), np.full((4, 4), 40, np.uint8))
    with pytest.raises(DataError, match=r"values \[40\]"):
        load_label_train_ids(bad)
    color = tmp_path / "y_gtFine_labelTrainIds.png"
    cv2.imwrite(str(color), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="single-channel"):
        load_label_train_ids(color)
    with pytest.raises(DataError, match="missing"):
        load_label_train_ids(tmp_path / "none.png")
    with pytest.raises(DataError, match="missing"):
        load_rgb(tmp_path / "none.png")


def test_colors_and_colorize() -> None:
    assert TRAIN_ID_COLORS.shape == (19, 3) and TRAIN_ID_COLORS.dtype == np.uint8
    assert tuple(TRAIN_ID_COLORS[0]) == (128, 64, 128)  # road
    assert tuple(TRAIN_ID_COLORS[13]) == (0, 0, 142)  # car
    ids = np.array([[0, 13], [255, 18]], np.uint8)
    rgb = colorize(ids)
    assert rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 1]) == (0, 0, 142)
    assert tuple(rgb[1, 0]) == (0, 0, 0)
    assert tuple(rgb[1, 1]) == (119, 11, 32)
    np.testing.assert_array_equal(colorize(ids.astype(np.int64)), rgb)
