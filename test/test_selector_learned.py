"""The learned frame selector: its network, the committed weights, missing weights, and
``cloudseg train selector`` on a few real frames (targets from the backend, resume)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cloudseg.cli import main as cli_main
from cloudseg.data.sources import open_source
from cloudseg.models import weights as weights_mod
from cloudseg.models.cards import read_card
from cloudseg.models.registry import build_model
from cloudseg.models.selector_net import INPUT_SIZE, SelectorNet, prepare
from cloudseg.models.weights import WeightsError, load_state_dict_file
from cloudseg.selection.learned import LearnedDeviation
from cloudseg.selection.selector import FrameSelector, SelectorSettings, make_measure
from cloudseg.train.selector import pearson, spearman
from cloudseg.train.selector_data import changed_fraction, pair_targets

SEQUENCE = "sequences/aachen_seq0000"
OTHER = "video/solidWhiteRight.mp4"


def test_net_shapes_and_symmetry() -> None:
    torch.manual_seed(0)
    net = SelectorNet().eval()
    rgb = np.random.default_rng(0).integers(0, 256, (1024, 2048, 3), dtype=np.uint8)
    x = net.to_input(rgb)
    assert x.shape == (1, 3, INPUT_SIZE[1], INPUT_SIZE[0]) and x.dtype == torch.uint8
    assert prepare(rgb).shape == (INPUT_SIZE[1], INPUT_SIZE[0], 3)
    with torch.inference_mode():
        fa = net.features(x)
        fb = net.features(torch.flip(x, (-1,)))
        assert fa.shape == (1, net.width, INPUT_SIZE[1] // 8, INPUT_SIZE[0] // 8)
        ab, ba = float(net(fa, fb)[0]), float(net(fb, fa)[0])
    assert 0.0 <= ab <= 1.0 and ab == pytest.approx(ba, abs=1e-6)
    assert sum(p.numel() for p in net.parameters()) < 100_000


def test_targets_and_correlations() -> None:
    a = np.zeros((4, 8), np.uint8)
    b = a.copy()
    b[0, :2] = 3
    assert changed_fraction(a, b) == pytest.approx(2 / 32)
    t = pair_targets([a, b, b], max_gap=1)
    assert t[0, 1] == t[1, 0] == pytest.approx(2 / 32) and t[1, 2] == 0 and np.isnan(t[0, 2])
    x = np.array([1.0, 2.0, 2.0, 5.0])
    assert spearman(x, x**3) == pytest.approx(1.0) and pearson(x, -x) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1.0)


def test_missing_weights_give_one_clear_line(tmp_path, monkeypatch) -> None:
    with pytest.raises(WeightsError, match=r"does not exist") as info:
        LearnedDeviation(str(tmp_path / "nope.pth"))
    assert len(str(info.value).splitlines()) == 1
    # no project, shared or cached copy of the default file: no random weights either
    monkeypatch.setattr(weights_mod, "project_weights_dir", lambda: None)
    monkeypatch.setattr(weights_mod, "shared_weights_dir", lambda: None)
    monkeypatch.setenv("CLOUDSEG_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(WeightsError, match=r"selector_learned\.pth.*not found") as info:
        make_measure("learned")
    assert "cloudseg train selector" in str(info.value)
    with pytest.raises(WeightsError):
        FrameSelector(SelectorSettings(mode="learned"))


def test_committed_weights_card_and_deviation(shared_data: Path) -> None:
    measure = make_measure("learned")
    assert isinstance(measure, LearnedDeviation) and measure.name == "learned"
    path = Path(__file__).resolve().parents[1] / "weights" / "selector_learned.pth"
    assert path.stat().st_size < 1_000_000
    card = read_card(path)
    assert card["architecture"] == "selector_net" and card["backend"] == "espnetv2"
    assert set(load_state_dict_file(path)) == set(build_model("selector_net").state_dict())

    frames = [f.rgb for f in open_source(shared_data / SEQUENCE, limit=8)]
    other = next(iter(open_source(shared_data / OTHER, limit=1))).rgb
    feats = [measure.features(rgb) for rgb in frames]
    same = measure.deviation(feats[0], feats[0])
    near = measure.deviation(feats[0], feats[1])
    far = measure.deviation(feats[0], feats[7])
    cut = measure.deviation(feats[0], measure.features(other))
    assert same < 0.03, same
    assert same < near < far < cut, (same, near, far, cut)
    assert cut > 0.3, cut


@pytest.fixture
def four_frames(shared_data: Path, tmp_path: Path) -> Path:
    """A frame folder linking four real sequence frames."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for path in sorted((shared_data / SEQUENCE).glob("*.jpg"))[:4]:
        (folder / path.name).symlink_to(path)
    return folder


def _train(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(["train", "selector", *argv, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_selector_tiny_run_and_resume(four_frames, weights_env, tmp_path, capsys) -> None:
    base = [
        "--data", str(four_frames), "--val", str(four_frames), "--max-gap", "2",
        "--batch", "4", "--pairs-per-epoch", "8", "--seed", "3",
    ]  # fmt: skip
    code, _, err = _train(capsys, *base, "--epochs", "2", "--out", str(tmp_path / "straight"))
    assert code == 0, err
    out = tmp_path / "run"
    code, _, err = _train(capsys, *base, "--epochs", "1", "--out", str(out))
    assert code == 0, err
    card = json.loads((out / "selector.json").read_text())
    assert card["architecture"] == "selector_net" and card["steps"] == 3
    assert {"val_mae", "val_spearman", "pixel_spearman"} <= set(card["metrics"])
    assert card["data"]["val_pairs"] == 5 and card["backend"] == "espnetv2"
    build_model("selector_net", out / "selector.pth")  # card + strict load
    code, _, err = _train(capsys, *base, "--epochs", "1", "--out", str(out))
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1

    code, _, err = _train(capsys, *base, "--epochs", "2", "--out", str(out), "--resume")
    assert code == 0, err
    rows = list((out / "log.csv").read_text().splitlines())
    assert len(rows) == 3 and rows[0].startswith("epoch,step,lr,loss")
    resumed = load_state_dict_file(out / "selector.pth")
    straight = load_state_dict_file(tmp_path / "straight" / "selector.pth")
    for k, v in straight.items():
        torch.testing.assert_close(resumed[k], v, msg=k)
    code, _, err = _train(capsys, *base, "--lr", "0.1", "--out", str(out), "--resume")
    assert code == 2 and "lr" in err


def test_train_selector_help_and_errors(tmp_path, capsys) -> None:
    code, out, _ = _train(capsys, "--help")
    assert code == 0 and "--max-gap" in out and "--resume" in out
    code, _, err = _train(capsys, "--data", str(tmp_path / "none"), "--out", str(tmp_path))
    assert code == 2 and "no such file" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    code, _, err = _train(
        capsys, "--data", str(tmp_path / "empty"), "--val", "none", "--out", str(tmp_path / "o")
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert cli_main(["train", "--help"]) == 0
    assert "selector" in capsys.readouterr().out  # asked-for help goes to stdout
