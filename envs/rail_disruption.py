"""RailDisruption-v0: reschedule trains at a hub upstream of an open-ended line closure.

Model (``simulators.railway``): several routes leave a hub; at ``start_min`` a section of one
route closes (flood) for a duration the agent never sees. Passengers arrive at the hub per route
and destination with a surge while the line is closed, wait at most ``patience_min`` minutes and
board FIFO up to a train's capacity. Part of the fleet is stranded beyond the closure. The agent
sees passenger numbers only through mobile data (sampled, delayed, noisy); KPIs use the truth.

Time step: one decision epoch, ``epoch_min`` simulated minutes (default 5; 144 steps = 12 hours).

Observation: ``Box(0, high, (8 * R + 8,), float32)`` with finite bounds derived from the scenario
(hub capacity, MD penetration and noise, horizon); per route ``r`` (R routes):
    0 MD-estimated waiting passengers / unit capacity
    1 MD arrival rate x over the last 15 minutes (persons/min), squashed: x / (x + 10)
    2 minutes since the route's last departure / 60 (episode start counts as 60 minutes ago)
    3 minutes to the next departure of the original timetable / 60 (horizon / 60 when none is left
      before the horizon)
    4 1 if the route's path is blocked now
    5 1 if a short-turn or detour pattern exists now
    6 units in service on the route / fleet size
    7 1 if some dispatch mode is feasible now (see ``action_masks``)
then global: MD crowd ratio (MD waiting / hub crowding threshold), time of day / 24 h, 1 if the
line is closed, minutes since the closure began / horizon, free units / fleet, stranded units /
fleet, elapsed time / horizon, 1 once the line has reopened.

Action (flat mode): ``MultiDiscrete([5, 2] * R)``: per route a mode (0 hold, 1 all-stops,
2 skip-stop, 3 short-turn, 4 detour; 3 and 4 exist only while the route is blocked) and a consist
(0 = one unit, 1 = two coupled units). ``action_masks()`` is the flattened per-component mask
(MaskablePPO format): a mode is feasible when its pattern exists now, a unit is free and no
section of the pattern would be entered within its minimum headway; two units need two free units.
In-space but infeasible choices (also jointly infeasible ones that the per-component mask cannot
express, e.g. two routes asking for the last unit) follow ``RailwayModel``'s rule: the route holds
and the action counts in ``info["invalid_actions"]`` and in the reward. A headway violation that
the mask showed runs and is counted and penalised; respecting the mask makes violations impossible.

Hierarchical mode (``hierarchical=True``): the action is ``MultiDiscrete([quota_levels + 1] * R)``,
route ``r`` may hold ``level / quota_levels * fleet size`` units in service; one step runs
``high_level_every`` epochs of a rule dispatcher (``simulators.railway.rules.quota_dispatch``).

Reward per epoch (weights in the config):
    ``w_served * boarded - w_crowd * person-minutes above the hub's crowding threshold
    - w_lost * passengers who left or were refused - w_empty * empty places dispatched
    - w_headway * headway violations - w_invalid * invalid actions``.

Start: minute 0 of the scenario (``default``: the config's scenario, or a draw of the ``train`` /
held-out ``test`` family around it, ``ScenarioFamily.sample``), the closure begins later; ``reset``
takes no options (the scenario comes from the config; any key raises). Truncation: the horizon;
every policy is scored over the same day, so returns and KPIs compare. Termination, only with a
``backlog_clear_ratio``: the line has reopened and at most ``backlog_clear_ratio * crowding
threshold`` passengers wait (a recovery task: since boardings earn ``w_served``, ending early forgoes
reward, so use it with ``w_served = 0``). Stepping a finished episode raises (no auto-reset).

``info``: ``time_min``, ``boarded``, ``lost``, ``invalid_actions``, ``headway_violations`` of the
step; on the last step ``kpis`` (``RailwayModel.kpis``: demand_satisfaction, fleet_share_used,
overcrowding_person_min, peak_crowd_ratio, mean_wait_min, p95_wait_min, denied_boardings,
passengers_lost, headway_violations, trains_dispatched, mean_load_factor, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.config import check_options, make_config
from simulators.railway.model import EpochResult, RailwayModel
from simulators.checks import check_field, check_finite, check_ints
from simulators.railway.network import DETOUR, HOLD, N_MODES, SHORT_TURN
from simulators.railway.rules import quota_dispatch
from simulators.railway.scenario import FAMILIES, Scenario, default_scenario

ROUTE_FEATURES = 8
GLOBAL_FEATURES = 8


@dataclass(frozen=True)
class RailDisruptionConfig:
    scenario: Scenario | None = None  # None: the embedded default scenario
    family: str = "default"  # "default" | "train" | "test": draw scenario parameters at each reset
    epoch_min: int = 5
    hierarchical: bool = False
    high_level_every: int = 6
    quota_levels: int = 4
    low_level_min_load: float = 0.5  # hierarchical low level: dispatch when the queue fills this share of a unit
    low_level_max_gap_min: float = 20.0  # ... or when the last departure is this long ago
    # None: every episode runs to the horizon. A ratio: the episode ends once the line has reopened and at most
    # ratio x the hub's crowding threshold wait (a recovery task; with w_served > 0 ending forgoes the reward of
    # later boardings, so an agent gains by delaying recovery: pair it with a cost-only reward, w_served = 0)
    backlog_clear_ratio: float | None = None
    w_served: float = 0.01
    w_crowd: float = 0.0005
    w_lost: float = 0.02
    w_empty: float = 0.001
    w_headway: float = 5.0
    w_invalid: float = 0.2

    def __post_init__(self) -> None:
        if self.scenario is not None and not isinstance(self.scenario, Scenario):
            raise ValueError(f"scenario must be a simulators.railway.Scenario or None, got {type(self.scenario).__name__}")
        if self.family not in ("default", *FAMILIES):
            raise ValueError(f"family must be one of {['default', *FAMILIES]}, got {self.family!r}")
        check_field(self, "hierarchical", isinstance(self.hierarchical, (bool, np.bool_)), "True or False")
        check_ints(self, "epoch_min", "high_level_every", "quota_levels")
        check_finite(self, "low_level_min_load", "low_level_max_gap_min",
                     *(f.name for f in fields(self) if f.name.startswith("w_")))
        if not 1 <= self.epoch_min <= 60:
            raise ValueError(f"epoch_min must be an integer in [1, 60] minutes, got {self.epoch_min!r}")
        if self.high_level_every < 1:
            raise ValueError(f"high_level_every must be an integer >= 1, got {self.high_level_every!r}")
        if self.quota_levels < 1:
            raise ValueError(f"quota_levels must be an integer >= 1, got {self.quota_levels!r}")
        if self.low_level_min_load < 0 or self.low_level_max_gap_min <= 0:
            raise ValueError("low_level_min_load must be >= 0 and low_level_max_gap_min > 0, got "
                             f"{self.low_level_min_load} and {self.low_level_max_gap_min}")
        if self.backlog_clear_ratio is not None:
            check_finite(self, "backlog_clear_ratio")
            if self.backlog_clear_ratio < 0:
                raise ValueError(f"backlog_clear_ratio must be None or >= 0, got {self.backlog_clear_ratio}")
        for f in fields(self):
            if f.name.startswith("w_") and getattr(self, f.name) < 0:
                raise ValueError(f"reward weight {f.name} must be >= 0, got {getattr(self, f.name)}")


class RailDisruptionEnv(gym.Env):
    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, config: RailDisruptionConfig | dict | None = None, render_mode: str | None = None,
                 **overrides: Any) -> None:
        config = make_config(RailDisruptionConfig, config, **overrides)
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.config = config
        self.render_mode = render_mode
        self.base_scenario = config.scenario or default_scenario()
        self.n_routes = len(self.base_scenario.network.routes)
        self.observation_space = spaces.Box(0.0, self._observation_high(self.base_scenario), dtype=np.float32)
        if config.hierarchical:
            self.action_space = spaces.MultiDiscrete([config.quota_levels + 1] * self.n_routes)
        else:
            self.action_space = spaces.MultiDiscrete([N_MODES, 2] * self.n_routes)
        self._nvec = self.action_space.nvec
        self._nvec_list = self._nvec.tolist()
        self.model: RailwayModel | None = None
        self._done = False
        self.md_waiting = np.zeros(self.n_routes)  # the operator's latest MD estimate of waiting passengers

    # -- Gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        check_options(options, set())  # the scenario is the config's: a reset option would be silently unused
        scenario = self.base_scenario
        if self.config.family != "default":
            scenario = FAMILIES[self.config.family].sample(scenario, self.np_random)
        self.scenario = scenario
        self.model = RailwayModel(scenario, self.config.epoch_min, self.np_random)
        self._fleet = scenario.fleet.size
        self._threshold = scenario.network.hub_station.crowd_threshold
        tables = self.model.tables
        self._has_alternative = [(t.exists[:, SHORT_TURN] | t.exists[:, DETOUR]).tolist() for t in tables]
        self._done = False
        return self._observe(), {"time_min": 0}

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.model is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        action = self._check_action(action)
        if self.config.hierarchical:
            result = self._step_hierarchical(np.asarray(action))
        else:
            result = self.model.step(action[0::2], [c + 1 for c in action[1::2]])
        cfg = self.config
        reward = (
            cfg.w_served * result.boarded
            - cfg.w_crowd * result.overcrowd_person_min
            - cfg.w_lost * result.lost
            - cfg.w_empty * result.empty_places
            - cfg.w_headway * result.violations
            - cfg.w_invalid * result.invalid
        )
        model = self.model
        terminated = self._recovered()
        truncated = model.at_horizon and not terminated
        info: dict[str, Any] = {
            "time_min": model.now,
            "boarded": result.boarded,
            "lost": result.lost,
            "invalid_actions": result.invalid,
            "headway_violations": result.violations,
        }
        if terminated or truncated:
            self._done = True
            info["kpis"] = model.kpis()
        return self._observe(), float(reward), terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """Flattened boolean mask over every component's choices (MaskablePPO's format)."""
        if self.model is None:
            raise RuntimeError("call reset() before action_masks()")
        if self.config.hierarchical:
            return np.ones(int(self._nvec.sum()), dtype=bool)
        modes = self.model.mode_mask()
        two = self.model.stock.free >= 2
        out = np.empty((self.n_routes, N_MODES + 2), dtype=bool)
        out[:, :N_MODES] = modes
        out[:, N_MODES] = True
        out[:, N_MODES + 1] = two
        return out.ravel()

    def render(self) -> str | np.ndarray | None:
        """``ansi``: a text summary; ``rgb_array``: per route a bar of true waiting passengers
        (height relative to the hub capacity; red once the line is closed) and of units in service."""
        if self.render_mode is None or self.model is None:
            return None
        m = self.model
        if self.render_mode == "rgb_array":
            height, bar = 64, 12
            image = np.full((height, 2 * bar * self.n_routes, 3), 255, dtype=np.uint8)
            waiting = m.passengers.waiting_now / m.network.hub_station.capacity
            units = m.stock.by_route / self._fleet
            for r in range(self.n_routes):
                for k, (value, colour) in enumerate(((waiting[r], (200, 40, 40) if m.closed else (40, 90, 200)),
                                                     (units[r], (60, 160, 60)))):
                    top = height - int(round(float(value) * height))
                    image[top:, (2 * r + k) * bar : (2 * r + k + 1) * bar - 2] = colour
            return image
        lines = [f"t={m.now} min  closed={m.closed}  free units={m.stock.free}/{m.stock.size}  "
                 f"waiting={m.passengers.waiting()}"]
        waiting = m.passengers.waiting_by_route()
        for r, route in enumerate(m.network.routes):
            lines.append(f"  {route.name:<12} waiting={int(waiting[r]):5d}  units out={int(m.stock.by_route[r])}")
        return "\n".join(lines)

    # -- internals -----------------------------------------------------------------------------
    @staticmethod
    def _observation_high(scenario: Scenario) -> np.ndarray:
        """Finite upper bounds of every feature (the MD estimate of at most a full platform)."""
        n_routes = len(scenario.network.routes)
        hub = scenario.network.hub_station
        md_max = hub.capacity * scenario.mobile_data.max_factor()
        hours = (scenario.horizon_min + 60) / 60.0
        route = [md_max / scenario.fleet.unit_capacity, 1.0, hours, hours, 1.0, 1.0, 1.0, 1.0]
        glob = [n_routes * md_max / hub.crowd_threshold, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
        return np.array(route * n_routes + glob, dtype=np.float32)

    def _check_action(self, action) -> list[int]:
        """The action as a list of ints; anything outside the action space raises ValueError."""
        arr = np.asarray(action)
        values = arr.tolist() if arr.dtype.kind in "iu" and arr.shape == self._nvec.shape else None
        if values is None or not all(0 <= v < n for v, n in zip(values, self._nvec_list)):
            raise ValueError(f"action {action!r} is not in the action space {self.action_space} "
                             f"(integers 0 <= a[i] < nvec[i], nvec={self._nvec_list})")
        return values

    def _recovered(self) -> bool:
        """The episode's end by recovery (only with a ``backlog_clear_ratio``)."""
        ratio = self.config.backlog_clear_ratio
        return ratio is not None and self.model.backlog_cleared(int(ratio * self._threshold))

    def _step_hierarchical(self, levels: np.ndarray) -> EpochResult:
        cfg, model = self.config, self.model
        quotas = levels * self._fleet / cfg.quota_levels
        total = EpochResult()
        for _ in range(cfg.high_level_every):
            modes, consists = quota_dispatch(model, self.md_waiting, quotas, cfg.low_level_min_load, cfg.low_level_max_gap_min)
            part = model.step(modes, consists)
            for f in fields(EpochResult):
                setattr(total, f.name, getattr(total, f.name) + getattr(part, f.name))
            self.md_waiting = model.sensor.waiting(model.passengers.waiting_log, model.now)
            if model.at_horizon or self._recovered():
                break
        return total

    def _observe(self) -> np.ndarray:
        # Plain Python over routes: for a handful of routes it is several times faster than numpy.
        m = self.model
        now = m.now
        md = m.sensor.waiting(m.passengers.waiting_log, now)
        self.md_waiting = md
        state = m.state
        cap, fleet = float(m.unit_capacity), float(self._fleet)
        rates = m.sensor.arrival_rate(now).tolist()
        feasible = m.mode_mask()[:, HOLD + 1 :].any(axis=1).tolist()
        blocked = m.compiled.blocked[state].tolist()
        alternative = self._has_alternative[state]
        next_dep = m.next_departure[:, now].tolist()
        by_route = m.stock.by_route.tolist()
        values = []
        for r, (waiting, last) in enumerate(zip(md.tolist(), m.last_departure.tolist())):
            values += (
                waiting / cap,
                rates[r] / (rates[r] + 10.0),
                (now - max(last, -60.0)) / 60.0,
                next_dep[r] / 60.0,
                blocked[r],
                alternative[r],
                by_route[r] / fleet,
                feasible[r],
            )
        horizon = m.horizon
        since_closure = now - m.closure_start if (m.closed or m.reopened) else 0.0
        values += (
            float(md.sum()) / self._threshold,
            ((self.scenario.start_of_day_min + now) % 1440) / 1440.0,
            m.closed,
            since_closure / horizon,
            m.stock.free / fleet,
            m.stock.stranded / fleet,
            now / horizon,
            m.reopened,
        )
        return np.array(values, dtype=np.float32)
