"""The `cloudseg` command: subcommands, benchmarks and conversion, as a user runs them."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import numpy as np
import pytest

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
    assert again.returncode == 2 and "Traceback" not in again.stderr  # refuses to overwrite


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


def _all_help_argvs() -> list[list[str]]:
    """Every `--help` of the command: itself, each subcommand, and each benchmark, trainer and
    node under them (walked from the parser and the command tables, so a new one is covered)."""
    from cloudseg.cli import BENCH_COMMANDS, TRAIN_COMMANDS, build_parser
    from cloudseg.graph import NODES

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    argvs = [["--help"]] + [[name, "--help"] for name in sub.choices]
    argvs += [["bench", name, "--help"] for name in BENCH_COMMANDS]
    argvs += [["train", name, "--help"] for name in TRAIN_COMMANDS]
    argvs += [["node", name, "--help"] for name in NODES]
    argvs += [["node", name, "-h"] for name in NODES]
    return argvs


def test_every_help_works(capsys):
    """Each `--help` prints a usage on stdout and exits 0, without starting anything (a node's
    help comes from cloudseg.graph: its description and parameters)."""
    from cloudseg.cli import main

    argvs = _all_help_argvs()
    assert len(argvs) > 30
    for argv in argvs:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's --help
            code = exc.code
        out = capsys.readouterr()
        assert code == 0, (argv, out.err)
        assert "usage" in out.out.lower(), (argv, out.out[:300], out.err[-300:])
    main(["node", "compressor", "--help"])
    out = capsys.readouterr().out
    assert "crf (default 25; 0..51)" in out and "config/vehicle.yaml" in out


def test_run_param_overrides_are_typed_and_checked():
    from cloudseg.launcher import parse_param_overrides

    got = parse_param_overrides(
        "pipeline",
        [
            "compressor.scale:=2",
            "segmentation:device=cpu",
            "source.loop:=true",
            "source.rate:=5",
            "source.input:='/data/my bag'",
            "controller.window_s:=2",
        ],
    )
    assert got == {
        "vehicle": {"scale": 2},  # the compressor runs in the vehicle process
        "cloud": {"device": "cpu"},
        "source": {"loop": True, "rate": 5.0, "input": "/data/my bag"},
        "controller": {"window_s": 2.0},
    }
    assert parse_param_overrides("cloud_split", ["sr.restore:=sr"]) == {"sr": {"restore": "sr"}}
    bad = {
        "compressor.scale:=0": "scale=0: must be one of 1, 2, 3, 4, 8",
        "compressor.scale:=two": "scale='two': must be an integer",
        "compressor.codec:=vp9": "must be one of h264, jpeg, png",
        "compressor.speed:=2": "node compressor has no parameter 'speed' (its parameters: scale",
        "monitor.x:=1": "graph pipeline has no node 'monitor' (its nodes: ",
        "source.loop:=maybe": "must be true or false",
        "scale=2": "expected NODE.NAME:=VALUE",
    }
    for item, reason in bad.items():
        with pytest.raises(ValueError, match=re.escape(reason)):
            parse_param_overrides("pipeline", [item])
    with pytest.raises(ValueError, match="graph vehicle has no node 'segmentation'"):
        parse_param_overrides("vehicle", ["segmentation.device:=cpu"])
    result = _cloudseg("run", "pipeline", "-p", "compressor.crf:=60", timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "cloudseg run: -p compressor.crf:=60: crf=60: must be <= 51"


def test_log_reason_is_the_last_meaningful_error_line(tmp_path):
    from cloudseg.launcher import log_reason

    log = tmp_path / "cloud.log"
    log.write_text(
        "[INFO] [1.5] [segmentation]: loading\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "    raise KeyError\n"
        "    ^^^^^^^^^^^^^^\n"
        "cloud_node: weight file icnet.pth not found\n"
        "[WARN] [2.0] [rcl]: shutdown noise\n\n"
    )
    assert log_reason(log) == "cloud_node: weight file icnet.pth not found"
    log.write_text(
        "[INFO] [1.0] [source]: hi\n[ERROR] [1.1] [source]: cannot open input: gone\n"
        "[INFO] [1.2] [source]: bye\n"
    )
    assert log_reason(log) == "source: cannot open input: gone"
    log.write_text("[INFO] [1.0] [sr]: up\n[WARN] [1.1] [sr]: odd\n")
    assert log_reason(log) == "sr: odd"
    assert log_reason(tmp_path / "missing.log") == ""


def test_split_cloud_restores_as_asked():
    """`demo --cloud cloud_split --restore sr` must not restore bilinearly because
    config/cloud_split.yaml says so: the override comes after the parameter file."""
    from cloudseg.demo import cloud_overrides
    from cloudseg.launcher import node_command

    assert cloud_overrides("cloud_split")["sr"] == {"restore": "sr"}
    assert cloud_overrides("cloud_split", sr_bypass=True)["sr"] == {"restore": "bilinear"}
    assert cloud_overrides("cloud", cloud_params={"device": "cpu"})["cloud"] == {
        "restore": "sr",
        "device": "cpu",
    }
    assert cloud_overrides("cloud_bilinear") == {}  # the bilinear baseline stays bilinear
    # split: the sr process restores on the device asked for, with the SR weights asked for
    split = cloud_overrides("cloud_split", cloud_params={"device": "cpu", "sr_weights": "div2k"})
    assert split["sr"] == {"restore": "sr", "device": "cpu", "sr_weights": "div2k"}
    assert split["segmentation"] == {"device": "cpu"}
    cmd = node_command("sr", "config/cloud_split.yaml", cloud_overrides("cloud_split")["sr"])
    assert cmd.index('restore:="sr"') > cmd.index("--params-file")


def _robot_bag(path):
    """A bag as a robot records it: colour on /camera/color/image_raw (bayer_rggb8), its
    compressed twin, and an IMU-like non-image topic."""
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer

    from cloudseg.data.bag import typestore

    ts = typestore()
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    rgb = np.full((32, 64, 3), (200, 90, 30), np.uint8)
    mosaic = rgb[..., 1].copy()
    mosaic[0::2, 0::2], mosaic[1::2, 1::2] = 200, 30  # R and B sites of an RGGB sensor
    _, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {
            "/camera/color/image_raw": writer.add_connection(
                "/camera/color/image_raw", "sensor_msgs/msg/Image", typestore=ts
            ),
            "/camera/color/image_raw/compressed": writer.add_connection(
                "/camera/color/image_raw/compressed",
                "sensor_msgs/msg/CompressedImage",
                typestore=ts,
            ),
            "/imu/label": writer.add_connection("/imu/label", "std_msgs/msg/String", typestore=ts),
        }
        for i in range(3):
            stamp_ns = 1_000_000_000 + i * 50_000_000
            header = Header(
                stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id="c"
            )
            msgs = {
                "/camera/color/image_raw": ts.types["sensor_msgs/msg/Image"](
                    header=header, height=32, width=64, encoding="bayer_rggb8", is_bigendian=0,
                    step=64, data=mosaic.reshape(-1),
                ),
                "/camera/color/image_raw/compressed": ts.types["sensor_msgs/msg/CompressedImage"](
                    header=header, format="png", data=png
                ),
                "/imu/label": ts.types["std_msgs/msg/String"](data="x"),
            }  # fmt: skip
            for topic, msg in msgs.items():
                writer.write(conns[topic], stamp_ns, ts.serialize_cdr(msg, msg.__msgtype__))
    return path, rgb


def test_topic_picks_a_bags_image_topic_on_convert_demo_and_run(tmp_path):
    """`--topic` reads a robot bag's colour topic (raw Bayer or compressed); a topic the bag
    lacks is answered on the command line, with the bag's image topics, before anything
    starts."""
    bag, rgb = _robot_bag(tmp_path / "robot")
    for topic in ("/camera/color/image_raw", "/camera/color/image_raw/compressed"):
        out = tmp_path / topic.replace("/", "_")
        result = _cloudseg("convert", str(bag), str(out), "--topic", topic)
        assert result.returncode == 0, result.stderr
        frames = list(open_source(out))  # written on /camera/image_raw, rgb8
        assert len(frames) == 3
        assert np.array_equal(frames[0].rgb[4:-4, 4:-4], rgb[4:-4, 4:-4]), topic
    listing = (
        "its image topics: /camera/color/image_raw (Image, 3 messages), "
        "/camera/color/image_raw/compressed (CompressedImage, 3 messages)"
    )
    for argv, code in (
        (["convert", str(bag), str(tmp_path / "never")], 2),
        (["demo", "--input", str(bag)], 2),
        (["run", "pipeline", "--input", str(bag), "--topic", "/camera/depth"], 2),
    ):
        result = _cloudseg(*argv, timeout=60)
        assert result.returncode == code, (argv, result.stderr)
        assert listing in result.stderr and "/imu/label" not in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "never").exists()
    result = _cloudseg("demo", "--topic", "/camera/color/image_raw", timeout=60)
    assert result.returncode == 2 and "picks a rosbag2's image topic" in result.stderr


def test_bad_input_exits_2_with_its_reason_from_every_command(tmp_path):
    """The same bad input (a missing path; a bag whose images are all broken) ends `demo`,
    `convert`, `run` and `eval` alike: exit 2 (argparse's usage error) and the reason in the
    last line, before anything starts."""
    from test_bag import _msg_image, _write_bag

    short_step = _msg_image("rgb8", 2, 5, 10, np.zeros(20), 1)
    broken = _write_bag(tmp_path / "broken", [(1, short_step), (2, short_step)])
    reasons = {
        tmp_path / "missing": "does not exist",
        broken: "2 messages failed to decode; the first: image step 10 is shorter",
    }
    for bad, reason in reasons.items():
        for argv in (
            ["demo", "--input", str(bad)],
            ["convert", str(bad), str(tmp_path / "out.bag")],
            ["run", "pipeline", "--input", str(bad)],
            ["eval", "--data", str(bad)],
        ):
            result = _cloudseg(*argv, timeout=120)
            last = result.stderr.strip().splitlines()[-1]
            assert result.returncode == 2, (argv, result.stderr)
            assert last.startswith(f"cloudseg {argv[0]}: ") and reason in last, (argv, last)
            assert str(bad) in last and "Traceback" not in result.stderr
    assert not (tmp_path / "out.bag").exists()
