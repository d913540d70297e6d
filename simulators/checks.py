"""Validation of the typed config dataclasses: one error message that names the field, its value and what is allowed."""

from __future__ import annotations


def check_field(config: object, name: str, ok: bool, allowed: str) -> None:
    """Raise ``ValueError("<Class>.<name> = <value> is invalid; allowed: <allowed>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{type(config).__name__}.{name} = {getattr(config, name)!r} is invalid; allowed: {allowed}")
