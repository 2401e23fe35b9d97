"""The `cloudseg` command: subcommands, benchmarks and conversion, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from cloudseg.data.sources import open_source


def _cloudseg(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cloudseg.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bench_bitrate_fewer_bits_at_higher_scale(shared_data):
    result = _cloudseg(
        "bench",
        "bitrate",
        "--input",
        str(shared_data / "sequences" / "aachen_seq0000"),
        "--frames",
        "3",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout.strip().splitlines()[-1])["rows"]
    crf = {r["scale"]: r for r in rows if r["codec"] == "h264 crf23"}
    assert set(crf) == {1, 2, 4}
    assert crf[1]["kbps"] > 2 * crf[2]["kbps"] > 0  # ~4x fewer pixels
    assert crf[1]["psnr_db"] > crf[2]["psnr_db"] > crf[4]["psnr_db"] > 25


def test_convert_writes_a_bag_the_source_replays(shared_data, tmp_path):
    bag = tmp_path / "seq.bag"
    result = _cloudseg(
        "convert",
        str(shared_data / "sequences" / "aachen_seq0000"),
        str(bag),
        "--storage",
        "sqlite3",
    )
    assert result.returncode == 0, result.stderr
    frames = list(open_source(bag, limit=2))
    originals = list(open_source(shared_data / "sequences" / "aachen_seq0000", limit=2))
    assert len(frames) == 2 and frames[1].stamp_ns - frames[0].stamp_ns == round(1e9 / 17)
    assert np.array_equal(frames[0].rgb, originals[0].rgb)
    again = _cloudseg("convert", str(shared_data / "sequences" / "aachen_seq0000"), str(bag))
    assert again.returncode == 1 and "Traceback" not in again.stderr  # refuses to overwrite


def test_eval_and_bench_take_their_own_options():
    assert "--data" in _cloudseg("eval", "--help").stdout
    assert "--batch" in _cloudseg("bench", "cloud", "--help").stdout
    result = _cloudseg("eval", "--data", "/no/such/cityscapes")
    assert result.returncode == 2 and "/no/such/cityscapes" in result.stderr
    assert "Traceback" not in result.stderr
    result = _cloudseg("demo", "--no-such-option")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


def test_train_and_bench_accuracy_help() -> None:
    from cloudseg.cli import main

    for argv in (
        ["train", "sr", "--help"],
        ["train", "finetune", "--help"],
        ["train", "icnet", "--help"],
    ):
        assert main(argv) == 0
    assert main(["bench", "accuracy", "--help"]) == 0
    assert main(["train", "--help"]) == 0 and main(["bench", "--help"]) == 0
    assert main(["train"]) == 2
