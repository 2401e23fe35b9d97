"""What the graph is made of: parameters with their ranges, endpoints and node specs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cloudseg.graph.topics import resolve

PACKAGE = "cloudseg"


@dataclass(frozen=True)
class Param:
    """A node parameter: default, description and allowed range or choices."""

    name: str
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] | None = None  # for a list parameter: what each item may be

    def parse(self, text: str) -> Any:
        """A value from the command line (`-p node.name:=TEXT`), typed like the default; raise
        ValueError saying what is expected."""
        kind = type(self.default)
        try:
            if kind is bool:
                word = text.strip().lower()
                if word not in ("true", "false"):
                    raise ValueError
                return word == "true"
            if kind is int:
                return int(text)
            if kind is float:
                return float(text)
        except ValueError:
            what = {bool: "true or false", int: "an integer", float: "a number"}[kind]
            raise ValueError(f"{self.name}={text!r}: must be {what}") from None
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            return text[1:-1]  # a quoted string, as YAML reads it
        return text

    def check(self, value: Any) -> Any:
        """Return `value` if it is allowed, else raise ValueError saying why (a value of
        another type than the default's, NaN, out of range, not one of the choices)."""
        if isinstance(self.default, list):
            if not isinstance(value, (list, tuple)) or not value:
                raise ValueError(f"{self.name}={value!r}: must be a non-empty list")
            for item in value:
                self._check_one(item)
            return list(value)
        return self._check_one(value)

    def _check_one(self, value: Any) -> Any:
        kind = type(self.default[0] if isinstance(self.default, list) else self.default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not kind:
            raise ValueError(f"{self.name}={value!r}: must be a {kind.__name__}")
        if kind is float and not math.isfinite(value):
            raise ValueError(f"{self.name}={value!r}: must be a finite number")
        if self.choices is not None and value not in self.choices:
            shown = ", ".join(map(str, self.choices))
            raise ValueError(f"{self.name}={value!r}: must be one of {shown}")
        if self.min is not None and value < self.min:
            raise ValueError(f"{self.name}={value!r}: must be >= {self.min}")
        if self.max is not None and value > self.max:
            raise ValueError(f"{self.name}={value!r}: must be <= {self.max}")
        return value


@dataclass(frozen=True)
class Endpoint:
    """A publisher or subscription a node has on a topic (`kind`: "pub" or "sub")."""

    node: str
    kind: str
    topic: str

    def describe(self, ns: str | None = "/") -> str:
        """`node (publisher of topic)`, the topic resolved in namespace `ns`."""
        role = "publisher" if self.kind == "pub" else "subscriber"
        return f"{self.node} ({role} of {resolve(self.topic, ns)})"


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph: its name, entry module, side and parameters."""

    name: str
    executable: str
    side: str  # "vehicle" | "cloud" | "tools"
    description: str
    params: tuple[Param, ...] = field(default_factory=tuple)
    composes: tuple[str, ...] = ()  # an executable running several nodes in one process
    #: parameters that change at run time (`ros2 param set`, checked against the ranges here);
    #: the others are read-only once the node runs
    live: frozenset[str] = frozenset()
    # endpoints the process has once it has started (created after its models, encoder or
    # profile are ready): `cloudseg run` and the demo wait for them before the source starts
    ready: tuple[Endpoint, ...] = ()
    #: parameters declared only when the node runs in a process of its own; composed, another
    #: node's apply (the split cloud's sr node takes the pipeline's, the segmentation node's
    #: in the cloud process)
    standalone: frozenset[str] = frozenset()
    #: parameters declared only when the node runs composed (the cloud process's sr node
    #: serves many streams in batches; on its own it serves the root stream, one by one)
    composed_only: frozenset[str] = frozenset()

    @property
    def module(self) -> str:
        return f"{PACKAGE}.nodes.{self.executable}"

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def is_live(self, name: str) -> bool:
        return name in self.live

    def declared(self, composed: bool = False) -> tuple[Param, ...]:
        """The parameters the node declares: on its own all but `composed_only`, composed
        all but `standalone`."""
        skip = self.standalone if composed else self.composed_only
        return tuple(p for p in self.params if p.name not in skip)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"node {self.name} has no parameter {name!r}")
