"""The one interface every evaluated policy has: baselines, SB3 models and RLlib modules alike."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import gymnasium as gym

METADATA_FILE = "recrail.json"  # what a training run saves beside its model: backend, env id, config
SB3_MODEL_FILE = "model.zip"  # the final model `recrail train` saves in an SB3 run folder


@runtime_checkable
class Policy(Protocol):
    """Maps an observation to an action of ``env.action_space``.

    ``env`` is the environment as made by ``gym.make`` (wrappers included); a baseline that needs
    the world's state reads ``env.unwrapped``. ``reset`` is called before each episode with the
    episode's seed so that stochastic policies are reproducible and paired across policies.
    """

    name: str

    def reset(self, env: gym.Env, seed: int | None) -> None: ...

    def act(self, obs: Any, env: gym.Env) -> Any: ...
