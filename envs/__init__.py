"""recrail's Gymnasium environments.

Importing this package registers every environment under the ``recrail/`` namespace, so both
``gym.make("recrail/<Name>-v0")`` (after ``import envs``) and ``gym.make("envs:recrail/<Name>-v0")``
(in any fresh process: RLlib env runners, subprocess vector envs) work.

Entry points are strings, so registering imports no simulator: ``import envs`` stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym

NAMESPACE = "recrail"


@dataclass(frozen=True)
class EnvEntry:
    """One registered environment: its id, where it lives and a one-line description."""

    name: str
    entry_point: str
    description: str
    max_episode_steps: int | None = None
    vector_entry_point: str | None = None

    @property
    def env_id(self) -> str:
        return f"{NAMESPACE}/{self.name}"


ENVIRONMENTS: tuple[EnvEntry, ...] = (
    EnvEntry(
        name="RailDisruption-v0",
        entry_point="envs.rail_disruption:RailDisruptionEnv",
        description="Dispatch trains and rolling stock at a hub upstream of an open-ended line closure.",
    ),
    EnvEntry(
        name="LatentReasoning-v0",
        entry_point="envs.latent_reasoning:LatentReasoningEnv",
        vector_entry_point="envs.latent_reasoning:LatentReasoningVectorEnv",
        description="Decide how long (halt) or where (residual) a LARES recommender reasons in latent space.",
    ),
    EnvEntry(
        name="TRMRetrieval-v0",
        entry_point="envs.trm_retrieval:TRMRetrievalEnv",
        description="DeepRec: call a preference-aware TRM over several turns (phrase actions), then rank the pool.",
        vector_entry_point="envs.trm_retrieval:TRMRetrievalVectorEnv",
    ),
    EnvEntry(
        name="TRMRetrievalText-v0",
        entry_point="envs.trm_retrieval_text:TRMRetrievalTextEnv",
        description="DeepRec in text mode: a language model calls the TRM with tagged preferences and answers 10 titles.",
    ),
)


def env_ids() -> list[str]:
    """Every registered recrail id, in registration order."""
    return [entry.env_id for entry in ENVIRONMENTS]


def bare_id(env_id: str) -> str:
    """``env_id`` without the ``envs:`` module prefix that makes fresh processes import recrail."""
    return env_id.removeprefix("envs:")


def entry_for(env_id: str) -> EnvEntry:
    """The entry of ``env_id`` (with or without the ``envs:`` module prefix)."""
    bare = bare_id(env_id)
    for entry in ENVIRONMENTS:
        if entry.env_id == bare:
            return entry
    raise ValueError(f"unknown environment id {env_id!r}; known ids: {', '.join(env_ids())}")


def _register_all() -> None:
    for entry in ENVIRONMENTS:
        if entry.env_id in gym.registry:
            continue
        gym.register(
            id=entry.env_id,
            entry_point=entry.entry_point,
            vector_entry_point=entry.vector_entry_point,
            max_episode_steps=entry.max_episode_steps,
        )


_register_all()
