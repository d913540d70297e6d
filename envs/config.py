"""One rule for every environment's config argument: a typed dataclass, a dict of its fields, or None."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

C = TypeVar("C")


def make_config(cls: type[C], config: C | dict[str, Any] | None, **overrides: Any) -> C:
    """``config`` as an instance of the dataclass ``cls``: None gives the defaults, a dict its fields
    (unknown keys rejected, naming them); ``overrides`` (flat keyword arguments, as
    ``gym.make(id, field=value)`` and ``gym.make_vec`` pass them) replace fields."""
    if config is not None and not isinstance(config, (cls, dict)):
        raise TypeError(f"config must be a {cls.__name__}, a dict or None, got {type(config).__name__}")
    if isinstance(config, cls) and not overrides:
        return config
    # fields as they are: asdict would turn nested dataclasses (a rail Scenario) into dicts
    values = {f.name: getattr(config, f.name) for f in fields(cls)} if isinstance(config, cls) else dict(config or {})
    values.update(overrides)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; allowed: {sorted(known)}")
    return cls(**values)


def check_options(options: dict[str, Any] | None, allowed: set[str]) -> dict[str, Any]:
    """``reset`` options as a dict, rejecting keys outside ``allowed`` with their names."""
    options = options or {}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown reset options {unknown}; allowed: {sorted(allowed)}")
    return options
