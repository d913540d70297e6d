"""Baselines of ``recrail/LatentReasoning-v0`` (halt mode): fixed depths, random and state-change halting.

``fixed_depth_k`` stops as soon as k reasoning steps have been applied (LARES evaluates at k = 4);
``random_halting`` stops after each step with probability ``p_stop`` (default 1/4: a mean depth of
3.87, sum of 0.75^k for k < 12, as max_depth 12 forces a stop; about the compute of fixed_depth_4 spent at random); ``state_change_halting`` stops once reasoning has
settled: the last step moved the state by less than a threshold (``info["state_change"]``),
calibrated on the validation users for a mean-step budget (by default 70% of fixed_depth_4's: the
target the issue sets the learned halting agents). The same offline calibration
(:func:`calibrate_stop_threshold`) sets a trained halting policy's operating point for a budget: stop
once its P(STOP) reaches a threshold; by default the threshold spending the most of the budget, since
the policy's calibration users are usually the ones it trained on. SASRec is not a reasoning policy; it
appears in the results table (``benchmarks/bench_lares.py``) directly.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import gymnasium as gym
import numpy as np

from agents.baselines import register_baseline
from envs.latent_reasoning import CONTINUE, STOP, LatentReasoningConfig, LatentReasoningVectorEnv

ENV_ID = "recrail/LatentReasoning-v0"
Z_95 = 1.6449  # one-sided 95% standard normal quantile
BUDGET_SELECT = ("steps", "ndcg")  # what calibrate_stop_threshold maximises within the budget


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
    """Stop at the first depth >= ``min_depth`` whose step moved the state by less than ``threshold`` (or, from
    :func:`threshold_rule`, where another feature is below it); ``ndcg`` and ``steps`` are the means it reached
    on the calibration users."""

    threshold: float
    min_depth: int
    ndcg: float
    steps: float

    def decide(self, state_change: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Halt actions at the given state changes and depths (arrays of one shape)."""
        return np.where((depth >= self.min_depth) & (state_change < self.threshold), STOP, CONTINUE)


def _improves(best: StateChangeRule | StopThreshold | None, score: tuple[float, float, float],
              max_mean_steps: float, select: str) -> bool:
    """A :meth:`DepthTraces.score` whose steps' upper confidence bound is within the budget (so that the
    budget holds on other users too) and that beats ``best``: with ``select="ndcg"`` a higher mean NDCG@10,
    then fewer steps; with ``"steps"`` more mean steps, then a higher NDCG@10."""
    ndcg, steps, upper = score
    if upper > max_mean_steps:
        return False
    if best is None:
        return True
    if select == "steps":
        return (steps, ndcg) > (best.steps, best.ndcg)
    return (ndcg, -steps) > (best.ndcg, -best.steps)


def _check_budget(max_mean_steps: float) -> None:
    if not max_mean_steps >= 1.0:
        raise ValueError(f"max_mean_steps = {max_mean_steps!r} is invalid; allowed: a float >= 1 (one step is forced)")


@dataclasses.dataclass(frozen=True)
class DepthTraces:
    """Users of a split (validation by default) reasoned to ``max_depth``, one row per user and noise draw: what a
    halting policy sees and scores at every depth.

    Column ``t`` is depth ``t + 1``. A halt-mode episode only chooses when to stop, so the observation
    and state change a policy sees at depth ``t + 1`` are those of the continue-only trajectory.
    """

    users: np.ndarray  # (U,)
    obs: np.ndarray  # (U, D, obs_dim): the env's observation at each depth
    state_change: np.ndarray  # (U, D): info["state_change"] at each depth
    ndcg: np.ndarray  # (U, D): NDCG@10 of the ranking at each depth
    top: np.ndarray | None = None  # (U, D, k): item ids of the top-k ranking at each depth (``top_k`` > 0)

    def score(self, stop: np.ndarray) -> tuple[float, float, float]:
        """Mean NDCG@10, mean steps and the mean steps' one-sided 95% upper confidence bound over users
        (normal approximation; each user's steps averaged over its draws) of halting at the first
        ``stop`` (rows, D) flag (max_depth forces one)."""
        t = self.stop_depths(stop)
        per_user = self.user_means(t + 1.0)
        se = per_user.std(ddof=1) / np.sqrt(len(per_user)) if len(per_user) > 1 else 0.0
        return float(self.ndcg[np.arange(len(t)), t].mean()), float(t.mean() + 1), float(per_user.mean() + Z_95 * se)

    def user_means(self, values: np.ndarray) -> np.ndarray:
        """Each user's mean of ``values`` (one per row) over its draws, users in sorted order."""
        return np.bincount(self._user_index, values) / np.bincount(self._user_index)

    @staticmethod
    def stop_depths(stop: np.ndarray) -> np.ndarray:
        """Column index (depth - 1) of each row's first ``stop`` (rows, D) flag; max_depth forces one."""
        stop = np.array(stop, dtype=bool)
        stop[:, -1] = True
        return stop.argmax(1)

    def held_out(self, config: LatentReasoningConfig) -> DepthTraces:
        """The rows of the users an env with ``config`` never draws at reset (``u % n_folds == holdout_fold``),
        to calibrate an agent trained with that config on users it did not train on."""
        if config.holdout_fold is None:
            raise ValueError("config.holdout_fold = None holds no users out; allowed: an int in 0..n_folds - 1")
        keep = config.held_out(self.users)
        if not keep.any():
            raise ValueError(f"holdout_fold {config.holdout_fold} of n_folds {config.n_folds} holds out none of "
                             f"the traces' {len(np.unique(self.users))} users")
        return DepthTraces(self.users[keep], self.obs[keep], self.state_change[keep], self.ndcg[keep],
                           None if self.top is None else self.top[keep])

    @functools.cached_property
    def _user_index(self) -> np.ndarray:
        return np.unique(self.users, return_inverse=True)[1]


def draw_seeds(seed: int, draws: int) -> list[int]:
    """The episode seeds of ``draws`` noise draws: draw r uses seed + 100,000 r (one draw: ``seed``)."""
    return [seed + 100_000 * r for r in range(draws)]


def depth_traces(config: LatentReasoningConfig, max_users: int | None = 3000, seed: int = 0, batch: int = 512,
                 draws: int = 1, split: str = "valid", top_k: int = 0) -> DepthTraces:
    """:class:`DepthTraces` of (at most ``max_users`` of; None: all) the ``split``'s users, ``draws`` noise draws
    each (one row per user and draw, draw-major; draw r's batch at offset i is seeded
    ``draw_seeds(seed, draws)[r] + i``, as the bench seeds its test draws, so a halting policy's episodes are
    the traces cut at its stops); with ``top_k`` > 0 also each depth's top-k items (``DepthTraces.top``).
    """
    if draws < 1:
        raise ValueError(f"draws = {draws!r} is invalid; allowed: an integer >= 1")
    cfg = dataclasses.replace(config, action_mode="halt", split=split, step_cost=0.0, shaping=False,
                              potential_shaping=True, reward_metric="ndcg", k=10)
    env = LatentReasoningVectorEnv(batch, cfg)
    users = env.batch.eligible_users(split)
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    runs = [_trace_draw(env, users, s, top_k) for s in draw_seeds(seed, draws)]
    parts = [np.concatenate(part) for part in zip(*runs)]
    return DepthTraces(np.tile(users, draws), *parts[:3], parts[3] if top_k else None)


def _trace_draw(env: LatentReasoningVectorEnv, users: np.ndarray, seed: int, top_k: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One noise draw of ``users`` reasoned to max depth: observations, state changes, NDCG@10 and (``top_k`` > 0;
    else empty) the top-k items per depth.

    The env's potential-shaped rewards (step cost 0) are the changes of NDCG@10 between consecutive
    rankings, so with the final ranking's NDCG@10 they give the NDCG@10 at every depth.
    """
    batch, D = env.num_envs, env.config.max_depth
    obs_all = np.zeros((len(users), D, env.single_observation_space.shape[0]), np.float32)
    change, ndcg = np.zeros((len(users), D)), np.zeros((len(users), D))
    top = np.zeros((len(users), D, top_k), np.int64)
    for i in range(0, len(users), batch):
        m = len(users[i:i + batch])

        def tops() -> np.ndarray:  # the current top-k of the chunk's users ((m, 0) without top_k: no score product)
            return env.batch.top_items(top_k)[:m] if top_k else np.zeros((m, 0), np.int64)

        obs, info = env.reset(seed=seed + i, options={"users": np.resize(users[i:i + batch], batch)})
        o, c, r, t = [obs[:m]], [info["state_change"][:m]], [], [tops()]
        for _ in range(D - 1):
            obs, reward, *_, info = env.step(np.full(batch, CONTINUE))
            o.append(obs[:m])
            c.append(info["state_change"][:m])
            r.append(reward[:m])
            t.append(tops())
        obs_all[i:i + m], change[i:i + m], top[i:i + m] = np.stack(o, 1), np.stack(c, 1), np.stack(t, 1)
        # NDCG at depth t = final NDCG minus the changes paid after it
        later = np.cumsum(np.stack(r, 1)[:, ::-1], 1)[:, ::-1]
        final = info["kpis"]["NDCG@10"][:m]
        ndcg[i:i + m] = final[:, None] - np.concatenate([later, np.zeros((m, 1))], 1)
    return obs_all, change, ndcg, top


def calibrate_state_change(config: LatentReasoningConfig, max_mean_steps: float = 2.8, max_users: int = 3000,
                           seed: int = 0, batch: int = 512) -> StateChangeRule:
    """:func:`state_change_rule` on the :func:`depth_traces` of (at most ``max_users`` of) the validation users."""
    _check_budget(max_mean_steps)
    return state_change_rule(depth_traces(config, max_users, seed, batch), max_mean_steps)


def state_change_rule(traces: DepthTraces, max_mean_steps: float = 2.8) -> StateChangeRule:
    """The state-change rule with the best mean NDCG@10 on the traces' users whose mean steps' upper
    confidence bound (:meth:`DepthTraces.score`) is within ``max_mean_steps``; per min_depth, 201 quantiles of
    the state change (and no threshold) are scored offline."""
    return threshold_rule(traces, traces.state_change, max_mean_steps)


def threshold_rule(traces: DepthTraces, feature: np.ndarray, max_mean_steps: float = 2.8) -> StateChangeRule:
    """:func:`state_change_rule` on another per-depth ``feature`` (U, D) of the traces: stop at the first depth
    >= ``min_depth`` where it is below the threshold."""
    _check_budget(max_mean_steps)
    if feature.shape != traces.ndcg.shape:
        raise ValueError(f"feature has shape {feature.shape}; allowed: the traces' (users, depths) "
                         f"{traces.ndcg.shape}")
    depths = np.arange(1, feature.shape[1] + 1)
    best = None
    for min_depth in depths:
        # threshold inf = fixed depth min_depth (min_depth 1 is one step: always within the budget)
        candidates = np.unique(np.quantile(feature[:, min_depth - 1:], np.linspace(0, 1, 201)))
        for threshold in np.append(candidates, np.inf):
            rule = StateChangeRule(float(threshold), int(min_depth), 0.0, 0.0)
            score = traces.score(rule.decide(feature, depths) == STOP)
            if _improves(best, score, max_mean_steps, "ndcg"):
                best = dataclasses.replace(rule, ndcg=score[0], steps=score[1])
    return best


@dataclasses.dataclass(frozen=True)
class StopThreshold:
    """Stop once a policy's probability of STOP reaches ``threshold``; ``ndcg`` and ``steps`` are the means it
    reached on the calibration users."""

    threshold: float
    ndcg: float
    steps: float


def calibrate_stop_threshold(traces: DepthTraces, p_stop: np.ndarray, max_mean_steps: float = 2.8,
                             select: str = "steps") -> StopThreshold:
    """The threshold on a halting policy's P(STOP) (``p_stop``: (U, D), at each of ``traces``' depths) whose
    mean steps' upper confidence bound (:meth:`DepthTraces.score`) on the traces' users is within
    ``max_mean_steps`` and that spends the most of it (``select="steps"``; ties: the higher NDCG@10), or has
    the best mean NDCG@10 (``"ndcg"``).

    This sets a trained policy's operating point for a compute budget without retraining it: a policy
    acting greedily stops at P(STOP) >= 1/2, and its mean steps vary from one training run to the next.
    ``"steps"`` selects nothing on the traces' NDCG@10, which overstates the policy's when it trained on
    those users' targets: on Beauty ``"ndcg"`` picked thresholds at 2.0 of 2.8 allowed steps.
    """
    _check_budget(max_mean_steps)
    if select not in BUDGET_SELECT:
        raise ValueError(f"select = {select!r} is invalid; allowed: one of {BUDGET_SELECT}")
    if p_stop.shape != traces.ndcg.shape:
        raise ValueError(f"p_stop has shape {p_stop.shape}; allowed: the traces' (users, depths) {traces.ndcg.shape}")
    best = None
    # observed probabilities (at most 2,001 quantiles); above every one: never stop early, fixed max_depth
    for threshold in np.append(np.unique(np.quantile(p_stop, np.linspace(0, 1, 2001), method="lower")), np.inf):
        score = traces.score(p_stop >= threshold)
        if _improves(best, score, max_mean_steps, select):
            best = StopThreshold(float(threshold), *score[:2])
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
