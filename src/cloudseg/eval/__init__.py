"""``cloudseg eval``: PSNR, SSIM, mIoU and kbit/s of every restoration route, through the stream.

A tool layer, as :mod:`cloudseg.train` and :mod:`cloudseg.bench`: runtime code never imports
it (test/test_layers.py). The library API: fill an :class:`EvalConfig` and call
:func:`evaluate`; :func:`main` is the command (:mod:`.cli`, which parses the options into a
config).
"""

from __future__ import annotations

from cloudseg.eval.cli import main, parse_config
from cloudseg.eval.config import EvalConfig, EvalError
from cloudseg.eval.report import format_table
from cloudseg.eval.run import EVAL_ERRORS, evaluate

__all__ = [
    "EVAL_ERRORS",
    "EvalConfig",
    "EvalError",
    "evaluate",
    "format_table",
    "main",
    "parse_config",
]
