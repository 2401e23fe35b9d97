"""The command line takes its choices and defaults from the graph: every `cloudseg demo` option
that sets a node parameter offers the parameter's choices and its default, `run_demo` defaults
to the same, and docs/parameters.md is the page the graph generates."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import pytest

from cloudseg.cli import build_parser
from cloudseg.cli.commands import BILINEAR_ONLY
from cloudseg.cli.reference import parameter_reference
from cloudseg.graph import (
    CODEC_CHOICES,
    COMPRESSOR,
    FRAME_SELECTOR,
    GRAPHS,
    SCALES,
    SEGMENTATION,
    SOURCE,
    SR,
    NodeSpec,
)

REPO = Path(__file__).resolve().parents[1]

#: demo option (its dest) -> the node parameter it sets
DEMO_OPTIONS: dict[str, tuple[NodeSpec, str]] = {
    "scale": (COMPRESSOR, "scale"),
    "codec": (COMPRESSOR, "codec"),
    "crf": (COMPRESSOR, "crf"),
    "bitrate": (COMPRESSOR, "bitrate_kbps"),
    "gop": (COMPRESSOR, "gop"),
    "select": (FRAME_SELECTOR, "mode"),
    "rate": (SOURCE, "rate"),
    "frames": (SOURCE, "limit"),
    "restore": (SR, "restore"),
    "backend": (SEGMENTATION, "backend"),
    "device": (SEGMENTATION, "device"),
}
#: options left at None so that the node keeps its own default (the help names it)
NODE_DEFAULTS = {"crf", "gop"}
#: choices an option offers beyond its parameter's
EXTRA_CHOICES = {"restore": (BILINEAR_ONLY,)}
#: run_demo's argument -> the option it stands for
RUN_DEMO_ARGS = {
    "scale": "scale",
    "codec": "codec",
    "rate": "rate",
    "limit": "frames",
    "crf": "crf",
    "gop": "gop",
    "bitrate_kbps": "bitrate",
    "select": "select",
}


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def option_mismatches(demo: argparse.ArgumentParser) -> list[str]:
    """How the demo's options differ from the graph's parameters (empty: they agree)."""
    actions = {a.dest: a for a in demo._actions}
    found = []
    for dest, (spec, name) in DEMO_OPTIONS.items():
        if dest not in actions:
            found.append(f"--{dest}: no such option")
            continue
        action, param = actions[dest], spec.param(name)
        where = f"--{dest} ({spec.name}.{name})"
        want_default = None if dest in NODE_DEFAULTS else param.default
        if action.default != want_default or type(action.default) is not type(want_default):
            found.append(f"{where}: default {action.default!r}, graph {want_default!r}")
        if dest in NODE_DEFAULTS and f"{param.default}" not in (action.help or ""):
            found.append(f"{where}: the help does not name the node's default {param.default}")
        if action.type is not type(param.default):
            found.append(f"{where}: type {action.type}, graph {type(param.default)}")
        want_choices = (*param.choices, *EXTRA_CHOICES.get(dest, ())) if param.choices else None
        got_choices = tuple(action.choices) if action.choices is not None else None
        if got_choices != want_choices:
            found.append(f"{where}: choices {got_choices}, graph {want_choices}")
    return found


def test_demo_options_take_the_graph_choices_and_defaults():
    demo = _subparser(build_parser(), "demo")
    assert option_mismatches(demo) == []
    actions = {a.dest: a for a in demo._actions}
    assert tuple(actions["scale"].choices) == SCALES and 3 in actions["scale"].choices
    assert tuple(actions["codec"].choices) == CODEC_CHOICES
    assert set(actions["cloud"].choices) <= set(GRAPHS)


def test_the_comparison_finds_an_option_that_drifted():
    """The check above can fail: an option with the old hand-written choices, another default
    or no option at all is reported."""
    demo = _subparser(build_parser(), "demo")
    actions = {a.dest: a for a in demo._actions}
    actions["scale"].choices = (1, 2, 4, 8)
    actions["rate"].default = 10.0
    actions["gop"].help = "H.264 keyframe interval"
    demo._actions.remove(actions["codec"])
    found = "\n".join(option_mismatches(demo))
    for what in ("--scale", "--rate", "--gop", "--codec: no such option"):
        assert what in found, found


def test_run_demo_defaults_are_the_options():
    from cloudseg.demo import run_demo

    demo = _subparser(build_parser(), "demo")
    defaults = {a.dest: a.default for a in demo._actions}
    signature = inspect.signature(run_demo).parameters
    for arg, dest in RUN_DEMO_ARGS.items():
        assert signature[arg].default == defaults[dest], arg
    assert (signature["sr_bypass"].default) == (SR.param("restore").default == "bilinear")


def test_parameter_page_is_generated_from_the_graph():
    page = (REPO / "docs" / "parameters.md").read_text()
    assert page == parameter_reference(), (
        "docs/parameters.md is stale: scripts/parameters_page > docs/parameters.md"
    )
    assert "| `crf` | `25` | 0..51 | live |" in page


@pytest.mark.parametrize("name", ["compressor", "sr", "controller"])
def test_node_help_lists_every_parameter(name):
    from cloudseg.cli.reference import node_help
    from cloudseg.graph import NODES

    text = node_help(name)
    for p in NODES[name].params:
        assert f"  {p.name} (default {p.default!r}" in text
