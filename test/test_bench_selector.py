"""`cloudseg bench selector`: the sweep core on a synthetic sequence, the command, real data."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from cloudseg.bench import selector as bench
from cloudseg.bench.selector_results import SweepResult, format_table
from cloudseg.selection.reference import LabelledSequence
from cloudseg.selection.selector import DEFAULT_THRESHOLDS

FPS = 17.0
H, W = 128, 256


def _scene(t: int, moving_from: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame t and its labels: a bar (class 1) that stands still before ``moving_from`` and
    then crosses the picture, over a background split into road (0) and sky (10)."""
    x = 40 + 6 * max(0, t - moving_from)
    labels = np.zeros((H // 2, W // 2), np.uint8)
    labels[: H // 4] = 10
    labels[:, (x // 2) % (W // 2) : (x // 2) % (W // 2) + 8] = 1
    grey = np.where(labels == 10, 200, np.where(labels == 1, 30, 110)).astype(np.uint8)
    rng = np.random.default_rng(t)
    big = np.repeat(np.repeat(grey, 2, axis=0), 2, axis=1).astype(np.int16)
    big = np.clip(big + rng.integers(-2, 3, big.shape), 0, 255).astype(np.uint8)
    return np.stack([big] * 3, axis=-1), labels


def synthetic(n: int = 40, moving_from: int = 20) -> LabelledSequence:
    frames, labels = zip(*(_scene(t, moving_from) for t in range(n)), strict=True)
    stamps = [round(t * 1e9 / FPS) for t in range(n)]
    return LabelledSequence("synthetic", list(frames), stamps, list(labels), FPS)


@pytest.fixture(scope="module")
def seq() -> LabelledSequence:
    return synthetic()


@pytest.fixture(scope="module")
def result(seq: LabelledSequence) -> SweepResult:
    return bench.sweep(
        seq.frames,
        seq.stamps_ns,
        seq.labels,
        seq.fps,
        thresholds=(0.001, 0.01, 0.02, 0.05, 0.1, 0.3),
        warp=True,
        name=seq.name,
    )


def test_fixed_interval_sends_m_evenly_spaced_frames():
    for n in (1, 7, 30, 221):
        for m in range(1, n + 1):
            idx = bench.fixed_interval(n, m)
            assert len(idx) == m and idx[0] == 0 and idx[-1] < n
            assert all(b > a for a, b in itertools.pairwise(idx))
    assert bench.fixed_interval(30, 30) == list(range(30))
    assert bench.fixed_interval(30, 3) == [0, 10, 20]
    with pytest.raises(ValueError):
        bench.fixed_interval(5, 6)


def test_held_sources_and_interval_keyframes():
    assert bench.held_sources(6, [0, 2, 5]) == [0, 0, 2, 2, 2, 5]
    with pytest.raises(ValueError):
        bench.held_sources(3, [1])
    stamps = [round(t * 1e9 / FPS) for t in range(40)]
    keys = bench.interval_keyframes(stamps, [0, 9, 18, 27, 36], 1.0)
    assert keys == [True, False, True, False, True]


def test_sending_everything_scores_one_and_fixed_sends_the_same_count(result):
    first = result.curve[0]
    assert first.sent_fraction == 1.0
    assert first.miou == pytest.approx(1.0)
    assert result.fixed[0].miou == pytest.approx(1.0)
    for p, f in zip(result.curve, result.fixed, strict=True):
        assert len(f.sent) == len(p.sent)
        assert p.kbps > 0 and f.kbps > 0
        assert p.n_key + p.n_useful == len(p.sent) and p.n_key >= 1


def test_sent_fraction_falls_with_the_threshold(result):
    thresholds = [p.threshold for p in result.curve]
    assert thresholds == sorted(thresholds)
    fractions = [p.sent_fraction for p in result.curve]
    assert fractions == sorted(fractions, reverse=True)
    assert fractions[-1] < 0.5
    kbps = [p.kbps for p in result.curve]
    assert kbps[-1] < kbps[0]


def test_selector_beats_fixed_interval_when_half_the_clip_stands_still(result):
    """Still first half, moving second half: the selector spends its frames on the motion."""
    mid = [(p, f) for p, f in zip(result.curve, result.fixed, strict=True) if p.sent_fraction < 0.9]
    assert mid
    assert all(p.miou >= f.miou for p, f in mid)
    assert any(p.miou > f.miou + 0.05 for p, f in mid)


def test_default_point_is_in_the_curve(result):
    key, useful = DEFAULT_THRESHOLDS["pixel"]
    point = result.curve[result.default_index]
    assert point.threshold == useful and point.key_threshold == key


def test_json_keys_are_exact(result):
    out = json.loads(json.dumps(result.to_json()))
    entry = ["threshold", "sent_fraction", "kbps", "miou_vs_every_frame"]
    for name in ("curve", "curve_warped"):
        assert [list(e) for e in out[name]] == [entry] * len(result.curve)
    for name in ("fixed_interval", "fixed_interval_warped"):
        assert [list(e) for e in out[name]] == [entry[1:]] * len(result.curve)
    assert out["curve_warped"][0]["miou_vs_every_frame"] == pytest.approx(1.0)
    assert [e["sent_fraction"] for e in out["curve_warped"]] == [
        e["sent_fraction"] for e in out["curve"]
    ]
    assert out["selector_ms"] > 0 and out["frames"] == 40


def test_sweep_refuses_what_cannot_work(seq):
    with pytest.raises(ValueError, match="no frames"):
        bench.sweep([], [], [], FPS)
    with pytest.raises(ValueError, match="mode off"):
        bench.sweep(seq.frames, seq.stamps_ns, seq.labels, FPS, mode="off")
    with pytest.raises(ValueError, match="key-ratio"):
        bench.sweep(seq.frames, seq.stamps_ns, seq.labels, FPS, key_ratio=0.5)


@pytest.fixture
def fake_loader(monkeypatch: pytest.MonkeyPatch):
    def load(path, backend="espnetv2", device="auto", limit=None, **_):
        seq = synthetic(24, moving_from=12)
        return (
            seq
            if limit is None
            else LabelledSequence(
                seq.name, seq.frames[:limit], seq.stamps_ns[:limit], seq.labels[:limit], seq.fps
            )
        )

    monkeypatch.setattr("cloudseg.selection.reference.load_labelled_sequence", load)


def test_main_json_and_plot(fake_loader, tmp_path, capsys):
    plot = tmp_path / "out" / "sel.png"
    argv = ["--input", str(tmp_path), "--thresholds", "0.01,0.05", "--json", "--plot", str(plot)]
    assert bench.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert len(out["curve"]) == len(out["fixed_interval"]) == 3  # + the default threshold
    assert "curve_warped" not in out
    assert out["plot"] == str(plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_main_table(fake_loader, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bench.main(["--input", str(tmp_path), "--warp", "--limit", "12"]) == 0
    captured = capsys.readouterr()
    assert "fixed mIoU" in captured.out and "warp mIoU" in captured.out
    assert "12 frames" in captured.out
    assert (tmp_path / f"selector_{tmp_path.name}_pixel.png").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "/no/such/input"], "does not exist"),
        (["--mode", "bogus"], "unknown selection mode"),
        (["--mode", "off"], "unknown selection mode"),
    ],
)
def test_main_errors_are_one_line(fake_loader, tmp_path, capsys, argv, message):
    argv = argv if "--input" in argv else ["--input", str(tmp_path), *argv]
    assert bench.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("cloudseg bench selector")


def test_main_no_frames(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(
        "cloudseg.selection.reference.load_labelled_sequence",
        lambda *a, **k: LabelledSequence("empty", [], [], [], FPS),
    )
    assert bench.main(["--input", str(tmp_path), "--no-plot"]) == 1
    assert "no frames" in capsys.readouterr().err


def test_registered_in_the_cli():
    from cloudseg.cli import BENCH_COMMANDS

    assert "selector" in BENCH_COMMANDS


@pytest.mark.slow
def test_real_sequence(shared_data: Path, weights_env: Path, tmp_path: Path, capsys):
    """Six frames of aachen_seq0000 with ESPNetv2's own labels (computed here, no cache)."""
    seq_dir = shared_data / "sequences" / "aachen_seq0000"
    if not seq_dir.is_dir():
        pytest.skip(f"{seq_dir} is missing")
    plot = tmp_path / "aachen.png"
    argv = ["--input", str(seq_dir), "--limit", "6", "--json", "--plot", str(plot)]
    argv += ["--thresholds", "0.001,0.06,0.3", "--device", "cpu"]
    assert bench.main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["frames"] == 6 and out["frame_size"] == "2048x1024"
    assert out["curve"][0]["sent_fraction"] == 1.0
    assert out["curve"][0]["miou_vs_every_frame"] == pytest.approx(1.0)
    fractions = [e["sent_fraction"] for e in out["curve"]]
    assert fractions == sorted(fractions, reverse=True) and fractions[-1] < 1.0
    assert out["curve"][-1]["miou_vs_every_frame"] < 1.0
    assert 50 < out["curve"][0]["kbps"] < 20000
    assert plot.is_file()


def test_one_key_threshold_for_every_point(seq):
    result = bench.sweep(
        seq.frames,
        seq.stamps_ns,
        seq.labels,
        seq.fps,
        thresholds=(0.005, 0.02, 0.3),
        key_threshold=0.2,
    )
    assert {p.key_threshold for p in result.curve} == {0.2}
    assert max(p.threshold for p in result.curve) <= 0.2  # USEFUL above KEY is left out
    key, _ = DEFAULT_THRESHOLDS["pixel"]
    assert (result.default_index is None) == (key != 0.2)
    assert "KEY threshold 0.2" in format_table(result)
