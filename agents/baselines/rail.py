"""Baselines of recrail/RailDisruption-v0 (flat action mode). They read the world through
``env.unwrapped.model`` and the operator's mobile-data estimate ``env.unwrapped.md_waiting``.

- ``timetable``: run the original timetable (all-stops, timetabled consist); cancel a departure
  that cannot run as planned (blocked route, too few units, headway).
- ``fixed_headway``: one unit every ``headway_min`` minutes per route, using a short-turn or a
  detour on the blocked route.
- ``demand_greedy``: every epoch, dispatch the route with the largest MD queue that can run.
- ``load_aware_holding``: hold each route until its MD queue fills ``target_load`` of a unit or
  ``max_hold_min`` minutes passed since its last departure; two units for long queues.
- ``random``: uniformly random choices among those ``action_masks()`` allows.
"""

from __future__ import annotations

from bisect import bisect_right

import gymnasium as gym
import numpy as np

from agents.baselines import register_baseline
from simulators.railway.network import ALL_STOPS, HOLD
from simulators.railway.rules import DispatchPlan, preferred_mode, quota_dispatch

ENV_ID = "recrail/RailDisruption-v0"


def _flat_action(modes: np.ndarray, consists: np.ndarray) -> np.ndarray:
    action = np.empty(2 * len(modes), dtype=np.int64)
    action[0::2] = modes
    action[1::2] = consists - 1
    return action


class _RailBaseline:
    name = "rail"

    def reset(self, env: gym.Env, seed: int | None) -> None:
        if env.unwrapped.config.hierarchical:
            raise ValueError(f"baseline {self.name!r} acts in the flat action mode; got hierarchical=True")

    def act(self, obs: np.ndarray, env: gym.Env) -> np.ndarray:
        plan = DispatchPlan(env.unwrapped.model)
        self.plan(plan, env.unwrapped)
        return _flat_action(plan.modes, plan.consists)

    def plan(self, plan: DispatchPlan, env) -> None:
        raise NotImplementedError


class TimetablePolicy(_RailBaseline):
    name = "timetable"

    def plan(self, plan: DispatchPlan, env) -> None:
        model = plan.model
        for r, route in enumerate(model.network.routes):
            # a departure due since the previous decision: in (now - epoch, now], fractional minutes included
            if bisect_right(route.departures, model.now) > bisect_right(route.departures, model.now - model.epoch):
                plan.add(r, ALL_STOPS, route.timetable_consist)


class FixedHeadwayPolicy(_RailBaseline):
    name = "fixed_headway"

    def __init__(self, headway_min: float = 15.0) -> None:
        if headway_min <= 0:
            raise ValueError(f"headway_min must be > 0, got {headway_min}")
        self.headway_min = headway_min

    def plan(self, plan: DispatchPlan, env) -> None:
        model = plan.model
        for r in range(model.n_routes):
            if model.now - model.last_departure[r] >= self.headway_min:
                plan.add(r, preferred_mode(plan.mask[r]), 1)


class DemandGreedyPolicy(_RailBaseline):
    name = "demand_greedy"

    def plan(self, plan: DispatchPlan, env) -> None:
        queue = env.md_waiting
        for r in np.argsort(-queue, kind="stable"):
            mode = preferred_mode(plan.mask[r])
            if mode != HOLD and plan.add(int(r), mode, plan.consist_for(queue[r], plan.model.unit_capacity)):
                return


class LoadAwareHoldingPolicy(_RailBaseline):
    name = "load_aware_holding"

    def __init__(self, target_load: float = 0.7, max_hold_min: float = 15.0) -> None:
        if not 0 < target_load <= 2 or max_hold_min <= 0:
            raise ValueError(f"target_load must be in (0, 2] and max_hold_min > 0, got {target_load}, {max_hold_min}")
        self.target_load = target_load
        self.max_hold_min = max_hold_min

    def act(self, obs: np.ndarray, env: gym.Env) -> np.ndarray:
        u = env.unwrapped
        quotas = np.full(u.n_routes, np.inf)
        return _flat_action(*quota_dispatch(u.model, u.md_waiting, quotas, self.target_load, self.max_hold_min))


class RandomFeasiblePolicy:
    """Each action component drawn uniformly among the choices its mask allows."""

    name = "random"

    def reset(self, env: gym.Env, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, env: gym.Env) -> np.ndarray:
        return random_masked_action(env.unwrapped.action_space.nvec, env.unwrapped.action_masks(), self.rng)


def random_masked_action(nvec: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per component, a uniform draw among the allowed choices of a flattened MultiDiscrete mask."""
    flags = mask.tolist()
    draws = rng.random(len(nvec)).tolist()
    action, start = [], 0
    for n, u in zip(nvec.tolist(), draws):
        allowed = [i for i in range(n) if flags[start + i]]
        action.append(allowed[int(u * len(allowed))])
        start += n
    return np.array(action, dtype=np.int64)


register_baseline(ENV_ID, "timetable", TimetablePolicy)
register_baseline(ENV_ID, "fixed_headway", FixedHeadwayPolicy)
register_baseline(ENV_ID, "demand_greedy", DemandGreedyPolicy)
register_baseline(ENV_ID, "load_aware_holding", LoadAwareHoldingPolicy)
register_baseline(ENV_ID, "random", RandomFeasiblePolicy)
