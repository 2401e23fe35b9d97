"""Scoring the labels that come back (cloudseg.scoring), without DDS: ground-truth and
full-resolution references, frames matched by their pixels, bad label maps skipped."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudseg.data.cityscapes import load_label_train_ids
from cloudseg.data.folder import list_frame_files
from cloudseg.data.sources import open_source
from cloudseg.metrics import ConfusionMatrix
from cloudseg.scoring import LabelScorer, find_ground_truth, frame_digest
from cloudseg.stream_stats import StreamStats

VAL_FRAMES = ("frankfurt_000000_000576", "munster_000061_000019")


def cityscapes_tree(shared_data: Path, root: Path, names=VAL_FRAMES, label_ids=()) -> Path:
    """A Cityscapes-layout folder of symlinks to real val frames and their labels; frames in
    `label_ids` get only a *_gtFine_labelIds.png. Returns root/leftImg8bit/val."""
    src = shared_data / "cityscapes"
    for name in names:
        city = name.split("_")[0]
        image = root / "leftImg8bit" / "val" / city / f"{name}_leftImg8bit.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.symlink_to(src / "leftImg8bit" / "val" / city / image.name)
        kind = "labelIds" if name in label_ids else "labelTrainIds"
        label = root / "gtFine" / "val" / city / f"{name}_gtFine_{kind}.png"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.symlink_to(src / "gtFine" / "val" / city / label.name)
    return root / "leftImg8bit" / "val"


def test_split_folder_plays_its_cities_and_finds_ground_truth(shared_data, tmp_path):
    split = cityscapes_tree(shared_data, tmp_path, label_ids=("frankfurt_000000_000576",))
    files = list_frame_files(split)
    assert [f.name for f in files] == [f"{n}_leftImg8bit.png" for n in VAL_FRAMES]
    assert len(open_source(split)) == 2
    labels = [find_ground_truth(f) for f in files]
    assert labels[0].name == "frankfurt_000000_000576_gtFine_labelIds.png"  # the fallback
    assert labels[1].name == "munster_000061_000019_gtFine_labelTrainIds.png"
    assert labels[1].parent == tmp_path / "gtFine" / "val" / "munster"
    # the shared data's own split plays too (7 frames, each with gtFine)
    val = shared_data / "cityscapes" / "leftImg8bit" / "val"
    assert all(find_ground_truth(f) for f in list_frame_files(val))
    # a frame copied (here: linked) elsewhere alone finds its labels through the link's target
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / files[1].name).symlink_to(os.path.realpath(files[1]))
    assert find_ground_truth(lone / files[1].name).name.endswith("_labelTrainIds.png")
    # sequence frames have no ground truth
    seq = shared_data / "sequences" / "aachen_seq0000"
    assert find_ground_truth(next(iter(sorted(seq.iterdir())))) is None


def _damaged(labels: np.ndarray, seed: int) -> np.ndarray:
    out = labels.copy()
    rng = np.random.default_rng(seed)
    out[rng.random(out.shape) < 0.2] = 0  # a fifth of the pixels said to be road
    return out


def test_ground_truth_reference_matches_a_direct_confusion_matrix(shared_data, tmp_path, caplog):
    split = cityscapes_tree(shared_data, tmp_path, label_ids=("frankfurt_000000_000576",))
    scorer = LabelScorer(split, segmenter=lambda rgb: pytest.fail("gt needs no segmenter"))
    assert scorer.reference == "gt"
    expected = ConfusionMatrix()
    for i, file in enumerate(list_frame_files(split)):
        rgb = cv2.imread(str(file))[..., ::-1]
        gt = load_label_train_ids(find_ground_truth(file))
        received = _damaged(gt, i)
        expected.update(received, gt)
        scorer.add_original((i, 0), rgb)
        scorer.add_labels((i, 0), received)
    # a label map of the wrong size is skipped with a warning, never an exception
    with caplog.at_level(logging.WARNING, logger="cloudseg.scoring"):
        scorer.add_original((9, 0), rgb)
        scorer.add_labels((9, 0), np.zeros((512, 1024), np.uint8))
    assert "1024x512, the frame is 2048x1024" in caplog.text
    scorer.add_labels((10, 0), np.zeros((1024, 2048), np.uint8))  # its original never seen
    score = scorer.finish()
    assert score.reference == "gt" and score.frames_scored == 2
    assert score.miou == pytest.approx(expected.miou(), abs=1e-4)
    assert score.miou_gt_classes == pytest.approx(expected.miou(gt_classes_only=True), abs=1e-4)
    assert 0.5 < score.miou < 1.0
    assert score.not_scored == {"wrong size": 1, "original not seen": 1}


def _write_frames(folder: Path, count: int) -> list[np.ndarray]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    frames = []
    for i in range(count):
        rgb = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"frame_{i:02d}.png"), rgb[..., ::-1])
        frames.append(rgb)
    return frames


def _fake_segmenter(rgb: np.ndarray) -> np.ndarray:
    """Train ids from the red channel, at half size (as a segmenter at a reduced resolution)."""
    small = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return (small[..., 0] // 64).astype(np.uint8)  # ids 0..3


def test_full_resolution_reference_without_ground_truth(tmp_path, caplog):
    frames = _write_frames(tmp_path / "clip", 4)
    calls = []

    def segmenter(rgb):
        calls.append(frame_digest(rgb))
        return _fake_segmenter(rgb)

    scorer = LabelScorer(tmp_path / "clip", limit=3, segmenter=segmenter)
    assert scorer.reference == "hr"
    reference = [
        cv2.resize(_fake_segmenter(f), (128, 64), interpolation=cv2.INTER_NEAREST) for f in frames
    ]
    # frames 0..2 were played (limit 3), stamps unrelated to their order; frame 1's labels
    # never came back, frame 2's came back perfect, frame 0's with every id shifted by one
    for key, i in (((5, 1), 0), ((5, 2), 1), ((5, 3), 2)):
        scorer.add_original(key, frames[i].copy())
    scorer.add_labels((5, 3), reference[2])
    shifted = (reference[0] + 1) % 4
    scorer.add_labels((5, 1), shifted)
    with caplog.at_level(logging.WARNING, logger="cloudseg.scoring"):
        scorer.add_labels((5, 2), np.zeros((64, 128, 3), np.uint8))  # not HxW: skipped
    assert "not HxW uint8" in caplog.text
    score = scorer.finish()
    expected = ConfusionMatrix()
    expected.update(reference[2], reference[2])
    expected.update(shifted, reference[0])
    assert score.reference == "hr" and score.frames_scored == 2
    assert score.miou == pytest.approx(expected.miou(), abs=1e-4)
    assert score.not_scored == {"malformed": 1}
    assert len(calls) == 2  # only frames whose labels came back were segmented


def test_reference_labels_from_the_real_segmenter(shared_data, tmp_path):
    """The default reference: ESPNetv2 (shared weights) on the original frame, via the
    restoration pipeline in mode "full"; its own labels score 1.0 against it."""
    os.environ.setdefault("CLOUDSEG_WEIGHTS", str(shared_data / "weights"))
    small = shared_data / "cityscapes_small_256x128" / "leftImg8bit" / "val" / "frankfurt"
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "frame.png").symlink_to(next(small.iterdir()))  # no *_leftImg8bit name: no gt
    scorer = LabelScorer(clip, device="cpu")
    assert scorer.reference == "hr"
    rgb = cv2.imread(str(clip / "frame.png"))[..., ::-1]
    labels = scorer._reference_labels(rgb)
    assert labels.shape == (128, 256) and labels.dtype == np.uint8
    assert 0 in labels and set(np.unique(labels)) <= set(range(19)) | {255}
    scorer.add_original((1, 0), rgb)
    scorer.add_labels((1, 0), labels)
    score = scorer.finish()
    assert (score.frames_scored, score.miou) == (1, 1.0)


def test_stream_stats_report_and_json_carry_the_score():
    stats = StreamStats()
    summary = json.loads(stats.to_json())
    assert summary["miou"] is None and summary["miou_reference"] is None
    assert "mIoU" not in stats.report()
    stats.miou, stats.miou_gt_classes, stats.miou_reference, stats.frames_scored = (
        0.5123,
        0.6,
        "gt",
        5,
    )
    stats.not_scored = "1 wrong size"
    summary = json.loads(stats.to_json())
    assert (summary["miou"], summary["miou_reference"], summary["frames_scored"]) == (
        0.5123,
        "gt",
        5,
    )
    assert summary["miou_gt_classes"] == 0.6
    line, held = stats.report().splitlines()[-2:]
    assert line == (
        "labels mIoU vs ground truth : 0.512 over 5 of 5 frames sent (GT classes 0.600); "
        "not scored: 1 wrong size"
    )
    assert held.startswith("labels held per camera frame: n/a (the vehicle held no labels")
    stats.miou_reference, stats.miou, stats.not_scored = "hr", None, ""
    assert stats.report().splitlines()[-2].endswith("n/a (no labels came back)")


@pytest.mark.dds
@pytest.mark.slow
def test_demo_score_matches_eval_on_the_same_frames(shared_data, tmp_path):
    """`demo --score` on a 2-frame labelled folder: the labels that came back over DDS score
    within 0.02 of `cloudseg eval`'s row of the same restoration on the same frames. The CPU
    cloud runs without its width cap (cpu_max_width 0), so it segments at the segmenter's
    trained resolution as eval does (SR x2 to 1024x512); the stills of a split go out each as
    an H.264 stream of its own (gop 1), as eval encodes them."""
    from cloudseg.demo import run_demo
    from cloudseg.eval import EvalConfig, evaluate

    os.environ.setdefault("CLOUDSEG_WEIGHTS", str(shared_data / "weights"))
    root = tmp_path / "cityscapes"
    split = cityscapes_tree(shared_data, root)
    cloud = {"device": "cpu", "cpu_max_width": 0}  # otherwise the cloud's default route
    stats = run_demo(
        str(split),
        rate=0.2,  # one frame per 5 s: the CPU cloud (about 3.5 s a frame) labels both
        quiet=True,
        log_dir=tmp_path / "logs",
        timeout=300,
        cloud_params=cloud,
        score=True,
    )
    logs = "\n".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "gop=1" in logs  # the stills were recognised as such
    assert (stats.miou_reference, stats.frames_scored) == ("gt", 2), logs
    assert stats.labels_received == 2 and stats.not_scored == "", logs
    config = EvalConfig(
        data=(root,),
        split="val",
        codec="h264",
        device="cpu",
        progress=False,
        only_rows=("default",),
    )
    report = evaluate(config)
    assert report["frames"] == 2 and report["reference"] == "gt"
    default = report["rows"]["default"]  # eval's row of the cloud's own default route
    assert stats.miou == pytest.approx(default["miou"], abs=0.02), (stats.summary(), default)
    assert stats.miou_gt_classes == pytest.approx(default["miou_gt_classes"], abs=0.02)
    assert json.loads(stats.to_json())["miou_reference"] == "gt"


def test_labels_held_per_camera_frame_are_scored_apart_with_one_reference_pass(tmp_path):
    """The vehicle's labels for every camera frame ("held") and those that came back
    ("received") are scored separately; each input frame is segmented once for both."""
    frames = _write_frames(tmp_path / "clip", 3)
    calls = []

    def segmenter(rgb):
        calls.append(frame_digest(rgb))
        return _fake_segmenter(rgb)

    scorer = LabelScorer(tmp_path / "clip", segmenter=segmenter)
    reference = [
        cv2.resize(_fake_segmenter(f), (128, 64), interpolation=cv2.INTER_NEAREST) for f in frames
    ]
    for i, rgb in enumerate(frames):
        scorer.add_original((i, 0), rgb.copy())
    scorer.add_labels((0, 0), reference[0])  # frame 0 was sent and came back
    for i in range(3):  # the vehicle held frame 0's labels for frames 0, 1, 2
        scorer.add_labels((i, 0), reference[0], stream="held")
    scores = scorer.finish_all()
    assert scores["received"].frames_scored == 1 and scores["received"].miou == 1.0
    held = ConfusionMatrix()
    for i in range(3):
        held.update(reference[0], reference[i])
    assert scores["held"].frames_scored == 3
    assert scores["held"].miou == pytest.approx(held.miou(), abs=1e-4) and held.miou() < 1
    assert sorted(calls) == sorted({frame_digest(f) for f in frames})  # once each
    assert scorer.finish().frames_scored == 1
