"""Validation of the typed config dataclasses: one error message that names the field, its value and what is allowed."""

from __future__ import annotations

import math
from numbers import Integral, Real


def check_field(config: object, name: str, ok: bool, allowed: str) -> None:
    """Raise ``ValueError("<Class>.<name> = <value> is invalid; allowed: <allowed>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{type(config).__name__}.{name} = {getattr(config, name)!r} is invalid; allowed: {allowed}")


def is_int(value: object) -> bool:
    """An integer (Python or numpy), not a bool: counts of units, persons, steps and minutes index arrays."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_finite(value: object) -> bool:
    """A finite real number (Python or numpy), not a bool: NaN passes no range check and inf every lower bound."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def check_ints(config: object, *names: str) -> None:
    """Each field ``names`` of ``config`` is an integer (:func:`is_int`)."""
    for name in names:
        check_field(config, name, is_int(getattr(config, name)), "an integer")


def check_finite(config: object, *names: str) -> None:
    """Each field ``names`` of ``config`` is a finite number (:func:`is_finite`)."""
    for name in names:
        check_field(config, name, is_finite(getattr(config, name)), "a finite number")
