"""Layers: runtime code never imports training, evaluation or benchmark code.

The packages of ``src/cloudseg``, in two layers:

* **tools**: ``cloudseg.train`` (training), ``cloudseg.eval`` (``cloudseg eval``),
  ``cloudseg.bench`` (``cloudseg bench``) and ``cloudseg.cli`` (the command line, which
  dispatches to all of them). They may import anything.
* **runtime**: every other module under ``src/cloudseg`` (nodes, cloud, media, models,
  restore, selection, control, data, triton, security, the graph, the demo, scoring, metrics,
  ...). They import nothing from the tools, at module level or lazily inside a function, by
  ``import``, ``from ... import`` (relative too) or ``importlib.import_module("...")``.

Generated ROS message code (``cloudseg.msg``) is not parsed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "cloudseg"
TOOLS = ("cloudseg.train", "cloudseg.eval", "cloudseg.bench", "cloudseg.cli")
"""Modules (and packages: their submodules too) outside the runtime layer."""
FORBIDDEN = ("cloudseg.train", "cloudseg.eval", "cloudseg.bench")
"""What no runtime module may import (the cli only dispatches to them)."""
SKIPPED = ("cloudseg.msg",)
"""Generated code, not ours to check."""


def _inside(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def module_name(path: Path) -> str:
    """``src/cloudseg/a/b.py`` -> ``cloudseg.a.b`` (``__init__.py`` -> the package)."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every import in ``source``, anywhere in the tree (functions included):
    ``import x``, ``from x import y`` (both ``x`` and ``x.y``: y may be a submodule), relative
    imports resolved against ``module``, and ``importlib.import_module`` with a literal name."""
    found: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in ("import_module", "__import__"):
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.append((node.lineno, first.value))
                elif isinstance(first, ast.JoinedStr) and first.values:
                    head = first.values[0]  # f"cloudseg.bench.{what}": its literal start
                    if isinstance(head, ast.Constant) and isinstance(head.value, str):
                        found.append((node.lineno, head.value.rstrip(".")))
    return found


def layer_violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """``module:line imports X`` for every tool module a runtime ``module`` imports."""
    if _inside(module, TOOLS):
        return []
    found: dict[int, str] = {}  # one report a line: "from X import y" names X and X.y
    for line, name in imported_modules(source, module, is_package):
        if _inside(name, FORBIDDEN):
            found.setdefault(line, f"{module}:{line} imports {name}")
    return list(found.values())


def runtime_sources() -> list[Path]:
    paths = sorted(PACKAGE.rglob("*.py"))
    return [p for p in paths if not _inside(module_name(p), (*TOOLS, *SKIPPED))]


def test_runtime_modules_import_no_training_eval_or_bench_code() -> None:
    sources = runtime_sources()
    assert len(sources) > 50  # the whole runtime was found, not an empty folder
    found = [
        problem
        for path in sources
        for problem in layer_violations(
            path.read_text(), module_name(path), path.name == "__init__.py"
        )
    ]
    assert found == [], "runtime imports tool code:\n" + "\n".join(found)


def test_the_layers_are_what_the_docstring_says() -> None:
    runtime = {module_name(p) for p in runtime_sources()}
    for expected in (
        "cloudseg.scoring",
        "cloudseg.metrics",
        "cloudseg.models.registry",
        "cloudseg.control.profile_run",
        "cloudseg.nodes.monitor_node",
    ):
        assert expected in runtime
    for tool in ("cloudseg.train.sr", "cloudseg.bench.accuracy", "cloudseg.cli"):
        assert tool not in runtime
    assert (PACKAGE / "eval").is_dir() and (PACKAGE / "train").is_dir()


@pytest.mark.parametrize(
    "source",
    [
        "import cloudseg.train.checkpoint\n",
        "from cloudseg.train.checkpoint import check_card\n",
        "from cloudseg import bench\n",
        "def f():\n    from cloudseg.train import checkpoint  # lazy\n    return checkpoint\n",
        "class A:\n    def m(self):\n        import cloudseg.eval as ev\n",
        "from ..train import checkpoint\n",
        "from .. import eval\n",
        "import importlib\nimportlib.import_module('cloudseg.bench.fuzz')\n",
        "import importlib\nwhat = 'x'\nimportlib.import_module(f'cloudseg.bench.{what}')\n",
    ],
)
def test_the_check_catches_every_way_to_import(source: str) -> None:
    """The check can fail: a module in the runtime (cloudseg.models.registry) importing tool
    code in any of these ways is reported."""
    assert layer_violations(source, "cloudseg.models.registry")


def test_the_check_lets_tools_and_lookalikes_through() -> None:
    assert not layer_violations("import cloudseg.bench.fuzz\n", "cloudseg.train.sr")
    assert not layer_violations("from cloudseg.metrics import ConfusionMatrix\n", "cloudseg.demo")
    assert not layer_violations("import cloudseg.trainer\n", "cloudseg.demo")
    assert not layer_violations("from . import catalog\n", "cloudseg.models", is_package=True)
    assert layer_violations("from .train import sr\n", "cloudseg", is_package=True)
