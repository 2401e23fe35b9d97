"""``cloudseg eval`` on a tiny Cityscapes-layout folder built in tmp_path from one real frame."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudseg.data.cityscapes import TRAIN_ID_NAMES, load_label_train_ids, load_rgb
from cloudseg.eval import EvalConfig, EvalError, main, parse_config
from cloudseg.media.resize import downsample
from cloudseg.models.weights import load_state_dict_file

FRAME = "frankfurt_000000_000576"


@pytest.fixture(scope="module")
def tiny_cityscapes(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real val frame and its label, downscaled 4x to 512x256 (never inside the repo)."""
    root = tmp_path_factory.mktemp("cityscapes")
    rgb = load_rgb(shared_data / f"cityscapes/leftImg8bit/val/frankfurt/{FRAME}_leftImg8bit.png")
    gt = load_label_train_ids(
        shared_data / f"cityscapes/gtFine/val/frankfurt/{FRAME}_gtFine_labelIds.png"
    )
    small = downsample(rgb, 4, "area")
    labels = cv2.resize(gt, (512, 256), interpolation=cv2.INTER_NEAREST)
    for sub, name, image in (
        ("leftImg8bit", f"{FRAME}_leftImg8bit.png", cv2.cvtColor(small, cv2.COLOR_RGB2BGR)),
        ("gtFine", f"{FRAME}_gtFine_labelTrainIds.png", labels),
    ):
        folder = root / sub / "val" / "frankfurt"
        folder.mkdir(parents=True)
        assert cv2.imwrite(str(folder / name), image)
    return root


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_json_has_the_rows(tiny_cityscapes, weights_env, capsys) -> None:
    code, out, err = _run(
        capsys,
        "--data", str(tiny_cityscapes),
        "--limit", "1", "--json", "--per-class", "--codec", "none", "--no-routes", "--no-default",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    rows = report["rows"]
    assert list(rows) == ["bilinear", "lr_seg", "sr", "hr"]
    assert report["reference"] == "gt" and rows["sr"]["kbps"] is None
    assert rows["lr_seg"]["psnr"] is None  # nothing restored
    assert report["frames"] == 1 and report["untrained"] == [] and report["label"] is None
    assert rows["hr"]["psnr"] is None and rows["hr"]["ssim"] is None
    assert rows["sr"]["psnr"] > rows["bilinear"]["psnr"] > 20  # official CARN-M, area LR
    assert 0 < rows["bilinear"]["ssim"] < rows["sr"]["ssim"] < 1
    for row in rows.values():
        assert 0.1 < row["miou"] <= 1 and 0.5 < row["pixel_accuracy"] <= 1
    assert list(report["per_class"]["hr"]) == list(TRAIN_ID_NAMES)
    assert report["segmenter"] == "espnetv2_s2_city_1024x512"
    # the aligned table comes first, with every row and the per-class block
    assert "PSNR dB" in out and "class IoU" in out and "n/a" in out


def test_eval_saves_a_picture_per_frame(tiny_cityscapes, weights_env, capsys, tmp_path):
    import cv2

    code, _, err = _run(
        capsys,
        "--data",
        str(tiny_cityscapes),
        "--limit",
        "1",
        "--no-routes",
        "--no-default",
        "--save-panels",
        str(tmp_path / "panels"),
    )
    assert code == 0, err
    (png,) = (tmp_path / "panels").glob("*.png")
    panel = cv2.imread(str(png))
    # (image | labels) for the original and ground truth, then every row, hr_stream last
    rows = ["truth", "bilinear", "lr_seg", "sr", "hr", "hr_stream"]
    assert panel.shape[1] == 2 * 1024 and panel.shape[0] % len(rows) == 0
    tile_h = panel.shape[0] // len(rows)
    truth, hr_labels = panel[:tile_h, 1024:], panel[4 * tile_h : 5 * tile_h, 1024:]
    assert np.mean(np.all(truth == hr_labels, axis=2)) > 0.5  # the labels are really drawn


@pytest.fixture
def carded_official(weights_env: Path, tmp_path: Path) -> Path:
    """The official CARN-M weights saved as a cloudseg checkpoint with a model card."""
    from cloudseg.models.registry import build_model
    from cloudseg.train.checkpoint import save_checkpoint

    model = build_model("carn_m", weights_env / "carn/carn_m.pth")
    return save_checkpoint(tmp_path / "ft" / "carn_m_ft.pth", model, {"architecture": "carn_m"})


def test_eval_figure_of_crops(tiny_cityscapes, weights_env, capsys, tmp_path) -> None:
    figure = tmp_path / "figure.png"
    argv = ["--data", str(tiny_cityscapes), "--no-progress", "--figure", str(figure)]
    argv += ["--rows", "sr"]  # the figure's rows: no other row needs to run
    code, _, err = _run(capsys, *argv, "--figure-crop", "0,0,128,64", "--figure-rows", "sr,hr")
    assert code == 0, err
    image = cv2.imread(str(figure))
    assert image.shape == (3 * 64, 2 * 128 + 4, 3)  # truth, sr, hr; image | labels
    code, _, err = _run(capsys, *argv)  # the default crop does not fit a 512x256 frame
    assert code == 2 and "outside" in err


def test_eval_fine_tuned_row_and_h264_stream(
    tiny_cityscapes, weights_env, carded_official, capsys
) -> None:
    """The sr_ft row appears with --sr-ft-weights (here the official weights: same numbers);
    the stream is the compressor's encoder with its defaults, kbit/s beside each row."""
    code, out, err = _run(
        capsys,
        "--data", str(tiny_cityscapes),
        "--sr-ft-weights", str(carded_official),
        "--crf", "30", "--no-lr-seg", "--no-routes", "--no-default",
        "--json", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    rows = report["rows"]
    assert list(rows) == ["bilinear", "sr", "sr_ft", "hr", "hr_stream"]
    assert rows["sr_ft"] == pytest.approx(rows["sr"])
    assert "crf 30" in report["codec"] and "veryfast" in report["codec"]  # the compressor's
    assert report["lr_bytes_per_frame"] > 100 and rows["sr"]["kbps"] == pytest.approx(
        report["lr_bytes_per_frame"] * 8 * 17 / 1000
    )
    assert rows["hr_stream"]["kbps"] > 4 * rows["sr"]["kbps"]  # full resolution costs more
    assert rows["sr"]["psnr"] < 40 and rows["hr"]["kbps"] is None  # lossy; hr is raw
    assert "kbit/s" in out


def test_eval_rows_of_the_learned_routes_and_the_default(
    tiny_cityscapes, weights_env, capsys
) -> None:
    """Every learned route has its row with the project's weights; the default row runs the
    cloud's own service and gives exactly the labels of the route it is."""
    from cloudseg.routes import DEFAULT_ROUTE, ROUTES

    code, out, err = _run(capsys, "--data", str(tiny_cityscapes), "--json", "--no-progress")
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    rows = report["rows"]
    learned = [name for name, route in ROUTES.items() if route.learned]
    assert list(rows) == ["bilinear", "lr_seg", "sr", *learned, "default", "hr", "hr_stream"]
    for name in ("miou", "pixel_accuracy", "kbps", "psnr"):
        assert rows["default"][name] == pytest.approx(rows[DEFAULT_ROUTE.name][name])
    assert rows["lr_seg_ft"]["psnr"] is None  # nothing restored
    assert report["default_route"].startswith(DEFAULT_ROUTE.name)
    assert rows["lr_seg_ft"]["miou"] != pytest.approx(rows["lr_seg"]["miou"])  # other weights


def test_eval_low_resolution_frames(shared_data, weights_env, capsys) -> None:
    """A low-resolution root (cityscapes_lr): its images are the stream's frames, scored
    against the camera-resolution labels; no hr rows."""
    root = shared_data / "cityscapes_lr"
    if not root.is_dir():
        pytest.skip(f"{root} is missing")
    code, out, err = _run(
        capsys,
        *("--data", str(root), "--limit", "1", "--rows", "bilinear,sr,default"),
        *("--json", "--no-progress"),
    )
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["frames"] == 1 and "hr" not in report["rows"]
    assert "frankfurt" in report["data"] or report["frames"] == 1
    for row in report["rows"].values():
        assert 0.1 < row["miou"] <= 1 and row["kbps"] > 100 and row["psnr"] is None


def test_eval_refuses_a_checkpoint_without_card(tiny_cityscapes, weights_env, capsys, tmp_path):
    import torch

    edited = tmp_path / "edited.pth"
    state = load_state_dict_file(weights_env / "carn/carn_m.pth")
    state["entry.bias"] = state["entry.bias"] + 1e-3  # another file: no registered hash
    torch.save(state, edited)
    code, out, err = _run(capsys, "--data", str(tiny_cityscapes), "--sr-ft-weights", str(edited))
    assert code == 2 and out == "" and "no model card" in err


def test_eval_on_a_sequence_scores_against_hr_labels(shared_data, weights_env, capsys) -> None:
    """A sequence is one stream in order (IDR then P-frames) scored against the hr row."""
    code, out, err = _run(
        capsys,
        "--data", str(shared_data / "cityscapes_small_256x128/leftImg8bit/val/frankfurt"),
        "--scale", "2", "--rows", "bilinear", "--no-progress", "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["reference"] == "hr" and report["frames"] == 1
    assert report["rows"]["hr"]["miou"] == pytest.approx(1.0)


def test_icnet_without_weights_is_refused_then_labelled_untrained(
    tiny_cityscapes, weights_env, capsys
) -> None:
    code, out, err = _run(capsys, "--data", str(tiny_cityscapes), "--backend", "icnet")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--allow-untrained" in err
    code, out, err = _run(
        capsys,
        "--data", str(tiny_cityscapes),
        "--backend", "icnet", "--allow-untrained", "--rows", "bilinear,sr", "--json",
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["label"] == "UNTRAINED" and report["untrained"] == ["icnet_resnet50"]
    table = out.strip().splitlines()[:-1]
    assert all("UNTRAINED" in line for line in table if line.startswith(("bilinear", "sr", "hr")))
    assert "UNTRAINED" in table[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "/nonexistent/cityscapes"], "does not exist"),
        (["--sr-weights", "/nonexistent/carn.pth"], "no file"),
        (["--split", "test"], "missing"),
        (["--scale", "0"], "--scale"),
        (["--rows", "bilinear,nope", "--no-routes"], "no row nope"),
    ],
)
def test_errors_exit_2_with_one_line(
    tiny_cityscapes, weights_env, capsys, argv: list[str], message: str
) -> None:
    argv = argv if "--data" in argv else ["--data", str(tiny_cityscapes), *argv]
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err


def test_the_options_fill_the_typed_config(tmp_path: Path) -> None:
    """The command's defaults are the config's own; each option lands in its typed field."""
    assert parse_config(["--data", str(tmp_path)]) == EvalConfig(data=(tmp_path,))
    config = parse_config(
        [
            *("--data", str(tmp_path), "--codec", "none", "--rows", "sr, hr", "--no-routes"),
            *("--sr-row", f"a={tmp_path}/a.pth", "--no-progress", "--figure-crop", "0,0,64,32"),
        ]
    )
    assert (config.codec, config.only_rows, config.route_rows) == ("none", ("sr", "hr"), False)
    assert config.sr_rows == (("a", tmp_path / "a.pth"),) and not config.progress
    assert config.figure_crop == (0, 0, 64, 32) and config.default_row and config.lr_seg_row
    with pytest.raises(EvalError, match="no file"):
        config.validate()
    with pytest.raises(EvalError, match="no data"):
        EvalConfig().validate()


def test_unknown_backend_and_help(capsys) -> None:
    code, _, err = _run(capsys, "--data", ".", "--backend", "deeplab")
    assert code == 2 and "invalid choice" in err
    code, out, _ = _run(capsys, "--help")
    assert code == 0 and "--seg-size" in out and "--sr-ft-weights" in out and "compressor" in out


def test_bench_accuracy_table_has_a_codec_column(tiny_cityscapes, weights_env, capsys) -> None:
    from cloudseg.bench.accuracy import gap_recovered
    from cloudseg.bench.accuracy import main as bench_main

    code = bench_main(
        [
            *("--streams", "none,h264 (default stream)", "--data", str(tiny_cityscapes)),
            *("--rows", "bilinear,sr", "--no-progress"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| stream | row | kbit/s")
    assert any(line.startswith("| none | hr |") and "0.675" in line for line in table)
    assert any(line.startswith("| h264 (default stream) | sr |") for line in table)
    assert gap_recovered(0.5, 0.4, 0.6) == pytest.approx(0.5)


def test_eval_labelled_frame_inside_a_stream(shared_data, weights_env, capsys) -> None:
    """A Cityscapes clip whose 20th frame is annotated: every frame goes through the encoder
    in order (IDR, then P-frames), and only the labelled one (a P-frame) is scored."""
    code, out, err = _run(
        capsys,
        "--data", str(shared_data / "sequences/mp4/frankfurt_000000_000557.mp4"),
        "--gt-root", str(shared_data / "cityscapes"),
        "--limit", "20", "--rows", "sr", "--codec", "jpeg", "--no-progress", "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["reference"] == "gt" and report["frames"] == 1
    assert report["frames_streamed"] == 20 and report["rows"]["sr"]["kbps"] > 100
    assert 0.3 < report["rows"]["hr"]["miou_gt_classes"] <= 1
    code, _, err = _run(
        capsys,
        "--data", str(shared_data / "sequences/mp4/frankfurt_000000_000557.mp4"),
        "--gt-root", str(shared_data / "cityscapes"), "--limit", "3",
    )  # fmt: skip
    assert code == 2 and "no frame of the input has a fine label" in err
