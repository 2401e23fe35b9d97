"""One optimisation step of each trainer's model and loss on a device, on synthetic batches:
the standing GPU check's training section (`cloudseg.bench.gpu_check`).

Each step builds the trainer's own network (random weights where a trainer starts from
downloaded ones: the step checks the device path, not the result), computes the trainer's own
loss (`cloudseg.train.sr.compute_loss`, `cloudseg.models.icnet.icnet_loss`, the stream
trainer's `Route`, the selector's L1 on `SelectorNet`), steps Adam once, and checks that the
loss is finite and the trained weights moved.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cloudseg.models.registry import build_model

__all__ = ["TRAINERS", "train_step"]


def _random(name: str) -> nn.Module:
    return build_model(name, None, pretrained=False, allow_untrained=True)


def _rgb(n: int, h: int, w: int, device: torch.device, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, h, w), generator=gen).to(device)


def _labels(n: int, h: int, w: int, device: torch.device) -> Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 19, (n, h, w), generator=gen).to(device)


def _sr(device: torch.device, finetune: bool) -> tuple[nn.Module, Callable[[], Tensor]]:
    from cloudseg.train.data import CropBatch
    from cloudseg.train.segmenter import FrozenSegmenter
    from cloudseg.train.sr import compute_loss

    sr = _random("carn_m").to(device).train()
    lr = _rgb(2, 32, 32, device)
    hr, mr = _rgb(2, 128, 128, device, 2), _rgb(2, 64, 64, device, 3)
    if not finetune:
        batch = CropBatch(lr, {1: hr, 2: mr}, None)
        return sr, lambda: compute_loss(sr, None, batch, 4, 1, 0.0)[0]
    seg = FrozenSegmenter(_random("espnetv2_s2_city_1024x512")).to(device)
    batch = CropBatch(lr, {1: hr}, _labels(2, 128, 128, device))
    return sr, lambda: compute_loss(sr, seg, batch, 4, 1, 1.0)[0]


def _icnet(device: torch.device) -> tuple[nn.Module, Callable[[], Tensor]]:
    from cloudseg.models.icnet import icnet_loss
    from cloudseg.train.icnet_recipe import to_input

    model = _random("icnet_resnet50").to(device).train()
    images = torch.randint(0, 256, (2, 256, 256, 3), dtype=torch.uint8)
    target = _labels(2, 256, 256, device)

    def loss() -> Tensor:
        outputs = model(to_input(images, device))
        return icnet_loss(tuple(o.float() for o in outputs), target, 255)

    return model, loss


def _stream(device: torch.device) -> tuple[nn.Module, Callable[[], Tensor]]:
    from cloudseg.train import stream

    args = argparse.Namespace(init="default", sr_weights="default", seg_weights="default")
    build, stream._build = stream._build, lambda name, weights: _random(name)  # no files
    try:
        route = stream.Route("sr_ft", args).to(device).train()
    finally:
        stream._build = build
    lr = _rgb(2, 64, 64, device)
    target = _labels(2, 128, 128, device)
    return route.trained, lambda: F.cross_entropy(route(lr)[0], target, ignore_index=255)


def _selector(device: torch.device) -> tuple[nn.Module, Callable[[], Tensor]]:
    from cloudseg.models.selector_net import INPUT_SIZE, SelectorNet

    model = SelectorNet().to(device).train()
    w, h = INPUT_SIZE
    x = torch.randint(0, 256, (4, 3, h, w), dtype=torch.uint8).to(device)
    target = torch.tensor([0.1, 0.6], device=device)

    def loss() -> Tensor:
        fa, fb = model.features(x).chunk(2)
        return F.l1_loss(model(fa, fb), target)

    return model, loss


TRAINERS: dict[str, Callable[[torch.device], tuple[nn.Module, Callable[[], Tensor]]]] = {
    "sr": lambda d: _sr(d, finetune=False),
    "finetune": lambda d: _sr(d, finetune=True),
    "icnet": _icnet,
    "stream": _stream,
    "selector": _selector,
}


def train_step(trainer: str, device: torch.device) -> str:
    """One Adam step of ``trainer`` on ``device``: a line saying the loss; raises
    AssertionError when the loss is not finite or no weight moved."""
    model, loss_fn = TRAINERS[trainer](device)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    loss = loss_fn()
    loss.backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    value = float(loss.detach())
    assert math.isfinite(value), f"loss {value}"
    moved = sum(not torch.equal(a, p.detach()) for a, p in zip(before, params, strict=True))
    assert moved > 0, "no weight moved"
    return f"loss {value:.3f}, {moved}/{len(params)} weight tensors moved"
