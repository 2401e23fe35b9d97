"""The `cloudseg` command: demo, convert, run, node, record, eval, bench, profile, certs, train,
export and serve.

- `parser`: the argument parser (options that set node parameters come from cloudseg.graph).
- `commands`: what each sub-command does.
- `reference`: node parameter help and docs/parameters.md, from the graph.
"""

from __future__ import annotations

import logging
import sys

from cloudseg.cli.commands import BENCH_COMMANDS, EXPORT_COMMANDS, TRAIN_COMMANDS
from cloudseg.cli.parser import build_parser

__all__ = ["BENCH_COMMANDS", "EXPORT_COMMANDS", "TRAIN_COMMANDS", "build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "passes_options", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        print(f"cloudseg {args.command}: {exc}", file=sys.stderr)
        return 1
