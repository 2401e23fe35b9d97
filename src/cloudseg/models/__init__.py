"""Network architectures (one file each) and the model registry with weight metadata.

Importing this package registers every model (:mod:`.catalog`); segmentation backends are
imported lazily by :func:`build_model`, so only the ones used are loaded.
"""

from __future__ import annotations

from cloudseg.models import catalog  # noqa: F401  (registers every model)
from cloudseg.models.carn import CARN, carn, carn_m, clamp_sr, upscale_image
from cloudseg.models.registry import (
    ModelSpec,
    UnknownModelError,
    build_model,
    get_spec,
    list_models,
    register,
    resolve_model_weights,
)
from cloudseg.models.weights import (
    WeightsError,
    WeightsInfo,
    load_state_dict_file,
    resolve_weights,
)

__all__ = [
    "CARN",
    "ModelSpec",
    "UnknownModelError",
    "WeightsError",
    "WeightsInfo",
    "build_model",
    "carn",
    "carn_m",
    "clamp_sr",
    "get_spec",
    "list_models",
    "load_state_dict_file",
    "register",
    "resolve_model_weights",
    "resolve_weights",
    "upscale_image",
]
