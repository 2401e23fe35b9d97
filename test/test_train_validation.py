"""Validation during training runs the serving pipeline over the live model without changing
it: the parameters the optimiser holds keep their storage and memory format. On CUDA the
pipeline's default is channels_last; here on the CPU that default is forced on it (the stand-in
for a GPU), so a validation that let the pipeline convert the live weights would fail."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from cloudseg.restore.pipeline import RestorationPipeline


@pytest.fixture
def channels_last_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pipelines default to channels_last as on CUDA (explicit choices are kept)."""
    original = RestorationPipeline.from_modules.__func__

    def from_modules(cls, *args, **options):
        options.setdefault("channels_last", True)
        return original(cls, *args, **options)

    monkeypatch.setattr(RestorationPipeline, "from_modules", classmethod(from_modules))


def _layout(module: torch.nn.Module) -> dict[str, tuple]:
    return {
        name: (p.data_ptr(), p.stride(), p.is_contiguous()) for name, p in module.named_parameters()
    }


def test_stream_validation_keeps_the_live_model(weights_env, channels_last_by_default) -> None:
    from cloudseg.train.stream import Route, validate
    from cloudseg.train.stream_data import StreamCodec

    route = Route("lr_seg", argparse.Namespace(init="default", bn="train")).train()
    model = route.trained
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    logits, _ = route(torch.rand(1, 3, 32, 64))
    logits.mean().backward()
    optimizer.step()  # the optimiser's state exists, contiguous like the weights
    before = _layout(model)
    assert all(contiguous for _, _, contiguous in before.values())
    rng = np.random.default_rng(0)
    frames = [
        (
            rng.integers(0, 256, (64, 128, 3), dtype=np.uint8),
            rng.integers(0, 19, (128, 256), dtype=np.uint8),
        )
    ]
    metrics = validate(route, frames, StreamCodec(crfs=(23,)), 0, torch.device("cpu"))
    assert 0.0 <= metrics["val_miou"] <= 1.0
    assert _layout(model) == before
    assert route.training  # back to training mode
    state = optimizer.state[next(iter(optimizer.state))]
    assert state["exp_avg"].is_contiguous()
    optimizer.step()  # the state and the weights still line up


def test_sr_validation_keeps_the_live_model(weights_env, channels_last_by_default, tmp_path):
    import cv2

    from cloudseg.media.stream import default_compressor_settings
    from cloudseg.models.registry import build_model
    from cloudseg.train.sr import validate

    for kind, name, image in (
        ("leftImg8bit", "x_000000_000001_leftImg8bit.png", np.full((128, 256, 3), 90, np.uint8)),
        ("gtFine", "x_000000_000001_gtFine_labelTrainIds.png", np.zeros((128, 256), np.uint8)),
    ):
        folder = tmp_path / kind / "val" / "x"
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / name), image)
    sr = build_model("carn_m", "div2k").train()
    before = _layout(sr)
    settings = default_compressor_settings(scale=4, crf=23)
    metrics = validate(sr, None, "espnetv2", settings, tmp_path, "val", 1, torch.device("cpu"))
    assert np.isfinite(metrics["val_psnr"])
    assert _layout(sr) == before and sr.training
