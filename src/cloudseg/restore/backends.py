"""The pipeline's networks: segmentation backend names, devices, dtypes and weights."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from cloudseg import devices
from cloudseg.models.registry import ModelSpec, build_model, get_spec
from cloudseg.models.weights import WeightsError

__all__ = [
    "BACKENDS",
    "DTYPES",
    "PipelineError",
    "build_network",
    "registered_model",
    "resolve_device",
    "segmentation_backend",
    "trained_resolution",
]

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
BACKENDS: dict[str, str] = {
    "espnetv2": "espnetv2_s2_city_1024x512",
    "icnet": "icnet_resnet50",
}
"""Segmentation backend -> default registry model (a full registry name is accepted too)."""


class PipelineError(ValueError):
    """A pipeline that cannot be built or an input it cannot process."""


def resolve_device(device: str | torch.device) -> torch.device:
    """`cloudseg.devices.resolve_device` (cpu, cuda, cuda:N, auto), its errors as
    PipelineError."""
    try:
        return devices.resolve_device(device)
    except devices.DeviceError as exc:
        raise PipelineError(str(exc)) from None


def segmentation_backend(name: str) -> tuple[str, str]:
    """(backend kind, registry model name) for a backend or a registry model name."""
    model_name = BACKENDS.get(name, name)
    for kind in ("espnetv2", "icnet"):
        if model_name.startswith(kind):
            break
    else:
        raise PipelineError(
            f"unknown segmentation backend {name!r}; known: {', '.join(BACKENDS)} "
            f"(or a registered espnetv2_*/icnet_* model)"
        )
    registered_model(model_name, "segmentation", "segmentation")
    return kind, model_name


def registered_model(name: str, task: str, what: str) -> ModelSpec:
    """The registry's spec of ``name``, which must be a ``task`` model (``what`` in errors)."""
    try:
        spec = get_spec(name)
    except KeyError as exc:
        raise PipelineError(str(exc)) from None
    if spec.task != task:
        raise PipelineError(f"model {name!r} is not a {what} model")
    return spec


def build_network(name: str, weights: str | Path | None, allow_untrained: bool) -> nn.Module:
    """build_model, falling back to random init only when allowed and no weights were named."""
    if weights is None:
        return build_model(name, None, pretrained=False, allow_untrained=allow_untrained)
    try:
        return build_model(name, weights)
    except WeightsError as exc:
        if not (allow_untrained and weights == "default"):
            raise
        log.warning("%s: no weights (%s); using RANDOM weights as allowed", name, exc)
        return build_model(name, None, pretrained=False, allow_untrained=True)


def trained_resolution(
    segmenter: nn.Module | None, model_name: str | None = None
) -> tuple[int, int] | None:
    """(width, height) a segmenter's weights were trained at: from the weights it loaded
    (``weights_info.meta["resolution"]``, or the model card of a fine-tuned file), else from
    the registry's default weights of ``model_name``; None when unknown."""
    info = getattr(segmenter, "weights_info", None)
    meta = getattr(info, "meta", None) or {}
    resolution = meta.get("resolution")
    if resolution is None and model_name is not None:
        try:
            spec = get_spec(model_name)
        except KeyError:
            spec = None
        if spec is not None and spec.default_weights is not None:
            resolution = spec.weights[spec.default_weights].meta.get("resolution")
    if resolution is None:
        return None
    width, height = (int(v) for v in resolution)
    return width, height
