"""A small reader of protobuf text format, enough for Triton's ``config.pbtxt``.

Standard library only: the Triton server process (``.venv-triton``, numpy<2, no cloudseg
install) loads this file by path as well. ``parse_pbtxt(text)`` gives a dict: scalars as int,
float, str (quoted strings) or the bare enum word (``TYPE_UINT8``); ``[ ... ]`` lists as lists;
``{ ... }`` messages as dicts; a field that repeats (``parameters { ... }`` twice) as a list.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["PbtxtError", "parse_pbtxt"]

_TOKEN = re.compile(
    r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([A-Za-z_][\w.]*)|(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)'
    r"|([{}\[\]:,]))"
)


class PbtxtError(ValueError):
    """Text that is not protobuf text format (as far as this reader knows it)."""


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise PbtxtError(f"unexpected text at offset {pos}: {text[pos : pos + 20]!r}")
        pos = m.end()
        comment, string, word, number, punct = m.groups()
        if comment is not None:
            continue
        if string is not None:
            out.append(("value", bytes(string[1:-1], "utf-8").decode("unicode_escape")))
        elif word is not None:
            out.append(("word", word))
        elif number is not None:
            out.append(("value", float(number) if re.search(r"[.eE]", number) else int(number)))
        else:
            out.append(("punct", punct))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, Any]:
        tok = self.peek()
        if tok is None:
            raise PbtxtError("unexpected end of text")
        self.i += 1
        return tok

    def message(self, closing: str | None) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        while True:
            tok = self.peek()
            if tok is None:
                if closing is not None:
                    raise PbtxtError(f"missing {closing!r}")
                return fields
            if tok == ("punct", closing):
                self.i += 1
                return fields
            kind, name = self.take()
            if kind != "word":
                raise PbtxtError(f"expected a field name, got {name!r}")
            if self.peek() == ("punct", ":"):
                self.i += 1
            value = self.value()
            if name in fields:
                prev = fields[name]
                fields[name] = (prev if isinstance(prev, list) else [prev]) + (
                    value if isinstance(value, list) else [value]
                )
            else:
                fields[name] = value
            if self.peek() == ("punct", ","):
                self.i += 1

    def value(self) -> Any:
        kind, tok = self.take()
        if (kind, tok) == ("punct", "{"):
            return self.message("}")
        if (kind, tok) == ("punct", "["):
            items = []
            while self.peek() != ("punct", "]"):
                items.append(self.value())
                if self.peek() == ("punct", ","):
                    self.i += 1
            self.i += 1
            return items
        if kind == "punct":
            raise PbtxtError(f"unexpected {tok!r}")
        if kind == "word" and tok in ("true", "false"):
            return tok == "true"
        return tok


def parse_pbtxt(text: str) -> dict[str, Any]:
    """The fields of a protobuf text-format message (see the module docstring)."""
    return _Parser(text).message(None)
