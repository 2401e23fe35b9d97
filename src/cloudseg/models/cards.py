"""Model cards: the JSON file beside a trained checkpoint that says what it is.

``NAME.pth`` (a plain ``state_dict``) has ``NAME.json`` beside it: architecture, scales,
degradation, data, recipe, steps and the metrics reached. A checkpoint without a card, or whose
card names another architecture, is refused (:func:`check_card`); the registry loads a user's
file only through its card, and ``cloudseg train`` writes one with every checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["CARD_VERSION", "CardError", "card_path", "check_card", "read_card"]

CARD_VERSION = 1


class CardError(ValueError):
    """A checkpoint without a model card, or with a card that does not fit."""


def card_path(weights: str | Path) -> Path:
    """``x.pth`` -> ``x.json``."""
    return Path(weights).with_suffix(".json")


def read_card(weights: str | Path) -> dict[str, Any]:
    """The model card of a checkpoint; :class:`CardError` when it is missing or unreadable."""
    path = card_path(weights)
    if not path.is_file():
        raise CardError(
            f"{weights} has no model card ({path.name} beside it): refusing a checkpoint whose "
            f"architecture, degradation and training are unknown (cloudseg train writes one)"
        )
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CardError(f"model card {path} is unreadable: {exc}") from None
    if not isinstance(card, dict) or "architecture" not in card:
        raise CardError(f"model card {path} names no 'architecture'")
    return card


def check_card(weights: str | Path, architecture: str) -> dict[str, Any]:
    """The card of ``weights``, refused (:class:`CardError`) when it names another
    architecture than ``architecture``."""
    card = read_card(weights)
    if card["architecture"] != architecture:
        raise CardError(
            f"{weights} was trained as {card['architecture']!r} (its model card says so), "
            f"not {architecture!r}"
        )
    return card
