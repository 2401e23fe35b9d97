"""`cloudseg train stream` and its data: real low-resolution Cityscapes frames (shared/data/
cityscapes_lr, read in place), the real H.264 encoder and decoder, the real ESPNetv2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cloudseg.data.frames import DataError
from cloudseg.train.stream import main
from cloudseg.train.stream_data import (
    StreamCodec,
    is_low_res_root,
    list_low_res_frames,
    sample_batch,
)


@pytest.fixture(scope="module")
def lr_root(shared_data: Path) -> Path:
    root = shared_data / "cityscapes_lr"
    if not is_low_res_root(root):
        pytest.skip(f"{root} (the low-resolution training frames) is missing")
    return root


@pytest.fixture(scope="module")
def two_frames(lr_root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    return [f.load() for f in list_low_res_frames(lr_root)[:2]]


def test_lists_are_disjoint_and_complete(lr_root: Path) -> None:
    train = list_low_res_frames(lr_root, "train.txt")
    val = list_low_res_frames(lr_root, "val.txt")
    assert len(train) == 365 and len(val) == 21
    assert not {f.id for f in train} & {f.id for f in val}
    rgb, label = train[0].load()
    assert rgb.shape == (256, 512, 3) and label.shape == (1024, 2048)


def test_missing_list_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing"):
        list_low_res_frames(tmp_path, "train.txt")


def test_codec_codes_ids_and_p_frames_as_the_stream(two_frames) -> None:
    rgb = two_frames[0][0]
    idr = StreamCodec(crfs=(25,), p_frame=0.0)
    p = StreamCodec(crfs=(25,), p_frame=1.0)
    decoded_idr, idr_bytes, was_p = idr.code(rgb, np.random.default_rng(0))
    assert not was_p and decoded_idr.shape == rgb.shape
    decoded_p, p_bytes, was_p = p.code(rgb, np.random.default_rng(0))
    assert was_p and decoded_p.shape == rgb.shape
    assert p_bytes < idr_bytes  # a P-frame after a near copy costs less than an IDR
    for decoded in (decoded_idr, decoded_p):  # lossy, but close to the frame
        error = np.abs(decoded.astype(int) - rgb.astype(int)).mean()
        assert 0.5 < error < 12
    coarse = StreamCodec(crfs=(35,), p_frame=0.0)
    _, coarse_bytes, _ = coarse.code(rgb, np.random.default_rng(0))
    assert coarse_bytes < idr_bytes


def test_batches_are_reproducible_and_aligned(two_frames) -> None:
    codec = StreamCodec(crfs=(23, 27))
    a = sample_batch(two_frames, codec, (64, 32), 2, seed=3, first_sample=5, batch_size=2)
    b = sample_batch(two_frames, codec, (64, 32), 2, seed=3, first_sample=5, batch_size=2)
    c = sample_batch(two_frames, codec, (64, 32), 2, seed=4, first_sample=5, batch_size=2)
    assert a.lr.shape == (2, 3, 32, 64) and a.clean.shape == (2, 3, 32, 64)
    assert a.labels.shape == (2, 64, 128)
    assert (a.lr == b.lr).all() and (a.labels == b.labels).all()
    assert not (a.lr == c.lr).all()
    labels = a.labels.numpy()
    assert set(np.unique(labels)) <= set(range(19)) | {255}


def _tiny_root(tmp_path: Path, lr_root: Path) -> Path:
    """A list of two training frames and one validation frame: absolute list paths under a
    temp folder (the images stay in shared/)."""
    ids = (lr_root / "train.txt").read_text().split()
    (tmp_path / "train.txt").write_text("\n".join(ids[:2]) + "\n")
    (tmp_path / "val.txt").write_text((lr_root / "val.txt").read_text().split()[0] + "\n")
    return tmp_path


@pytest.mark.parametrize("route", ["lr_seg", "bilinear_seg"])
def test_train_writes_weights_card_and_log(
    tmp_path: Path, lr_root: Path, route: str, capsys
) -> None:
    lists = _tiny_root(tmp_path, lr_root)
    out = tmp_path / f"{route}.pth"
    argv = [
        "--route", route, "--data", str(lr_root), "--list", str(lists / "train.txt"),
        "--val-list", str(lists / "val.txt"), "--out", str(out), "--steps", "2",
        "--batch-size", "1", "--crop", "64x32", "--save-every", "1", "--val-every", "2",
        "--threads", "2", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["route"] == route and card["steps"] == 2
    assert card["degradation"]["kernel"].startswith("bilinear_noaa")
    assert 0.0 < card["metrics"]["val_miou"] <= 1.0
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 3
    # the weights load into the serving pipeline, at the resolution the card names
    from cloudseg.models.registry import build_model
    from cloudseg.restore.backends import trained_resolution

    name = card["architecture"]
    model = build_model(name, out)
    assert trained_resolution(model, name) == tuple(card["resolution"])
    # shipped as fp16: half the file, the same card plus what was added, loads into fp32
    from cloudseg.train.checkpoint import ship_weights

    shipped = ship_weights(out, tmp_path / "shipped" / "w.pth", extra={"evaluation": {"x": 1}})
    assert shipped.stat().st_size < 0.6 * out.stat().st_size
    shipped_card = json.loads(shipped.with_suffix(".json").read_text())
    assert shipped_card["evaluation"] == {"x": 1} and shipped_card["route"] == route
    half = build_model(name, shipped)
    import torch

    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        agree = (half(x).argmax(1) == model(x).argmax(1)).float().mean()
    assert agree > 0.99
    # resuming with other settings is refused, with one line and no traceback
    assert main([*argv, "--resume", "--batch-size", "2"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_bad_input_is_one_line(tmp_path: Path, capsys) -> None:
    code = main(["--route", "lr_seg", "--data", str(tmp_path), "--out", str(tmp_path / "x.pth")])
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
