"""The pieces of the published ICNet recipe (liminn/ICNet-pytorch) that ``cloudseg train icnet``
puts together: two learning rates (10x for the ICNet layers), poly decay, the ImageNet backbone,
the input normalisation."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cloudseg.models.icnet import INPUT_MEAN, INPUT_STD
from cloudseg.models.weights import load_state_dict_file
from cloudseg.train.checkpoint import TrainError

__all__ = [
    "HEAD_MODULES",
    "build_optimizer",
    "load_backbone_weights",
    "poly_lr",
    "set_lr",
    "to_input",
]

HEAD_MODULES = ("conv_sub1", "head")  # liminn's ``exclusive`` modules: 10x learning rate


def poly_lr(base_lr: float, step: int, total: int, power: float = 0.9) -> float:
    """Poly schedule: ``base_lr * (1 - step / total) ** power`` (``step`` counts from 0)."""
    if total <= 0:
        return base_lr
    return base_lr * max(0.0, 1.0 - step / total) ** power


def build_optimizer(
    model: nn.Module,
    lr: float,
    head_lr_mult: float = 10.0,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
) -> torch.optim.SGD:
    """SGD with two groups as the reference: backbone at ``lr``, ICNet layers at
    ``lr * head_lr_mult``; each group keeps its factor in ``lr_mult``."""
    head = [p for name in HEAD_MODULES for p in getattr(model, name).parameters()]
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    return torch.optim.SGD(
        [
            {"params": backbone, "lr": lr, "lr_mult": 1.0},
            {"params": head, "lr": lr * head_lr_mult, "lr_mult": head_lr_mult},
        ],
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group to ``lr`` times its ``lr_mult``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


def load_backbone_weights(model: nn.Module, path: Path) -> str:
    """Load an ImageNet ResNet50-v1s state_dict into ``model.pretrained`` (keys bare or under
    ``pretrained.``; the unused ``fc`` may be absent). Returns a description for the card."""
    state = load_state_dict_file(path)
    prefix = "pretrained."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    result = model.pretrained.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        names = (missing + list(result.unexpected_keys))[:3]
        raise TrainError(
            f"--backbone-weights {path} is not a ResNet50-v1s (deep stem) state_dict: "
            f"{len(missing)} missing, {len(result.unexpected_keys)} unexpected keys, "
            f"e.g. {', '.join(names)}"
        )
    return str(path)


def _normaliser(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(INPUT_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(INPUT_STD, device=device).view(1, 3, 1, 1)
    return mean, std


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W) on ``device``."""
    mean, std = _normaliser(device)
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean) / std
