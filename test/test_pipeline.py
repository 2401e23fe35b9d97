"""RestorationPipeline on real crops with the real CARN-M and ESPNetv2 weights; ICNet untrained;
the overlay; and ``cloudseg bench cloud`` on CPU without any ROS (or cityscapesScripts) import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cloudseg.data.cityscapes import TRAIN_ID_COLORS, load_label_train_ids, load_rgb
from cloudseg.media.quality import psnr
from cloudseg.media.resize import downsample, upsample_bilinear
from cloudseg.metrics import ConfusionMatrix
from cloudseg.models.carn import upscale_image
from cloudseg.models.weights import WeightsError
from cloudseg.restore.backends import PipelineError
from cloudseg.restore.labels import overlay
from cloudseg.restore.pipeline import RestorationPipeline

FRAME = "frankfurt/frankfurt_000000_000576"
CROPS = ((slice(384, 640), slice(768, 1280)), (slice(256, 512), slice(0, 512)))  # 512x256 HR
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(shared_data: Path) -> dict[str, Path]:
    return {
        "carn_m": shared_data / "weights/carn/carn_m.pth",
        "espnetv2": shared_data / "weights/espnetv2/espnetv2_s_2.0_city_1024x512.pth",
    }


@pytest.fixture(scope="module")
def crops(shared_data: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(hr 256x512x3, lr 64x128x3 by area x4, gt train ids 256x512) of two real crops."""
    rgb = load_rgb(shared_data / f"cityscapes/leftImg8bit/val/{FRAME}_leftImg8bit.png")
    gt = load_label_train_ids(shared_data / f"cityscapes/gtFine/val/{FRAME}_gtFine_labelIds.png")
    out = []
    for rows, cols in CROPS:
        hr = np.ascontiguousarray(rgb[rows, cols])
        out.append((hr, downsample(hr, 4, "area"), np.ascontiguousarray(gt[rows, cols])))
    return out


@pytest.fixture(scope="module")
def espnet(weights: dict[str, Path]) -> RestorationPipeline:
    return RestorationPipeline(
        "carn_m",
        "espnetv2",
        sr_weights=weights["carn_m"],
        seg_weights=weights["espnetv2"],
        return_restored=True,
    )


@pytest.fixture(scope="module")
def icnet(weights: dict[str, Path]) -> RestorationPipeline:
    return RestorationPipeline(
        "carn_m", "icnet", sr_weights=weights["carn_m"], allow_untrained=True
    )


@pytest.mark.parametrize("mode", ["sr", "bilinear", "full"])
def test_modes_shapes_dtypes_and_accuracy(espnet: RestorationPipeline, crops, mode: str) -> None:
    hr, lr, gt = crops[0]
    result = espnet.process((hr if mode == "full" else lr)[None], mode)
    assert result.mode == mode and result.reduced_by == 1 and result.untrained == ()
    assert result.labels.shape == (1, 256, 512) and result.labels.dtype == torch.uint8
    assert result.restored.shape == (1, 256, 512, 3) and result.restored.dtype == torch.uint8
    values = set(torch.unique(result.labels).tolist())
    assert values <= set(range(19)) | {255} and len(values) >= 3
    assert set(result.timings_ms) == {"sr", "segmentation", "total"}
    assert all(v >= 0 for v in result.timings_ms.values())
    assert result.timings_ms["total"] >= result.timings_ms["segmentation"]
    cm = ConfusionMatrix()
    cm.update(result.labels[0], gt)
    assert cm.pixel_accuracy() > 0.75  # real weights on a real crop: a real segmentation
    if mode == "full":
        np.testing.assert_array_equal(result.restored[0].numpy(), hr)


def test_sr_restores_better_than_bilinear_and_matches_carn(espnet, crops) -> None:
    hr, lr, _ = crops[0]
    sr = espnet.process(lr[None], "sr").restored[0].numpy()
    bilinear = espnet.process(lr[None], "bilinear").restored[0].numpy()
    # the pipeline's SR is CARN-M x4 itself (one pass of the body, rounded and clamped)
    reference = upscale_image(espnet.sr, lr, 4)
    assert np.abs(sr.astype(int) - reference).max() <= 1
    # its bilinear bypass is the usual half-pixel bilinear (as OpenCV's) within rounding
    assert np.abs(bilinear.astype(int) - upsample_bilinear(lr, (512, 256))).max() <= 2
    assert psnr(sr, hr) > psnr(bilinear, hr) + 1.0  # area degradation: SR clearly helps


def test_batch_of_streams_equals_single_frames(espnet, crops) -> None:
    batch = np.stack([lr for _, lr, _ in crops])
    together = espnet.process(batch, "sr", return_restored=False)
    assert together.restored is None and together.labels.shape == (2, 256, 512)
    for i, (_, lr, _) in enumerate(crops):
        alone = espnet.process(torch.from_numpy(lr), "sr").labels[0]  # one HxWx3 frame
        assert (alone == together.labels[i]).float().mean() > 0.999


def test_cpu_max_width_reduces_resolution(weights, crops) -> None:
    pipeline = RestorationPipeline(
        "carn_m",
        "espnetv2",
        sr_weights=weights["carn_m"],
        seg_weights=weights["espnetv2"],
        cpu_max_width=256,
    )
    _, lr, _ = crops[0]
    result = pipeline.process(lr[None], "sr")
    assert result.reduced_by == 2 and result.labels.shape == (1, 128, 256)
    assert pipeline.process(lr[None], "full").reduced_by == 1  # 128 wide already fits


def test_restore_only_pipeline_builds_no_segmenter_and_restores_as_the_full_one(
    espnet, weights, crops
) -> None:
    """A split cloud's sr process: stage 1 only, the same image the full pipeline segments."""
    restore_only = RestorationPipeline(
        "carn_m", "espnetv2", sr_weights=weights["carn_m"], restore_only=True
    )
    assert restore_only.segmenter is None and "restore only" in restore_only.describe()
    assert restore_only.trained_resolution == (1024, 512)  # from the registry, not the weights
    _, lr, _ = crops[0]
    for mode in ("sr", "bilinear"):
        out = restore_only.restore_image(lr[None], mode)
        full = espnet.process(lr[None], mode).restored
        assert out.images.dtype == torch.uint8 and out.images.shape == (1, 256, 512, 3)
        assert out.mode == mode and out.reduced_by == 1 and out.sr_ms >= 0
        # SR: the very image the full pipeline segments; bilinear on uint8 (CPU): within 1
        assert (out.images.int() - full.int()).abs().max() <= (0 if mode == "sr" else 1)
    with pytest.raises(PipelineError, match="restores only"):
        restore_only.process(lr[None], "sr")
    # camera 2048 wide (x4 stream of 512): the trained resolution is half of it: SR x2
    wide = np.zeros((128, 512, 3), np.uint8)
    for mode in ("sr", "bilinear"):
        out = restore_only.restore_image(wide[None], mode)
        assert out.reduced_by == 2 and out.images.shape == (1, 256, 1024, 3)


def test_icnet_untrained_is_flagged_and_refused_without_permission(icnet, weights, crops):
    assert icnet.untrained == ("icnet_resnet50",)
    assert "UNTRAINED" in icnet.describe()
    _, lr, _ = crops[0]
    for mode in ("sr", "bilinear"):
        result = icnet.process(lr[None], mode)
        assert result.untrained == ("icnet_resnet50",)
        assert result.labels.shape == (1, 256, 512)
        assert int(result.labels.max()) < 19  # ICNet has no background class
    with pytest.raises(WeightsError):
        RestorationPipeline("carn_m", "icnet", sr_weights=weights["carn_m"])


def test_sr_pyramid_reaches_icnet_without_resampling(icnet, crops) -> None:
    """ICNet's levels {4: lr, 2: mr, 1: hr} are the input and CARN's own x2 and x4 outputs,
    normalised."""
    _, lr, _ = crops[0]
    sr_outputs: list[torch.Tensor] = []
    icnet_inputs: list[tuple[torch.Tensor, ...]] = []
    hooks = [
        icnet.sr.add_mean.register_forward_hook(lambda m, i, o: sr_outputs.append(o.clone())),
        icnet.segmenter.register_forward_pre_hook(
            lambda m, args: icnet_inputs.append(tuple(args[0][k].clone() for k in (4, 2, 1)))
        ),
    ]
    try:
        icnet.process(lr[None], "sr")
    finally:
        for hook in hooks:
            hook.remove()
    assert [tuple(o.shape[-2:]) for o in sr_outputs] == [(128, 256), (256, 512)]
    assert len(icnet_inputs) == 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    lr_in, mr_in, hr_in = (t * std + mean for t in icnet_inputs[0])
    lr_ref = torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255
    torch.testing.assert_close(lr_in, lr_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(mr_in, sr_outputs[0].clamp(0, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(hr_in, sr_outputs[1].clamp(0, 1), atol=1e-5, rtol=0)


def test_bad_input_and_options_raise(espnet, weights, crops) -> None:
    _, lr, _ = crops[0]
    bad_inputs = [
        (lr.astype(np.float32)[None], "uint8"),
        (lr[None, :, :, :2], "N x h x w x 3"),
        ([lr], "numpy array or torch tensor"),
    ]
    for frames, reason in bad_inputs:
        with pytest.raises(PipelineError, match=reason):
            espnet.process(frames, "sr")
    with pytest.raises(PipelineError, match="unknown mode"):
        espnet.process(lr[None], "bicubic")
    with pytest.raises(PipelineError, match="needs CUDA"):
        RestorationPipeline(None, "espnetv2", seg_weights=weights["espnetv2"], dtype="fp16")
    with pytest.raises(PipelineError, match="unknown segmentation backend"):
        RestorationPipeline(None, "deeplab")
    with pytest.raises(PipelineError, match="not a super-resolution model"):
        RestorationPipeline("espnetv2_s2_city_512x256", "espnetv2")
    with pytest.raises(PipelineError, match="CUDA"):
        RestorationPipeline(None, "espnetv2", seg_weights=weights["espnetv2"], compile=True)
    if not torch.cuda.is_available():
        with pytest.raises(PipelineError, match="CUDA is not available"):
            RestorationPipeline(None, "espnetv2", device="cuda")
    no_sr = RestorationPipeline.from_modules(None, espnet.segmenter, "espnetv2")
    with pytest.raises(PipelineError, match="needs an SR model"):
        no_sr.process(lr[None], "sr")
    assert no_sr.process(lr[None], "bilinear").labels.shape == (1, 256, 512)


def test_overlay_blends_cityscapes_colours() -> None:
    rgb = np.full((2, 3, 3), 100, np.uint8)
    labels = np.array([[0, 13, 255], [18, 255, 0]], np.uint8)
    out = overlay(rgb, labels, alpha=0.5)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    expected_road = (100 + TRAIN_ID_COLORS[0].astype(int)) / 2
    assert np.abs(out[0, 0].astype(int) - expected_road).max() <= 1
    np.testing.assert_array_equal(out[0, 2], rgb[0, 2])  # ignore keeps the image
    np.testing.assert_array_equal(overlay(rgb, labels, alpha=1.0)[1, 0], TRAIN_ID_COLORS[18])
    np.testing.assert_array_equal(overlay(rgb, torch.from_numpy(labels), alpha=0.0), rgb)
    with pytest.raises(ValueError, match="do not match"):
        overlay(rgb, labels[:1])


_NO_ROS = """
import importlib.abc, json, sys
BLOCKED = ("rclpy", "rosbags", "std_msgs", "sensor_msgs", "mcap", "cityscapesscripts", "tqdm")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked import of {name}")
sys.meta_path.insert(0, Block())
from cloudseg.bench.cloud import main
sys.exit(main(sys.argv[1:]))
"""


def test_bench_cloud_runs_on_cpu_without_ros() -> None:
    """Tiny CPU run in a process where ROS, rosbags and cityscapesScripts cannot be imported."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    args = ["--device", "cpu", "--size", "128x64", "--iters", "1", "--warmup", "0"]
    proc = subprocess.run(
        [sys.executable, "-c", _NO_ROS, *args, "--batch", "1", "2", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["device"] == "cpu" and "random weights" in report["weights"]
    assert [(r["dtype"], r["batch"]) for r in report["rows"]] == [("fp32", 1), ("fp32", 2)]
    for row in report["rows"]:
        assert row["total_ms"] > 0 and row["sr_ms"] > 0 and row["segmentation_ms"] > 0
    assert report["decode_ms"] > 0
    bad = subprocess.run(
        [sys.executable, "-c", _NO_ROS, "--device", "cpu", "--dtype", "fp16"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and "fp16" in bad.stderr and "Traceback" not in bad.stderr
