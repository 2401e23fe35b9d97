"""Node parameters from `cloudseg.graph`: declared with their descriptions and ranges, checked
at start-up (a bad value fails the start with one line) and, for live ones, at run time."""

from __future__ import annotations

import array
import functools
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from cloudseg.graph import NodeSpec, Param


def _descriptor(p: Param, read_only: bool) -> ParameterDescriptor:
    text = p.description
    if p.choices:
        text += f" ({'each ' if isinstance(p.default, list) else ''}one of: "
        text += f"{', '.join(map(str, p.choices))})"
    if read_only:
        text += " [read-only once the node runs]"
    d = ParameterDescriptor(description=text, read_only=read_only)
    if p.min is not None or p.max is not None:
        if isinstance(p.default, bool):
            pass
        elif isinstance(p.default, int):
            d.integer_range = [
                IntegerRange(from_value=int(p.min), to_value=int(p.max), step=int(p.step or 1))
            ]
        elif isinstance(p.default, float):
            d.floating_point_range = [
                FloatingPointRange(from_value=float(p.min), to_value=float(p.max), step=0.0)
            ]
    return d


def _plain(value: Any) -> Any:
    """A parameter value as plain Python (rclpy gives arrays as array.array)."""
    return list(value) if isinstance(value, (array.array, tuple)) else value


class ParameterError(ValueError):
    """An invalid start-up parameter value: the node does not start (one line says why)."""


def declare_parameters(node: Node, spec: NodeSpec, composed: bool = False) -> dict[str, Any]:
    """Declare every parameter of `spec` on `node` (descriptions, ranges; read-only unless
    `spec.live` names it) and return their values. `composed`: the node runs composed with
    others in one process; the parameters `spec.standalone` names are then not declared.

    A start-up value outside its range or choices fails the node's start (ParameterError,
    with the reason). Live parameters change at run time through a parameter callback that
    checks each value against the graph's range and then calls ``node.on_parameters(changes)``
    (when the node has one) to apply it; a refused change leaves everything as it was, and
    `ros2 param set` prints the reason. Setting a read-only one is refused by rclpy, saying so.
    """
    values: dict[str, Any] = {}
    for p in spec.declared(composed):
        descriptor = _descriptor(p, read_only=not spec.is_live(p.name))
        try:
            value = node.declare_parameter(p.name, p.default, descriptor).value
        except Exception as exc:  # rclpy raises several kinds for out-of-range or mistyped values
            override = getattr(node, "_parameter_overrides", {}).get(p.name)
            given = _plain(override.value) if override is not None else None
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            try:
                p.check(given)
            except ValueError as mine:
                reason = str(mine)
            else:
                reason = f"{p.name}={given!r}: {reason}"
            raise ParameterError(f"invalid parameter of {spec.name}: {reason}") from None
        try:
            values[p.name] = p.check(_plain(value))
        except ValueError as exc:
            raise ParameterError(f"invalid parameter of {spec.name}: {exc}") from None
    if spec.live:
        node.add_on_set_parameters_callback(functools.partial(_on_set, node, spec))
    return values


def _on_set(node: Node, spec: NodeSpec, parameters: list[Parameter]) -> SetParametersResult:
    changes: dict[str, Any] = {}
    for prm in parameters:
        try:
            p = spec.param(prm.name)
        except KeyError:
            continue  # not one of ours (e.g. use_sim_time)
        if not spec.is_live(p.name):
            return SetParametersResult(successful=False, reason=f"{p.name} is read-only")
        try:
            changes[p.name] = p.check(_plain(prm.value))
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
    if not changes:
        return SetParametersResult(successful=True)
    apply = getattr(node, "on_parameters", None)
    try:
        if apply is not None:
            apply(changes)
    except Exception as exc:  # the node cannot use the values together: refused, unchanged
        return SetParametersResult(successful=False, reason=f"{type(exc).__name__}: {exc}")
    params = getattr(node, "params", None)
    if isinstance(params, dict):
        params.update(changes)
    shown = ", ".join(f"{k}={v!r}" for k, v in changes.items())
    node.get_logger().info(f"parameters changed: {shown}")
    return SetParametersResult(successful=True)
