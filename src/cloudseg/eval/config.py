"""What one evaluation runs: :class:`EvalConfig`, filled by ``cloudseg eval``'s options
(:mod:`cloudseg.eval.cli`) or built directly (``cloudseg bench accuracy``, tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cloudseg.graph import CODEC_CHOICES
from cloudseg.media.stream import CompressorSettings, default_compressor_settings

__all__ = ["CODECS", "EvalConfig", "EvalError", "stream_settings"]

CODECS = (*CODEC_CHOICES, "none")


class EvalError(Exception):
    """Bad evaluation input (options, data); ``cloudseg eval`` prints it as one line, exit 2."""


def _compressor_default(name: str):
    return field(default_factory=lambda: getattr(default_compressor_settings(), name))


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation. Stream settings left at None are the compressor's defaults; ``device``
    None is cuda when available, else cpu."""

    data: tuple[Path, ...] = ()
    """A Cityscapes root, a low-resolution root, or sequences (each one stream)."""
    gt_root: Path | None = None
    split: str = "val"
    backend: str = "espnetv2"
    seg_model: str | None = None
    seg_weights: str | None = None
    seg_size: str = "trained"
    sr_route: str = "direct"
    sr_model: str = "carn_m"
    sr_weights: str | None = None
    sr_ft_weights: str | None = None
    sr_rows: tuple[tuple[str, Path], ...] = ()
    """Extra rows: (name, SR checkpoint)."""
    lr_seg_row: bool = True
    route_rows: bool = True
    default_row: bool = True
    only_rows: tuple[str, ...] = ()
    """Only these rows (hr is always kept: the reference); empty: every row."""
    weights_dir: Path | None = None
    scale: int = _compressor_default("scale")
    codec: str = _compressor_default("codec")
    crf: int | None = None
    bitrate: int | None = None
    preset: str | None = None
    gop: int | None = None
    jpeg_quality: int | None = None
    kernel: str | None = None
    low_res_list: str = "val.txt"
    limit: int = 0
    device: str | None = None
    dtype: str = "fp32"
    allow_untrained: bool = False
    progress: bool = True
    save_panels: Path | None = None
    figure: Path | None = None
    figure_frame: str | None = None
    figure_crop: tuple[int, int, int, int] = (1024, 384, 512, 256)
    figure_rows: tuple[str, ...] = ()
    """Rows of the figure; empty: all but hr_stream."""

    def validate(self) -> None:
        """Raise :class:`EvalError` on settings no evaluation can run with."""
        if not self.data:
            raise EvalError("no data to evaluate")
        if self.scale < 1:
            raise EvalError(f"--scale must be >= 1, got {self.scale}")
        if self.limit < 0:
            raise EvalError(f"--limit must be >= 0, got {self.limit}")
        if self.crf is not None and not 0 <= self.crf <= 51:
            raise EvalError(f"--crf must be 0..51, got {self.crf}")
        if self.bitrate is not None and self.bitrate <= 0:
            raise EvalError(f"--bitrate must be > 0 kbit/s, got {self.bitrate}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise EvalError(f"--jpeg-quality must be 1..100, got {self.jpeg_quality}")
        for path in self.data:
            if not path.exists():
                raise EvalError(f"data {path} does not exist")
        if self.gt_root is not None and not (self.gt_root / "gtFine").is_dir():
            raise EvalError(f"--gt-root {self.gt_root} has no gtFine folder")
        for option in ("sr_weights", "sr_ft_weights", "seg_weights"):
            value = getattr(self, option)
            if value is not None and not Path(value).expanduser().is_file():
                raise EvalError(f"--{option.replace('_', '-')}: no file {value}")
        for name, path in self.sr_rows:
            if not path.expanduser().is_file():
                raise EvalError(f"--sr-row {name}: no file {path}")
        if self.weights_dir is not None and not self.weights_dir.is_dir():
            raise EvalError(f"--weights-dir: {self.weights_dir} is not a folder")


def stream_settings(config: EvalConfig, scale: int | None = None) -> CompressorSettings:
    """The compressor's default settings with the config's changes (one source of truth)."""
    changes: dict[str, object] = {"scale": config.scale if scale is None else scale}
    if config.codec != "none":
        changes["codec"] = config.codec
    optional = {
        "crf": config.crf,
        "bitrate_kbps": config.bitrate,
        "preset": config.preset,
        "gop": config.gop,
        "quality": config.jpeg_quality,
        "kernel": config.kernel,
    }  # None: the compressor's default
    changes.update({name: value for name, value in optional.items() if value is not None})
    return default_compressor_settings(**changes)
