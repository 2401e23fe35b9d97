"""``cloudseg train icnet``: augmentation, schedule, cards, and short real runs on CPU.

The runs use 2 real Cityscapes train frames (shared data, never copied), rescaled to a short
side of 128 px, random ICNet, one CPU thread (so two runs are bit-identical).
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cloudseg.train.icnet import TrainError, main
from cloudseg.train.icnet_recipe import build_optimizer, load_backbone_weights, poly_lr
from cloudseg.train.seg_data import SegAugment, SegTrainSet, sample_rng


@pytest.fixture
def one_thread():
    """Single-threaded torch for the test (repeatable sums), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cityscapes(shared_data: Path) -> Path:
    root = shared_data / "cityscapes"
    if not (root / "leftImg8bit" / "train").is_dir():
        pytest.skip(f"no Cityscapes train split under {root}")
    return root


def _run_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data",
        str(data),
        "--limit",
        "2",
        "--base-size",
        "128",
        "--workers",
        "0",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


# --- pieces ------------------------------------------------------------------------------------


def _pattern(h: int = 64, w: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Labels 0..18 in vertical stripes and an image whose red channel encodes them."""
    label = (np.arange(w)[None, :].repeat(h, 0) // 6 % 19).astype(np.uint8)
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = label * 10
    image[..., 1] = np.arange(h)[:, None]
    return image, label


def test_augment_keeps_image_and_labels_aligned() -> None:
    image, label = _pattern()
    augment = SegAugment(crop=(48, 32), base_size=64, scale_range=(1.0, 1.0), blur_p=0.0)
    flips = 0
    for seed in range(12):
        out_image, out_label = augment(image, label, np.random.default_rng(seed))
        assert out_image.shape == (32, 48, 3) and out_label.shape == (32, 48)
        assert out_image.dtype == np.uint8 and out_label.dtype == np.uint8
        np.testing.assert_array_equal(out_image[..., 0], out_label * 10)
        flips += int(out_label[0, 0] > out_label[0, -1])  # stripes run backwards when flipped
    assert 0 < flips < 12


def test_augment_rescales_and_pads_with_ignore() -> None:
    image, label = _pattern()
    augment = SegAugment(crop=(128, 96), base_size=64, scale_range=(0.5, 0.5), blur_p=0.0)
    out_image, out_label = augment(image, label, np.random.default_rng(0))
    assert out_label.shape == (96, 128)
    # short side 32 -> 32x48 of content, the rest is padding: labels 255, image 0
    assert (out_label[32:] == 255).all() and (out_label[:, 48:] == 255).all()
    assert (out_image[32:] == 0).all()
    assert set(np.unique(out_label[:32, :48])) <= set(range(19))


def test_augment_is_repeatable_and_scales_vary() -> None:
    image, label = _pattern(128, 256)
    augment = SegAugment(crop=(64, 64), base_size=128)
    a = augment(image, label, sample_rng(3, 17))
    b = augment(image, label, sample_rng(3, 17))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert augment.short_side_range() == (64, 256)
    stripe_widths = set()
    for g in range(20):
        _, out = augment(image, label, sample_rng(0, g))
        stripe_widths.add(int((np.diff(out[0].astype(int)) != 0).sum()))
    assert len(stripe_widths) > 3  # different scales give different numbers of stripe edges


def test_train_set_visits_every_frame_once_per_epoch(shared_data: Path) -> None:
    from cloudseg.data.cityscapes import list_pairs

    pairs = list_pairs(_cityscapes(shared_data), "train")[:5]
    data = SegTrainSet(pairs, SegAugment(crop=(64, 64), base_size=64), seed=1)
    for epoch in range(3):
        seen = sorted(data.frame_index(epoch * 5 + i) for i in range(5))
        assert seen == list(range(5))
    order = [data.frame_index(g) for g in range(10)]
    again = SegTrainSet(pairs, data.augment, seed=1)
    assert [again.frame_index(g) for g in range(10)] == order


def test_poly_schedule() -> None:
    assert poly_lr(0.01, 0, 100) == pytest.approx(0.01)
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 100, 100) == 0.0


def test_optimizer_groups_and_backbone_weights(tmp_path: Path) -> None:
    from cloudseg.models.icnet import icnet_resnet50

    model = icnet_resnet50()
    optimizer = build_optimizer(model, 0.01, head_lr_mult=10.0)
    backbone, head = optimizer.param_groups
    assert backbone["lr"] == pytest.approx(0.01) and head["lr"] == pytest.approx(0.1)
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert len({id(p) for p in model.conv_sub1.parameters()} & {id(p) for p in head["params"]})

    source = icnet_resnet50()
    state = {
        f"pretrained.{k}": v
        for k, v in source.pretrained.state_dict().items()
        if not k.startswith("fc.")
    }
    torch.save(state, tmp_path / "r50.pth")
    load_backbone_weights(model, tmp_path / "r50.pth")
    torch.testing.assert_close(
        model.pretrained.layer4[2].conv3.weight, source.pretrained.layer4[2].conv3.weight
    )
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "tv.pth")
    with pytest.raises(TrainError, match="not a ResNet50-v1s"):
        load_backbone_weights(model, tmp_path / "tv.pth")


# --- the command -------------------------------------------------------------------------------


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--backbone-weights", "--resume", "--val-every", "--crop", "--init"):
        assert option in text


@pytest.mark.parametrize("card", [None, {"architecture": "carn_m", "task": "sr"}])
def test_init_without_fitting_card_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], card: dict | None
) -> None:
    weights = tmp_path / "other.pth"
    torch.save({}, weights)
    if card is not None:
        weights.with_suffix(".json").write_text(json.dumps(card))
    code = main(["--data", str(tmp_path), "--init", str(weights), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err
    if card is None:
        assert "no model card" in lines[0]
    else:
        assert "'carn_m'" in lines[0] and "'icnet_resnet50'" in lines[0]
    assert not (tmp_path / "o" / "icnet.pth").exists()


def test_loss_goes_down_and_checkpoint_has_card(
    shared_data: Path, tmp_path: Path, one_thread: None
) -> None:
    from cloudseg.models.registry import build_model

    out = tmp_path / "run"
    args = _run_args(_cityscapes(shared_data), out, "--steps", "16", "--batch-size", "2")
    args += ["--crop", "256x128", "--log-every", "1", "--save-every", "100"]
    args += ["--val-limit", "1", "--val-every", "16"]
    assert main(args) == 0
    with (out / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["loss"]) for r in rows]
    assert [int(r["step"]) for r in rows] == list(range(1, 17))
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:3]), losses
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] == pytest.approx(0.01) and all(a > b for a, b in itertools.pairwise(lrs))
    assert rows[-1]["val_miou"] != ""

    card = json.loads((out / "icnet.json").read_text())
    assert card["architecture"] == "icnet_resnet50" and card["steps"] == 16
    assert card["resolution"] == [256, 128] and card["num_classes"] == 19
    assert card["recipe"]["loss_weights"] == [1.0, 0.4, 0.4]
    assert card["recipe"]["base_lr"] == 0.01 and card["recipe"]["momentum"] == 0.9
    assert card["data"]["frames"] == 2 and card["metrics"]["at_step"] == 16
    assert 0.0 <= card["metrics"]["val_miou"] <= 1.0
    assert (out / "icnet_best.json").is_file()
    model = build_model("icnet_resnet50", out / "icnet.pth")  # strict load
    assert model.untrained is False


def test_resume_continues_bit_identically(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    data = _cityscapes(shared_data)
    common = ["--steps", "4", "--batch-size", "1", "--crop", "128x64", "--val-split", "none"]
    common += ["--log-every", "1"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(_run_args(data, whole, *common)) == 0
    assert main(_run_args(data, parts, *common, "--stop-at", "2")) == 0
    assert json.loads((parts / "icnet.json").read_text())["steps"] == 2
    capsys.readouterr()

    # another schedule, or a fresh run over an existing one, is refused
    assert main(_run_args(data, parts, "--resume", *common[2:], "--steps", "8")) == 2
    assert "steps 4 -> 8" in capsys.readouterr().err
    assert main(_run_args(data, parts, *common)) == 2
    assert "--resume" in capsys.readouterr().err

    assert main(_run_args(data, parts, "--resume", *common)) == 0
    assert "at step 2" in capsys.readouterr().err
    assert json.loads((parts / "icnet.json").read_text())["steps"] == 4
    a = torch.load(whole / "icnet.pth", weights_only=True)
    b = torch.load(parts / "icnet.pth", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with (parts / "log.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]
