"""The `cloudseg` command: demo, convert, run, node, record, eval, bench, profile, certs, train,
export and serve.

- `parser`: the argument parser (options that set node parameters come from cloudseg.graph).
- `commands`: what each sub-command does.
- `reference`: node parameter help and docs/parameters.md, from the graph.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `main` guards every other import: Ctrl-C while they run is handled
    from typing import Any, NoReturn

from cloudseg.stop_signals import INTERRUPTED_EXIT, StopSignals

__all__ = ["BENCH_COMMANDS", "EXPORT_COMMANDS", "TRAIN_COMMANDS", "build_parser", "main"]

#: The exit status of bad input (an input that does not open, an option out of range), for
#: every sub-command: argparse's for a usage error.
BAD_INPUT_EXIT = 2


def __getattr__(name: str) -> Any:
    """The parser and the command tables, imported on first use: `cloudseg` (this package)
    imports only the standard library, so Ctrl-C while it starts meets `main`'s handling."""
    if name == "build_parser":
        from cloudseg.cli.parser import build_parser

        return build_parser
    if name in ("BENCH_COMMANDS", "EXPORT_COMMANDS", "TRAIN_COMMANDS"):
        from cloudseg.cli import commands

        return getattr(commands, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def bad_input_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean bad input (exit BAD_INPUT_EXIT, the reason in one line)."""
    from cloudseg.data.frames import DataError

    return (DataError,)


def _exit_interrupted(line: str) -> NoReturn:
    """One line, then exit 130 at once. A Ctrl-C that lands while modules import can set
    CPython's "unhandled KeyboardInterrupt" flag (inside code extension modules run through
    PyRun_*) even though `main` caught it; Python would then end by killing itself with SIGINT
    (status -2) instead of the 130 callers read. Commands stop what they started on the way out
    (`finally`), so nothing here needs the interpreter's finalisation."""
    print(line, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED_EXIT)


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C while it starts: recorded as well as raised, since a library that catches every
    # exception around an optional import would swallow the KeyboardInterrupt; a command's own
    # StopSignals takes a recorded stop over (cloudseg.stop_signals)
    guard = StopSignals(raising=True).install()
    try:
        return _main(argv, guard)
    finally:
        guard.restore()


def _main(argv: list[str] | None, guard: StopSignals) -> int:
    words = argv if argv is not None else sys.argv[1:]
    command = next((w for w in words[:1] if not w.startswith("-")), "")
    try:
        from cloudseg.cli.parser import build_parser

        parser = build_parser()
        args, rest = parser.parse_known_args(argv)
        guard.check()
    except KeyboardInterrupt:  # while it starts (imports): one line, no traceback
        _exit_interrupted(f"cloudseg {command}: interrupted".replace(" :", ":"))
    import logging

    if rest and not getattr(args, "passes_options", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # torch's INFO lines (its cache statistics at exit) are not for users
        logging.getLogger("torch").setLevel(logging.WARNING)
    try:
        code = int(args.func(args) or 0)
        guard.check()  # a stop that a command without its own handling did not see
        return code
    except KeyboardInterrupt:  # before a command installed its own handling, or one without
        _exit_interrupted(f"cloudseg {args.command}: interrupted")
    except Exception as exc:
        if guard.requested is not None:  # Ctrl-C inside an import that reports it as a failure
            _exit_interrupted(f"cloudseg {args.command}: interrupted")
        if args.verbose:
            raise
        print(f"cloudseg {args.command}: {exc}", file=sys.stderr)
        return BAD_INPUT_EXIT if isinstance(exc, bad_input_errors()) else 1
