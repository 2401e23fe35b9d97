"""Parameter reference from the graph: `cloudseg node NAME --help` and docs/parameters.md
(`scripts/parameters_page > docs/parameters.md` writes it again)."""

from __future__ import annotations

from cloudseg.graph import GRAPHS, NODES, NodeSpec, Param

#: What the generated page says it is (and how to make it again).
PAGE_NOTE = (
    "<!-- Generated from cloudseg.graph by `scripts/parameters_page > docs/parameters.md`; "
    "do not edit by hand. -->"
)

TABLE_RULE = "|---|---|---|---|---|"


def config_files(name: str) -> list[str]:
    """The config files (config/NAME.yaml) that a node reads in the graphs that start it."""
    return sorted(
        {
            c
            for entries in GRAPHS.values()
            for n, c in entries
            if n == name or name in NODES[n].composes
        }
    )


def allowed(p: Param) -> str:
    """`one of a, b` or `min..max`; empty when any value of the default's type is allowed."""
    if p.choices:
        return f"one of {', '.join(map(str, p.choices))}"
    if p.min is not None or p.max is not None:
        return f"{p.min:g}..{p.max:g}"
    return ""


def where(spec: NodeSpec, p: Param) -> str:
    """When the node declares `p`: empty when always."""
    if p.name in spec.standalone:
        return "in its own process only"
    if p.name in spec.composed_only:
        return "composed only"
    return ""


def node_help(name: str) -> str:
    """`cloudseg node NAME --help`: what the node does and its parameters."""
    spec = NODES[name]
    configs = config_files(name)
    lines = [
        f"usage: cloudseg node {name} [--ros-args -p NAME:=VALUE ... --params-file FILE]",
        "",
        f"{spec.description} ({spec.side} side; python -m {spec.module}).",
    ]
    if spec.composes:
        lines.append(f"Runs the nodes {', '.join(spec.composes)} in one process.")
    if configs:
        lines.append(f"Config files: {', '.join(f'config/{c}' for c in configs)}.")
    lines += ["", "parameters:"]
    for p in spec.params:
        limits = f"; {allowed(p)}" if allowed(p) else ""
        alone = "; in its own process only" if p.name in spec.standalone else ""
        lines.append(f"  {p.name} (default {p.default!r}{limits}{alone})")
        lines.append(f"      {p.description}")
    return "\n".join(lines)


def _markdown(text: str) -> str:
    """Text for the page: `<ns>` would read as an HTML tag, `|` would end a table cell."""
    return text.replace("<", "&lt;").replace("|", "\\|")


def parameter_reference() -> str:
    """docs/parameters.md: every node's parameters as tables (composite processes name the
    nodes they run)."""
    lines = [
        "# Node parameters",
        "",
        PAGE_NOTE,
        "",
        "Every node's parameters with their defaults and allowed values. Set them in the config "
        "files, with `cloudseg run GRAPH -p NODE.NAME:=VALUE`, or with "
        "`cloudseg node NAME --ros-args -p NAME:=VALUE`; `cloudseg node NAME --help` prints the "
        "same. Live parameters can be changed while the node runs (`ros2 param set`); the "
        "others are read once at start.",
    ]
    for name, spec in NODES.items():
        lines += ["", f"## {name}", "", f"{_markdown(spec.description)}."]
        facts = [f"{spec.side} side", f"`python -m {spec.module}`"]
        configs = config_files(name)
        if configs:
            facts.append("config " + ", ".join(f"`config/{c}`" for c in configs))
        summary = "; ".join(facts)
        lines += ["", f"{summary[0].upper()}{summary[1:]}."]
        if spec.composes:
            parts = ", ".join(f"[{n}](#{n})" for n in spec.composes)
            lines += ["", f"Runs the nodes {parts} in one process, with their parameters."]
            continue
        lines += [
            "",
            "| parameter | default | allowed | notes | description |",
            "|---|---|---|---|---|",
        ]
        for p in spec.params:
            notes = ", ".join(
                n for n in ("live" if spec.is_live(p.name) else "", where(spec, p)) if n
            )
            row = (f"`{p.name}`", f"`{p.default!r}`", allowed(p), notes, p.description)
            lines.append("| " + " | ".join(_markdown(c) for c in row) + " |")
    return "\n".join(lines) + "\n"
