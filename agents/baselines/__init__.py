"""Registry of each environment's baseline policies.

A domain module registers its baselines with :func:`register_baseline` at import; this package
imports every domain module below so that ``make_baseline`` knows them all.
"""

from __future__ import annotations

from collections.abc import Callable

from agents.policy import Policy
from envs import bare_id

PolicyFactory = Callable[..., Policy]
_BASELINES: dict[str, dict[str, PolicyFactory]] = {}


def register_baseline(env_id: str, name: str, factory: PolicyFactory) -> None:
    """Make ``factory(**kwargs) -> Policy`` available as baseline ``name`` of ``env_id``."""
    table = _BASELINES.setdefault(bare_id(env_id), {})
    if name in table:
        raise ValueError(f"baseline {name!r} is already registered for {env_id!r}")
    table[name] = factory


def baseline_names(env_id: str) -> list[str]:
    """Names of the baselines registered for ``env_id`` (empty when it has none)."""
    return list(_BASELINES.get(bare_id(env_id), {}))


def make_baseline(env_id: str, name: str, **kwargs) -> Policy:
    """Build baseline ``name`` of ``env_id``; unknown names raise with the list of known ones."""
    table = _BASELINES.get(bare_id(env_id), {})
    if name not in table:
        known = ", ".join(table) or "none"
        raise ValueError(f"unknown baseline {name!r} for {env_id}; known baselines: {known}")
    policy = table[name](**kwargs)
    policy.name = name
    return policy


from agents.baselines import rail  # noqa: E402,F401  (registers the railway baselines)
from agents.baselines import trm_retrieval  # noqa: E402,F401  (registers the DeepRec baselines)
from agents.baselines import latent_reasoning  # noqa: E402,F401  (registers the LARES baselines)
