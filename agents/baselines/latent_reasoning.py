"""Baselines of ``recrail/LatentReasoning-v0`` (halt mode): fixed depths, random and state-change halting.

``fixed_depth_k`` stops as soon as k reasoning steps have been applied (LARES evaluates at k = 4);
``random_halting`` stops after each step with probability ``p_stop`` (default 1/4: a mean depth of 4,
the compute of fixed_depth_4 spent at random); ``state_change_halting`` stops once reasoning has
settled: the last step moved the state by less than a threshold (``info["state_change"]``),
calibrated on the validation users for a mean-step budget (by default 70% of fixed_depth_4's: the
target the issue sets the learned halting agents). SASRec is not a reasoning policy; it appears in
the results table (``benchmarks/bench_lares.py``) directly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np

from agents.baselines import register_baseline
from envs.latent_reasoning import CONTINUE, STOP, LatentReasoningConfig, LatentReasoningVectorEnv

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


@dataclasses.dataclass(frozen=True)
class StateChangeRule:
    """Stop at the first depth >= ``min_depth`` whose step moved the state by less than ``threshold``;
    ``ndcg`` and ``steps`` are the means it reached on the calibration users."""

    threshold: float
    min_depth: int
    ndcg: float
    steps: float

    def decide(self, state_change: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Halt actions at the given state changes and depths (arrays of one shape)."""
        return np.where((depth >= self.min_depth) & (state_change < self.threshold), STOP, CONTINUE)


def _check_budget(max_mean_steps: float) -> None:
    if not max_mean_steps >= 1.0:
        raise ValueError(f"max_mean_steps = {max_mean_steps!r} is invalid; allowed: a float >= 1 (one step is forced)")


def calibrate_state_change(config: LatentReasoningConfig, max_mean_steps: float = 2.8, max_users: int = 3000,
                           seed: int = 0, batch: int = 512) -> StateChangeRule:
    """The state-change rule with the best mean NDCG@10 on (at most ``max_users`` of) the validation users
    whose mean steps stay within ``max_mean_steps``.

    Every user is reasoned to ``config.max_depth`` once. The env's potential-shaped rewards (step cost
    0) are the changes of NDCG@10 between consecutive rankings, so with the final ranking's NDCG@10
    they give the NDCG@10 at every depth, and every (threshold, min_depth) pair is scored offline.
    """
    _check_budget(max_mean_steps)
    cfg = dataclasses.replace(config, action_mode="halt", split="valid", step_cost=0.0, shaping=False,
                              potential_shaping=True, reward_metric="ndcg", k=10)
    env = LatentReasoningVectorEnv(batch, cfg)
    users = env.batch.eligible_users("valid")
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    D = cfg.max_depth
    change, ndcg = np.zeros((len(users), D)), np.zeros((len(users), D))
    for i in range(0, len(users), batch):
        m = len(users[i:i + batch])
        _, info = env.reset(seed=seed + i, options={"users": np.resize(users[i:i + batch], batch)})
        c, r = [info["state_change"][:m]], []
        for _ in range(D - 1):
            _, reward, *_, info = env.step(np.full(batch, CONTINUE))
            c.append(info["state_change"][:m])
            r.append(reward[:m])
        change[i:i + m] = np.stack(c, 1)
        # NDCG at depth t = final NDCG minus the changes paid after it
        later = np.cumsum(np.stack(r, 1)[:, ::-1], 1)[:, ::-1]
        final = info["kpis"]["NDCG@10"][:m]
        ndcg[i:i + m] = final[:, None] - np.concatenate([later, np.zeros((m, 1))], 1)
    best, rows, depths = None, np.arange(len(users)), np.arange(1, D + 1)
    for min_depth in range(1, D + 1):
        # threshold inf = fixed depth min_depth (min_depth 1 is one step: always within the budget)
        candidates = np.unique(np.quantile(change[:, min_depth - 1:], np.linspace(0, 1, 201)))
        for threshold in np.append(candidates, np.inf):
            rule = StateChangeRule(float(threshold), min_depth, 0.0, 0.0)
            stop = rule.decide(change, depths) == STOP
            stop[:, -1] = True  # max_depth is a forced stop
            t = stop.argmax(1)
            value, steps = float(ndcg[rows, t].mean()), float(t.mean() + 1)
            if steps <= max_mean_steps and (best is None or (value, -steps) > (best.ndcg, -best.steps)):
                best = dataclasses.replace(rule, ndcg=value, steps=steps)
    return best


class StateChangeHalting:
    """Stop once the last step moved the state by less than a threshold (see :class:`StateChangeRule`).

    Without ``rule``, the first ``reset`` calibrates one on the env's world with
    :func:`calibrate_state_change` (``max_mean_steps``), on the validation users.
    """

    def __init__(self, rule: StateChangeRule | None = None, max_mean_steps: float = 2.8) -> None:
        _check_budget(max_mean_steps)
        self.rule, self.max_mean_steps = rule, max_mean_steps
        self.name = "state_change_halting"

    def reset(self, env: gym.Env, seed: int | None) -> None:
        base = _halt_env(env)
        if self.rule is None:
            self.rule = calibrate_state_change(base.config, self.max_mean_steps)

    def act(self, obs: Any, env: gym.Env) -> int:
        base = env.unwrapped
        return int(self.rule.decide(np.asarray(base.state_change), np.asarray(base.depth)))


for _k in (1, 2, 4, 8):
    register_baseline(ENV_ID, f"fixed_depth_{_k}", lambda k=_k, **kw: FixedDepth(k, **kw))
register_baseline(ENV_ID, "random_halting", RandomHalting)
register_baseline(ENV_ID, "state_change_halting", StateChangeHalting)
