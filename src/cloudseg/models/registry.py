"""Model registry: names -> builder + published weights with their metadata.

In the spirit of torchvision's ``Weights`` enums, simpler: each :class:`ModelSpec` names a
builder (a callable, or ``"module:function"`` imported at build time so optional backends cost
nothing until used) and the weight files it can load. :func:`build_model` never returns a
randomly initialised model by accident: missing weights raise :class:`WeightsError`, and random
init must be asked for with ``pretrained=False, allow_untrained=True``. The models themselves are
registered by :mod:`cloudseg.models.catalog`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from cloudseg.models.cards import CardError, check_card
from cloudseg.models.weights import (
    WeightsError,
    WeightsInfo,
    load_state_dict_file,
    resolve_weights,
    sha256_file,
)

__all__ = [
    "ModelSpec",
    "UnknownModelError",
    "WeightsError",
    "WeightsInfo",
    "build_model",
    "get_spec",
    "list_models",
    "register",
]

log = logging.getLogger(__name__)

Task = Literal["sr", "segmentation", "selector"]
TASKS: tuple[str, ...] = ("sr", "segmentation", "selector")


class UnknownModelError(KeyError):
    """No model is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


@dataclass
class ModelSpec:
    """A registered model: how to build it and which weights it can load."""

    name: str
    task: Task
    builder: Callable[..., nn.Module] | str
    weights: dict[str, WeightsInfo] = field(default_factory=dict)
    default_weights: str | None = None
    description: str = ""
    builder_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"model {self.name!r}: task must be one of {', '.join(TASKS)}")
        if self.default_weights is not None and self.default_weights not in self.weights:
            raise ValueError(
                f"model {self.name!r}: default_weights {self.default_weights!r} "
                f"is not one of {sorted(self.weights)}"
            )

    def resolve_builder(self) -> Callable[..., nn.Module]:
        """The builder callable, importing ``"module:function"`` strings on first use."""
        if callable(self.builder):
            return self.builder
        module_name, sep, attr = self.builder.partition(":")
        if not sep or not module_name or not attr:
            raise ValueError(
                f"model {self.name!r}: builder {self.builder!r} is not 'module:function'"
            )
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ImportError(
                f"model {self.name!r}: cannot import builder {self.builder!r}: {exc}"
            ) from exc


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add a model; a second registration of a name needs ``replace=True``."""
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """The spec registered under ``name``; :class:`UnknownModelError` lists the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        ) from None


def list_models(task: Task | None = None) -> list[str]:
    """Registered model names (sorted), optionally only those of one task."""
    return sorted(n for n, s in _REGISTRY.items() if task is None or s.task == task)


def resolve_model_weights(
    name: str, explicit: str | Path | None = None, *, download: bool = True
) -> Path:
    """Path of model ``name``'s default weight file (searched, cached or downloaded as
    :func:`cloudseg.models.weights.resolve_weights` says), or of ``explicit``."""
    spec = get_spec(name)
    if explicit is None and spec.default_weights is None:
        raise WeightsError(
            f"model {name!r} has no registered weight file; pass an explicit path to the weights"
        )
    info = None if explicit is not None else spec.weights[spec.default_weights]
    return resolve_weights(info, explicit, download=download, model_name=name)


def _pick_weights(spec: ModelSpec, weights: str | Path) -> tuple[WeightsInfo, Path]:
    """Resolve ``weights`` (a key of spec.weights, "default" or a file path) to (info, path)."""
    key = spec.default_weights if weights == "default" else weights
    if weights == "default" and key is None:
        raise WeightsError(
            f"model {spec.name!r} has no registered pretrained weights; pass weights=<path to a "
            f".pth file>, or pretrained=False, allow_untrained=True for random init"
        )
    if isinstance(key, str) and key in spec.weights:
        info = spec.weights[key]
        return info, resolve_weights(info, model_name=spec.name)
    candidate = Path(weights).expanduser()
    if isinstance(weights, str) and not candidate.exists() and not candidate.suffix:
        raise WeightsError(
            f"unknown weights {weights!r} for model {spec.name!r}; registered: "
            f"{', '.join(sorted(spec.weights)) or 'none'} (or give a path to a .pth file)"
        )
    path = resolve_weights(None, explicit=candidate, model_name=spec.name)
    digest = sha256_file(path)
    for info in spec.weights.values():
        if info.sha256 is not None and info.sha256.lower() == digest:
            return info, path
    for other in _REGISTRY.values():  # another model's published file
        for info in other.weights.values():
            if info.sha256 is not None and info.sha256.lower() == digest:
                raise WeightsError(
                    f"{path} is the published weight file of model {other.name!r}: it does not "
                    f"fit model {spec.name!r}"
                )
    # a user file (e.g. fine-tuned): its model card says what it is; no card, no load
    try:
        card = check_card(path, spec.name)
    except CardError as exc:
        raise WeightsError(str(exc)) from None
    meta = {**card, "source": str(path), "task": spec.task}
    return WeightsInfo(path.name, None, digest, meta), path


def build_model(
    name: str,
    weights: str | Path | None = "default",
    *,
    pretrained: bool = True,
    allow_untrained: bool = False,
    **kw: Any,
) -> nn.Module:
    """Build a registered model and load its weights strictly.

    ``weights``: "default", a key of the spec's weights, or a path to a state_dict file;
    ``None`` means no weights (like ``pretrained=False``). Random init happens only with
    ``allow_untrained=True``; the model then has ``untrained = True`` and a WARNING is logged.
    Extra ``kw`` go to the builder (over the spec's ``builder_kwargs``). The returned model
    carries ``weights_info`` (a :class:`WeightsInfo`, or None when untrained).
    """
    spec = get_spec(name)
    builder = spec.resolve_builder()
    no_weights = not pretrained or weights is None
    if no_weights and not allow_untrained:
        raise ValueError(
            f"build_model({name!r}) without weights would give a randomly initialised model; "
            f"pass allow_untrained=True if that is really wanted"
        )
    info: WeightsInfo | None = None
    path: Path | None = None
    if not no_weights:
        assert weights is not None
        info, path = _pick_weights(spec, weights)  # resolve before building: fail fast

    model = builder(**{**spec.builder_kwargs, **kw})
    if path is None:
        log.warning("model %r built with RANDOM weights (untrained; outputs are meaningless)", name)
        model.untrained = True
    else:
        state = load_state_dict_file(path)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[:3]
            raise WeightsError(
                f"{path} does not fit model {name!r} (strict load): {' '.join(first)}"
            ) from exc
        model.untrained = False
    model.weights_info = info
    return model.eval()
