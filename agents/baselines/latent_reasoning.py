"""Baselines of ``recrail/LatentReasoning-v0`` (halt mode): fixed reasoning depths and random halting.

``fixed_depth_k`` stops as soon as k reasoning steps have been applied (LARES evaluates at k = 4);
``random_halting`` stops after each step with probability ``p_stop`` (default 1/4: a mean depth of 4,
the compute of fixed_depth_4 spent at random). SASRec is not a reasoning policy; it appears in the
results table (``benchmarks/bench_lares.py``) directly.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from agents.baselines import register_baseline
from envs.latent_reasoning import CONTINUE, STOP

ENV_ID = "recrail/LatentReasoning-v0"


def _halt_env(env: gym.Env) -> Any:
    base = env.unwrapped
    if base.config.action_mode != "halt":
        raise ValueError(f"this baseline needs action_mode='halt', the env has {base.config.action_mode!r}")
    return base


class FixedDepth:
    """Continue until ``depth`` reasoning steps are applied, then stop."""

    def __init__(self, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self.name = f"fixed_depth_{depth}"

    def reset(self, env: gym.Env, seed: int | None) -> None:
        base = _halt_env(env)
        if self.depth > base.config.max_depth:
            raise ValueError(f"{self.name} needs max_depth >= {self.depth}, the env has {base.config.max_depth}")

    def act(self, obs: Any, env: gym.Env) -> int:
        return STOP if env.unwrapped.depth >= self.depth else CONTINUE


class RandomHalting:
    """Stop after each reasoning step with probability ``p_stop`` (seeded per episode)."""

    def __init__(self, p_stop: float = 0.25) -> None:
        if not 0.0 < p_stop <= 1.0:
            raise ValueError(f"p_stop must be in (0, 1], got {p_stop}")
        self.p_stop = p_stop
        self.name = "random_halting"
        self._rng = np.random.default_rng()

    def reset(self, env: gym.Env, seed: int | None) -> None:
        _halt_env(env)
        self._rng = np.random.default_rng(seed)

    def act(self, obs: Any, env: gym.Env) -> int:
        return STOP if self._rng.random() < self.p_stop else CONTINUE


for _k in (1, 2, 4, 8):
    register_baseline(ENV_ID, f"fixed_depth_{_k}", lambda k=_k, **kw: FixedDepth(k, **kw))
register_baseline(ENV_ID, "random_halting", RandomHalting)
