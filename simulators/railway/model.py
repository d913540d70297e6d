"""The railway disruption model: SimPy drives trains, units and the closure; numpy drives passengers.

Time is in minutes since the episode start. Decisions are taken every ``epoch_min`` minutes at the
hub: per route, a mode (``network.MODE_NAMES``) and a consist of 1 or 2 units. A dispatch takes
the units, boards waiting passengers FIFO up to capacity, records its entry time into every
track section of its pattern, and schedules the units' return one round trip later (a SimPy
timeout). Closure start, reopening, depot arrivals and stranded units' return are SimPy events
too; between decisions the passengers' cohorts advance minute by minute in one numpy pass.

Rules for decisions (``step``):

- a dispatch in a mode the route has no pattern for right now (e.g. all-stops on the blocked
  route, detour when the line is open) or without enough free units is not run: it counts as an
  ``invalid`` action and the route holds;
- a departure entering a section less than the section's minimum headway after the previous
  entry (or before it: overtaking) is a **headway violation**. If the violation was already
  visible in :meth:`mode_mask` at the start of the step, the train runs and the violation is
  counted; if it arises only from another route's departure in the same step (a joint conflict
  the per-route mask cannot show), the route holds and the action counts as invalid. Hence a
  policy that respects :meth:`mode_mask` never causes a violation.
- trains already running when the line closes complete their trip; the closure applies to new
  departures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import simpy

from simulators.checks import is_int
from simulators.railway.mobile_data import MobileDataSensor
from simulators.railway.network import ALL_STOPS, HOLD, MODE_NAMES, N_MODES, CompiledNetwork, Network, compile_network
from simulators.railway.passengers import Passengers
from simulators.railway.rolling_stock import RollingStock
from simulators.railway.scenario import Scenario

LOG_COLUMNS = ("time_min", "event", "route", "mode", "units", "boarded", "capacity", "denied", "violation")


@dataclass
class EpochResult:
    """What happened during one decision epoch (dispatches at its start, then the minutes)."""

    boarded: int = 0
    lost: int = 0
    overcrowd_person_min: float = 0.0
    empty_places: int = 0
    violations: int = 0
    invalid: int = 0
    dispatched: int = 0


@dataclass(frozen=True)
class _PatternTable:
    """All patterns of one closure state flattened, for one vectorised headway check."""

    sections: np.ndarray
    offsets: np.ndarray
    cell: np.ndarray  # route * N_MODES + mode, per entry
    exists: np.ndarray  # (routes, modes) bool


def _pattern_table(compiled: CompiledNetwork, state: int) -> _PatternTable:
    secs, offs, cells = [], [], []
    n_routes = len(compiled.network.routes)
    exists = np.zeros((n_routes, N_MODES), dtype=bool)
    for r, modes in enumerate(compiled.patterns[state]):
        for m, pattern in enumerate(modes):
            if pattern is None:
                continue
            exists[r, m] = True
            secs.append(pattern.sections)
            offs.append(pattern.entry_offsets)
            cells.append(np.full(len(pattern.sections), r * N_MODES + m))
    return _PatternTable(np.concatenate(secs), np.concatenate(offs), np.concatenate(cells), exists)


@lru_cache(maxsize=64)
def _static_tables(network: Network, closed: tuple[tuple[str, str], ...]) -> tuple[CompiledNetwork, tuple[_PatternTable, _PatternTable]]:
    compiled = compile_network(network, closed)
    return compiled, (_pattern_table(compiled, 0), _pattern_table(compiled, 1))


@lru_cache(maxsize=64)
def _minutes_to_next_departure(network: Network, horizon: int) -> np.ndarray:
    """(routes, horizon+1): minutes from t to the first timetabled departure in [t, horizon]; ``horizon``
    when none is left before the horizon (a later departure never runs in the episode)."""
    ts = np.arange(horizon + 1, dtype=np.float64)
    out = np.full((len(network.routes), horizon + 1), float(horizon))
    for r, route in enumerate(network.routes):
        deps = np.asarray(route.departures, dtype=np.float64)
        deps = deps[deps <= horizon]
        if deps.size:
            idx = np.searchsorted(deps, ts, side="left")
            has = idx < deps.size
            out[r, has] = deps[idx[has]] - ts[has]
    out.setflags(write=False)
    return out


class RailwayModel:
    """One episode of a scenario. ``rng`` draws the closure duration, arrivals and MD noise."""

    def __init__(self, scenario: Scenario, epoch_min: int, rng: np.random.Generator) -> None:
        if not is_int(epoch_min) or not 1 <= epoch_min <= scenario.demand.patience_min:
            raise ValueError(
                f"epoch_min must be an integer in [1, patience_min={scenario.demand.patience_min}] minutes, got {epoch_min!r}"
            )
        self.scenario = scenario
        self.epoch = epoch_min
        self.rng = rng
        net = scenario.network
        self.network = net
        self.n_routes = len(net.routes)
        self.horizon = scenario.horizon_min
        self.compiled, self.tables = _static_tables(net, scenario.disruption.closed_sections)
        self.next_departure = _minutes_to_next_departure(net, self.horizon)
        self.unit_capacity = scenario.fleet.unit_capacity

        d = scenario.disruption
        self.closure_start = d.start_min
        self.closure_end = d.start_min + d.sample_duration(rng)  # hidden from the operator
        self.closed = False
        self.reopened = False
        self.now = 0

        arrivals = rng.poisson(self._rates())
        hub = net.hub_station
        self.passengers = Passengers(arrivals, scenario.demand.patience_min, hub.capacity, hub.crowd_threshold)
        self.sensor = MobileDataSensor(scenario.mobile_data, arrivals.sum(axis=1), rng)
        self.stock = RollingStock(scenario.fleet, self.n_routes)
        self.last_entry = np.full(len(self.compiled.headway), -np.inf)
        self.last_departure = np.full(self.n_routes, -np.inf)
        self.trains_dispatched = 0
        self.headway_violations = 0
        self.invalid_actions = 0
        self.load_factor_sum = 0.0
        self.log: list[tuple] = []
        self._mask_cache: tuple[int, bool, int, np.ndarray] | None = None

        self.sim = simpy.Environment()
        self._at(self.closure_start, self._close)
        self._at(self.closure_end, self._reopen)
        if scenario.fleet.depot_units:
            self._at(scenario.fleet.depot_arrival_min, self._depot_arrival)
        self._run_events(0)  # e.g. a closure at minute 0 precedes the first decision

    # -- setup ---------------------------------------------------------------------------------
    def _rates(self) -> np.ndarray:
        sc, net = self.scenario, self.network
        dem = sc.demand
        minutes = np.arange(self.horizon + 1)
        if dem.rates is not None:
            return dem.rates * dem.level
        profile = np.asarray(dem.hourly_profile)[((sc.start_of_day_min + minutes) // 60) % 24]
        weights = np.asarray(dem.surge_weights or (1.0,) * self.n_routes)
        closed = (minutes >= self.closure_start) & (minutes < self.closure_end)
        after = minutes >= self.closure_end
        decay = np.where(after, np.exp(-(minutes - self.closure_end) / dem.surge_decay_min), 0.0)
        surge = 1.0 + (dem.surge_factor - 1.0) * weights[:, None] * (closed + decay)[None, :]
        dests = np.zeros((self.n_routes, net.max_dests))
        for r, route in enumerate(net.routes):
            w = np.asarray(route.dest_weights)
            dests[r, : len(w)] = route.base_demand_per_min * w / w.sum()
        return dem.level * dests[:, :, None] * (profile[None, :] * surge)[:, None, :]

    def _at(self, time_min: float, callback) -> None:
        if time_min <= self.horizon:
            event = self.sim.timeout(max(0.0, time_min - self.sim.now))
            event.callbacks.append(lambda _e: callback())

    # -- SimPy event handlers -----------------------------------------------------------------
    def _close(self) -> None:
        self.closed = True
        self._mask_cache = None
        self.log.append((self.sim.now, "closure", -1, "", 0, 0, 0, 0, False))

    def _reopen(self) -> None:
        self.closed = False
        self.reopened = True
        self._mask_cache = None
        self.log.append((self.sim.now, "reopen", -1, "", 0, 0, 0, 0, False))
        if self.stock.stranded:
            blocked = np.flatnonzero(self.compiled.blocked[1])
            run = self.compiled.patterns[0][int(blocked[0])][ALL_STOPS].one_way_min if blocked.size else 0.0
            self._at(self.sim.now + run, self._stranded_back)

    def _stranded_back(self) -> None:
        n = self.stock.release_stranded()
        self._mask_cache = None
        self.log.append((self.sim.now, "stranded_units_back", -1, "", n, 0, 0, 0, False))

    def _depot_arrival(self) -> None:
        n = self.stock.release_depot()
        self._mask_cache = None
        self.log.append((self.sim.now, "depot_units_arrive", -1, "", n, 0, 0, 0, False))

    def _unit_return(self, route: int, n: int) -> None:
        self.stock.give_back(route, n)
        self._mask_cache = None
        self.log.append((self.sim.now, "units_back", route, "", n, 0, 0, 0, False))

    # -- decisions -----------------------------------------------------------------------------
    @property
    def state(self) -> int:
        """0 while the line is open, 1 while it is closed."""
        return 1 if self.closed else 0

    def mode_mask(self) -> np.ndarray:
        """(routes, modes) bool: hold always; a dispatch mode when it exists now, a unit is free
        and every section of its pattern can be entered without a headway violation."""
        key = (self.now, self.closed, self.stock.free)
        if self._mask_cache is not None and self._mask_cache[:3] == key:
            return self._mask_cache[3]
        table = self.tables[self.state]
        ok = table.exists.copy()
        if self.stock.free < 1:
            ok[:] = False
        else:
            too_close = self.now + table.offsets < self.last_entry[table.sections] + self.compiled.headway[table.sections]
            if too_close.any():
                bad = np.bincount(table.cell[too_close], minlength=self.n_routes * N_MODES) > 0
                ok &= ~bad.reshape(self.n_routes, N_MODES)
        ok[:, HOLD] = True
        self._mask_cache = (*key, ok)
        return ok

    def step(self, modes: Sequence[int], consists: Sequence[int]) -> EpochResult:
        """Apply one decision per route now, then advance to the next epoch.

        ``modes[r]`` in ``range(N_MODES)``, ``consists[r]`` in ``(1, 2)`` units; anything else raises
        ``ValueError`` (a feasible-looking but impossible train would corrupt every KPI).
        """
        modes, consists = np.asarray(modes).tolist(), np.asarray(consists).tolist()
        ok = (isinstance(modes, list) and isinstance(consists, list) and len(modes) == len(consists) == self.n_routes
              and all(type(m) is int and 0 <= m < N_MODES for m in modes)
              and all(type(c) is int and c in (1, 2) for c in consists))
        if not ok:
            raise ValueError(f"modes {modes!r} and consists {consists!r} are invalid; allowed: {self.n_routes} integer "
                             f"modes in 0..{N_MODES - 1} ({', '.join(MODE_NAMES)}) and {self.n_routes} consists "
                             "in (1, 2) units")
        result = EpochResult()
        mask = self.mode_mask()
        patterns = self.compiled.patterns[self.state]
        for r, mode in enumerate(modes):
            if mode != HOLD:
                self._dispatch(r, mode, consists[r], patterns[r][mode], bool(mask[r, mode]), result)
        self.advance(self.now + self.epoch, result)
        return result

    def _dispatch(self, r: int, mode: int, consist: int, pattern, allowed: bool, result: EpochResult) -> None:
        t = self.now
        if pattern is None or consist > self.stock.free:
            self._invalid(r, mode, result)
            return
        entries = t + pattern.entry_offsets
        secs = pattern.sections
        previous = self.last_entry[secs]
        # The mask already vouches for an allowed mode unless this step dispatched before.
        violation = (not allowed or result.dispatched > 0) and bool(
            np.any(entries < previous + self.compiled.headway[secs])
        )
        if violation and allowed:  # conflict with a departure of this same step: hold
            self._invalid(r, mode, result)
            return
        self.stock.take(r, consist)
        capacity = consist * self.unit_capacity
        denied_before = self.passengers.denied
        boarded = self.passengers.board(r, pattern.served, capacity)
        self.last_entry[secs] = np.maximum(previous, entries)  # a pattern enters each section once
        self.last_departure[r] = t
        self._at(t + pattern.round_trip_min, lambda: self._unit_return(r, consist))
        self.trains_dispatched += 1
        self.load_factor_sum += boarded / capacity
        result.dispatched += 1
        result.boarded += boarded
        result.empty_places += capacity - boarded
        if violation:
            self.headway_violations += 1
            result.violations += 1
        self._mask_cache = None
        self.log.append((t, "dispatch", r, MODE_NAMES[mode], consist, boarded, capacity,
                         self.passengers.denied - denied_before, violation))

    def _invalid(self, r: int, mode: int, result: EpochResult) -> None:
        self.invalid_actions += 1
        result.invalid += 1
        self.log.append((self.now, "invalid_action_held", r, MODE_NAMES[mode], 0, 0, 0, 0, False))

    def advance(self, until: int, result: EpochResult | None = None) -> None:
        """Run SimPy and the passenger cohorts up to minute ``until`` (capped at the horizon)."""
        until = min(until, self.horizon)
        if until <= self.now:
            return
        pax = self.passengers
        lost_before = pax.reneged + pax.refused
        crowd_before = pax.overcrowd_person_min
        self._run_events(until)
        pax.advance(until)
        self.now = until
        if result is not None:
            result.lost += pax.reneged + pax.refused - lost_before
            result.overcrowd_person_min += pax.overcrowd_person_min - crowd_before

    def _run_events(self, until: float) -> None:
        """Process SimPy events up to and including ``until`` (so units back at ``until`` count then).

        Stepping by hand rather than ``sim.run(until)`` avoids creating a stop event per epoch.
        """
        sim = self.sim
        while sim.peek() <= until:
            sim.step()

    # -- status --------------------------------------------------------------------------------
    @property
    def at_horizon(self) -> bool:
        return self.now >= self.horizon

    def backlog_cleared(self, threshold: int) -> bool:
        """The line has reopened and at most ``threshold`` passengers are still waiting."""
        return self.reopened and self.passengers.waiting() <= threshold

    def kpis(self) -> dict[str, float]:
        pax, stock = self.passengers, self.stock
        # waits of everyone who left the platform: boarders until boarding, those who gave up their patience
        # (counting boarders only would score a policy that lets passengers give up as one with short waits)
        left_hist = pax.wait_hist
        n_left = int(left_hist.sum())
        waits = np.arange(len(left_hist))
        if n_left:
            mean_wait = float((waits * left_hist).sum() / n_left)
            p95_wait = float(waits[np.searchsorted(np.cumsum(left_hist), 0.95 * n_left)])
        else:
            mean_wait = p95_wait = 0.0
        hub = self.network.hub_station
        return {
            "demand_satisfaction": pax.boarded / pax.arrived if pax.arrived else 1.0,
            "fleet_share_used": stock.peak_in_service / stock.size,
            "overcrowding_person_min": float(pax.overcrowd_person_min),
            "peak_crowd_ratio": pax.peak_waiting / hub.crowd_threshold,
            "mean_wait_min": mean_wait,
            "p95_wait_min": p95_wait,
            "denied_boardings": float(pax.denied),
            "passengers_lost": float(pax.reneged + pax.refused),
            "headway_violations": float(self.headway_violations),
            "trains_dispatched": float(self.trains_dispatched),
            "mean_load_factor": self.load_factor_sum / self.trains_dispatched if self.trains_dispatched else 0.0,
            "passengers_arrived": float(pax.arrived),
            "passengers_boarded": float(pax.boarded),
            "passengers_waiting_end": float(pax.waiting()),
            "invalid_actions": float(self.invalid_actions),
            "closure_duration_min": float(min(self.closure_end, self.horizon) - self.closure_start),
        }
