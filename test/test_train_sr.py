"""``cloudseg train sr|finetune`` on tiny real data: the frozen segmenter, one step, resume,
hr targets without labels, model cards, and the degradation shared with serving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cloudseg.cli import main as cli_main
from cloudseg.data.sources import open_source
from cloudseg.graph import COMPRESSOR
from cloudseg.media import stream as media_stream
from cloudseg.media.h264 import H264Decoder
from cloudseg.media.stream import FrameCompressor, StreamRoundTrip, default_compressor_settings
from cloudseg.models.cards import read_card
from cloudseg.models.registry import build_model
from cloudseg.models.weights import load_state_dict_file
from cloudseg.train import data as train_data
from cloudseg.train.checkpoint import save_checkpoint
from cloudseg.train.data import DegradedFrames, TrainFrame, sample_crops
from cloudseg.train.segmenter import FrozenSegmenter
from cloudseg.train.sr import compute_loss

SEQUENCE = "sequences/aachen_seq0000"


@pytest.fixture(scope="module")
def two_frames(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frame folder (no labels) linking two real sequence frames."""
    folder = tmp_path_factory.mktemp("frames")
    for path in sorted((shared_data / SEQUENCE).glob("*.jpg"))[:2]:
        (folder / path.name).symlink_to(path)
    return folder


@pytest.fixture(scope="module")
def degraded(two_frames: Path) -> DegradedFrames:
    frames = [TrainFrame(str(f.index), f.rgb) for f in open_source(two_frames)]
    settings = [default_compressor_settings(crf=23)]
    return DegradedFrames.build([frames], settings, target_factors=(1, 2), progress=False)


def _train(capsys, what: str, *argv: str) -> tuple[int, str, str]:
    code = cli_main(["train", what, *argv, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_training_and_serving_share_downsampling_and_encoder(shared_data: Path) -> None:
    """Training degrades through the very StreamRoundTrip the evaluation uses, which is the
    compressor's FrameCompressor (its one downsampling function and encoder, with the
    compressor node's default parameters) and the cloud's decoder."""
    assert train_data.StreamRoundTrip is media_stream.StreamRoundTrip
    assert default_compressor_settings().as_dict() == {
        k: v
        for k, v in COMPRESSOR.defaults().items()
        if k in default_compressor_settings().as_dict()
    }
    frames = [f.rgb for f in open_source(shared_data / SEQUENCE, limit=3)]
    settings = default_compressor_settings(crf=23)
    built = DegradedFrames.build(
        [[TrainFrame(str(i), rgb) for i, rgb in enumerate(frames)]], [settings], progress=False
    )
    compressor, decoder = FrameCompressor(settings), H264Decoder()
    roundtrip = StreamRoundTrip(settings)
    for seq, rgb in enumerate(frames):
        sent = compressor.compress(rgb)  # what the compressor node publishes
        served = decoder.decode(sent.payload, seq)  # what the cloud decodes
        np.testing.assert_array_equal(built.lr[seq][0], served)
        np.testing.assert_array_equal(roundtrip(rgb), served)
        assert roundtrip.payload_bytes[-1] == len(sent.payload)
    assert roundtrip.keyframes == [True, False, False]  # IDR, then P-frames as in the stream


def test_gradients_reach_sr_and_not_the_frozen_segmenter(degraded, weights_env) -> None:
    torch.manual_seed(0)
    sr = build_model("carn_m", "div2k").train()
    segmenter = FrozenSegmenter(build_model("espnetv2_s2_city_1024x512"))
    seg_before = {k: v.clone() for k, v in segmenter.state_dict().items()}
    sr_before = {k: v.clone() for k, v in sr.state_dict().items()}
    degraded.labels = [np.full(t.shape[:2], 0, np.uint8) for t in degraded.targets[2]]
    batch = sample_crops(degraded, 2, (32, 32), np.random.default_rng(0), label_factor=2)
    assert batch.lr.shape == (2, 3, 32, 32) and batch.targets[2].shape == (2, 3, 64, 64)
    assert batch.labels.shape == (2, 64, 64)
    optimizer = torch.optim.Adam(sr.parameters(), lr=1e-4)
    loss, l1, ce = compute_loss(sr, segmenter, batch, r=2, k=2, lam=1.0)
    assert ce.item() > 0 and l1.item() > 0
    loss.backward()
    assert all(p.grad is None for p in segmenter.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in sr.parameters())
    optimizer.step()
    for key, value in segmenter.state_dict().items():  # bit-identical, BN statistics included
        assert torch.equal(value, seg_before[key]), key
    assert any(not torch.equal(v, sr_before[k]) for k, v in sr.state_dict().items())
    assert not segmenter.training and not segmenter.model.training


def test_one_step_lowers_the_loss(degraded, weights_env) -> None:
    sr = build_model("carn_m", "div2k").train()
    batch = sample_crops(degraded, 4, (24, 24), np.random.default_rng(1))
    # Adam's first step moves every weight by lr along -sign(grad): a descent direction, so a
    # small enough step must lower the loss on the same batch
    optimizer = torch.optim.Adam(sr.parameters(), lr=1e-6)
    loss, *_ = compute_loss(sr, None, batch, r=4, k=1, lam=0.0)  # L1 of the x2 and x4 heads
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after, *_ = compute_loss(sr, None, batch, r=4, k=1, lam=0.0)
    assert after.item() < loss.item()


def test_save_resume_and_the_next_step_is_identical(two_frames, weights_env, tmp_path, capsys):
    common = [
        "--data", str(two_frames), "--targets", "hr", "--crfs", "23", "--crop", "32x32",
        "--batch-size", "2", "--save-every", "1", "--threads", "1",
    ]  # fmt: skip
    straight, resumed = tmp_path / "a" / "ft.pth", tmp_path / "b" / "ft.pth"
    code, _, err = _train(capsys, "finetune", *common, "--steps", "2", "--out", str(straight))
    assert code == 0, err
    assert _train(capsys, "finetune", *common, "--steps", "1", "--out", str(resumed))[0] == 0
    assert read_card(resumed)["steps"] == 1
    code, _, err = _train(
        capsys, "finetune", *common, "--steps", "2", "--out", str(resumed), "--resume"
    )
    assert code == 0, err
    a, b = load_state_dict_file(straight), load_state_dict_file(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    card = read_card(straight)
    assert card["architecture"] == "carn_m" and card["steps"] == 2
    assert card["recipe"]["targets"] == "hr" and card["recipe"]["sr_head"] == 2
    assert card["degradation"]["codec"] == "h264"
    assert card["degradation"]["settings"][0]["crf"] == 23
    assert card["data"]["labelled_frames"] == 0  # hr targets: no label files needed
    rows = (straight.with_suffix(".csv")).read_text().splitlines()
    assert rows[0].startswith("step,loss,l1,ce") and len(rows) == 3
    # resuming with another learning rate makes a step schedule, recorded in the card
    code, _, err = _train(
        capsys, "finetune", *common, "--steps", "3", "--out", str(resumed), "--resume",
        "--lr", "1e-5",
    )  # fmt: skip
    assert code == 0, err
    assert read_card(resumed)["recipe"]["lr_steps"] == [[0, 1e-4], [2, 1e-5]]


def test_gt_targets_without_labels_and_foreign_checkpoints_are_refused(
    two_frames, weights_env, tmp_path, capsys
) -> None:
    base = ["--data", str(two_frames), "--crfs", "23", "--steps", "1", "--crop", "32x32"]
    code, _, err = _train(
        capsys, "finetune", *base, "--targets", "gt", "--out", str(tmp_path / "x.pth")
    )
    assert code == 2 and "--targets hr" in err and "Traceback" not in err
    # a checkpoint without a card, and one whose card names another architecture
    model = build_model("carn_m", "div2k")
    bare = tmp_path / "bare.pth"
    torch.save({k: v + 0 for k, v in model.state_dict().items()}, bare)
    foreign = save_checkpoint(tmp_path / "icnet.pth", model, {"architecture": "icnet_resnet50"})
    for init, message in ((bare, "no model card"), (foreign, "icnet_resnet50")):
        code, _, err = _train(
            capsys, "sr", *base, "--init", str(init), "--out", str(tmp_path / "y.pth")
        )
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_train_sr_writes_a_card_and_help(two_frames, weights_env, tmp_path, capsys) -> None:
    out_path = tmp_path / "sr" / "carn_m_sr.pth"
    code, out, err = _train(
        capsys, "sr", "--data", str(two_frames), "--crfs", "21,25", "--steps", "1",
        "--batch-size", "2", "--crop", "24x24", "--out", str(out_path),
    )  # fmt: skip
    assert code == 0, err
    card = json.loads(out_path.with_suffix(".json").read_text())
    assert card["trained_heads"] == [2, 4] and card["recipe"]["init"].startswith("carn_m official")
    assert [s["crf"] for s in card["degradation"]["settings"]] == [21, 25]
    assert build_model("carn_m", out_path).weights_info.meta["architecture"] == "carn_m"
    for what in ("sr", "finetune"):
        code, out, _ = _train(capsys, what, "--help")
        assert code == 0 and "--crfs" in out and "H.264" in out
