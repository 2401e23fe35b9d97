"""Finding, downloading and reading pretrained weight files.

A weight file is looked up, in order, at an explicit path, in ``$CLOUDSEG_WEIGHTS`` (a folder,
searched with one level of subfolders), in the project's own weights (``weights/`` of the
checkout, installed to ``share/cloudseg/weights``), in the shared pretrained weights beside a
checkout (``../shared/data/weights``, as the demo finds them), in the cache folder
(``$XDG_CACHE_HOME/cloudseg/weights`` or ``~/.cache/cloudseg/weights``), and finally downloaded
from the publisher's URL into the cache (checked against the registered SHA-256 first).
Set ``CLOUDSEG_OFFLINE=1`` to skip the download step. Every failure raises :class:`WeightsError`
with one message naming the file, the places searched and where to get it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ENV_OFFLINE",
    "ENV_WEIGHTS",
    "WeightsError",
    "WeightsInfo",
    "cache_dir",
    "load_state_dict_file",
    "project_weights_dir",
    "resolve_weights",
    "sha256_file",
    "shared_weights_dir",
]

log = logging.getLogger(__name__)

ENV_WEIGHTS = "CLOUDSEG_WEIGHTS"
ENV_OFFLINE = "CLOUDSEG_OFFLINE"
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class WeightsError(Exception):
    """A weight file could not be found, fetched, verified or read."""


@dataclass(frozen=True)
class WeightsInfo:
    """One published weight file: where it comes from and what it is.

    ``meta`` carries params, task, input normalisation, trained scales/resolution, metrics
    (with their source) and the training recipe, in the spirit of torchvision's ``Weights``.
    ``url`` or ``sha256`` may be None when unknown (no download, or no hash check).
    """

    filename: str
    url: str | None
    sha256: str | None
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def cache_dir() -> Path:
    """The download cache folder (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cloudseg" / "weights"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def project_weights_dir() -> Path | None:
    """The weights this project trained and ships: ``<checkout>/weights`` or the installed
    ``<prefix>/share/cloudseg/weights``; None when neither exists."""
    here = Path(__file__).resolve()  # .../cloudseg/models/weights.py
    for candidate in (
        here.parents[3] / "weights",  # source checkout: <repo>/src/cloudseg/models/weights.py
        here.parents[5] / "share" / "cloudseg" / "weights",  # <prefix>/lib/pythonX/site-packages
    ):
        if candidate.is_dir():
            return candidate
    return None


def shared_weights_dir() -> Path | None:
    """The shared pretrained weights beside a checkout (``../shared/data/weights``), if any:
    next to the current folder or to the checkout whose ``.venv`` runs this."""
    import sys

    for base in (Path.cwd(), Path(sys.prefix).resolve().parent):
        candidate = base.parent / "shared" / "data" / "weights"
        if candidate.is_dir():
            return candidate
    return None


def _find_in_folder(folder: Path, filename: str) -> Path | None:
    """``folder/filename`` or ``folder/<sub>/filename`` (sorted, first hit wins)."""
    direct = folder / filename
    if direct.is_file():
        return direct
    if not folder.is_dir():
        return None
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        candidate = sub / filename
        if candidate.is_file():
            return candidate
    return None


def _check_hash(path: Path, info: WeightsInfo) -> None:
    if info.sha256 is None:
        log.warning("no SHA-256 registered for %s; using %s unchecked", info.filename, path)
        return
    actual = sha256_file(path)
    if actual.lower() != info.sha256.lower():
        raise WeightsError(
            f"{path} has SHA-256 {actual}, expected {info.sha256} for {info.filename} "
            f"(corrupt or a different file; delete it and fetch it again from "
            f"{info.url or 'its source'})"
        )


def _download(info: WeightsInfo, target: Path) -> None:
    """Fetch ``info.url`` to a temp file beside ``target``, verify, then move it into place."""
    assert info.url is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{info.filename}.", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(info.url, timeout=DOWNLOAD_TIMEOUT_S) as resp,
        ):
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        if info.sha256 is None:
            log.warning("no SHA-256 registered for %s; downloaded file not verified", info.url)
        elif digest.hexdigest().lower() != info.sha256.lower():
            raise WeightsError(
                f"download of {info.filename} from {info.url} has SHA-256 {digest.hexdigest()}, "
                f"expected {info.sha256}; file discarded"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def resolve_weights(
    info: WeightsInfo | None,
    explicit: str | Path | None = None,
    *,
    download: bool = True,
    model_name: str | None = None,
) -> Path:
    """Path of the weight file ``info`` describes (a model's registered file; for a model name
    see :func:`cloudseg.models.registry.resolve_model_weights`), or of ``explicit``.

    Order: ``explicit`` (must exist, not hash-checked: it may be a fine-tuned file), then
    ``$CLOUDSEG_WEIGHTS``, then the project's own and the shared weights folders, then the
    cache, then a download (unless ``download`` is False or
    ``$CLOUDSEG_OFFLINE`` is set). Files found by name are checked against the registered
    SHA-256 when one is known. ``model_name`` only labels error messages.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            who = model_name or (info.filename if info is not None else "a model")
            raise WeightsError(f"weight file {path} does not exist (given explicitly for {who})")
        return path

    if info is None:
        raise WeightsError(
            f"{model_name or 'this model'} has no registered weight file; pass the path to one"
        )
    label = f" for model {model_name!r}" if model_name else ""
    searched: list[str] = []

    env_dir = os.environ.get(ENV_WEIGHTS)
    if env_dir:
        folder = Path(env_dir).expanduser()
        searched.append(f"${ENV_WEIGHTS}={folder} (and its subfolders)")
        found = _find_in_folder(folder, info.filename)
        if found is not None:
            _check_hash(found, info)
            return found
    else:
        searched.append(f"${ENV_WEIGHTS} (not set)")

    for folder in (project_weights_dir(), shared_weights_dir()):
        if folder is None or (env_dir and folder.resolve() == Path(env_dir).expanduser().resolve()):
            continue
        searched.append(str(folder))
        found = _find_in_folder(folder, info.filename)
        if found is not None:
            _check_hash(found, info)
            return found

    cached = cache_dir() / info.filename
    searched.append(str(cached))
    if cached.is_file():
        _check_hash(cached, info)
        return cached

    offline = os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")
    where = info.url or info.meta.get("download_hint") or "no public URL is known"
    if info.url is None or not download or offline:
        reason = "no download URL" if info.url is None else "downloads disabled"
        raise WeightsError(
            f"weight file {info.filename}{label} not found ({reason}); searched: "
            f"{'; '.join(searched)}. Get it from {where} and put it in ${ENV_WEIGHTS} or "
            f"{cache_dir()}, or pass its path explicitly"
        )
    log.info("downloading %s from %s to %s", info.filename, info.url, cached)
    try:
        _download(info, cached)
    except WeightsError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise WeightsError(
            f"weight file {info.filename}{label} not found and the download failed ({exc}); "
            f"searched: {'; '.join(searched)}. Get it from {where} and put it in "
            f"${ENV_WEIGHTS} or {cache_dir()}, or pass its path explicitly"
        ) from exc
    return cached


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint as a plain state_dict on the CPU (``weights_only=True``).

    Unwraps ``{'state_dict': ...}`` / ``{'model': ...}`` containers and a DataParallel
    ``module.`` prefix.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise WeightsError(f"weight file {path} does not exist") from exc
    except Exception as exc:  # pickle/zip errors come in many types
        raise WeightsError(f"cannot read weight file {path}: {exc}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} is not a state_dict (a dict of tensors)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)
