"""Scenario configuration: network, disruption, fleet, demand and mobile-data model.

All times are minutes since the episode start (``Scenario.start_of_day_min`` is the clock time of
minute 0). The disruption closes ``closed_sections`` at ``start_min`` for an open-ended duration
drawn at reset from a lognormal distribution (median ``duration_median_min``, log-sd
``duration_sigma``) that the operator never sees.

:func:`default_scenario` is the embedded scenario; :func:`synthetic_network` builds networks of
any size for benchmarks; :class:`ScenarioFamily` draws scenario parameters for the ``train`` and
the held-out ``test`` families.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from simulators.checks import check_finite, check_ints
from simulators.railway.network import Network, Route, Section, Station, require


@dataclass(frozen=True)
class Disruption:
    closed_sections: tuple[tuple[str, str], ...]
    start_min: float = 30.0
    duration_median_min: float = 300.0
    duration_sigma: float = 0.5
    min_duration_min: float = 30.0

    def __post_init__(self) -> None:
        sections = self.closed_sections
        require(isinstance(sections, tuple) and all(isinstance(c, tuple) and len(c) == 2
                                                    and all(isinstance(name, str) for name in c) for c in sections),
                f"Disruption.closed_sections = {sections!r} is invalid; allowed: a tuple of (station, station) "
                "name tuples, e.g. (('N2', 'N3'),)")
        require(len(sections) >= 1, "Disruption.closed_sections: at least one section must close")
        check_finite(self, "start_min", "duration_median_min", "duration_sigma", "min_duration_min")
        require(self.start_min >= 0, f"Disruption.start_min must be >= 0, got {self.start_min}")
        require(self.duration_median_min > 0, f"Disruption.duration_median_min must be > 0, got {self.duration_median_min}")
        require(self.duration_sigma >= 0, f"Disruption.duration_sigma must be >= 0, got {self.duration_sigma}")
        require(self.min_duration_min > 0, f"Disruption.min_duration_min must be > 0, got {self.min_duration_min}")

    def sample_duration(self, rng: np.random.Generator) -> float:
        draw = self.duration_median_min * float(np.exp(self.duration_sigma * rng.standard_normal()))
        return max(self.min_duration_min, draw)


@dataclass(frozen=True)
class Fleet:
    """Rolling stock: identical units of ``unit_capacity`` persons (seats + standing)."""

    units_at_hub: int = 8
    units_stranded: int = 6  # beyond the closure from minute 0; back at the hub one run after reopening
    depot_units: int = 2
    depot_arrival_min: float = 90.0
    unit_capacity: int = 400

    def __post_init__(self) -> None:
        check_ints(self, "units_at_hub", "units_stranded", "depot_units", "unit_capacity")
        check_finite(self, "depot_arrival_min")
        for name in ("units_at_hub", "units_stranded", "depot_units"):
            require(getattr(self, name) >= 0, f"Fleet.{name} must be >= 0, got {getattr(self, name)}")
        require(self.units_at_hub + self.depot_units >= 1, "Fleet: at least one unit must be usable (hub or depot)")
        require(self.unit_capacity > 0, f"Fleet.unit_capacity must be > 0, got {self.unit_capacity}")
        require(self.depot_arrival_min >= 0, f"Fleet.depot_arrival_min must be >= 0, got {self.depot_arrival_min}")

    @property
    def size(self) -> int:
        return self.units_at_hub + self.units_stranded + self.depot_units


@dataclass(frozen=True)
class Demand:
    """Arrival rates at the hub: route base rate x destination weight x hourly profile x surge.

    While the line is closed, route ``r``'s rate is multiplied by ``1 + (surge_factor - 1) *
    surge_weights[r]`` (diverted passengers); after reopening the surge decays with time constant
    ``surge_decay_min``. ``rates`` (shape routes x destinations x minutes), when given, replaces
    the generated rates (e.g. from :func:`simulators.railway.demand.read_demand_csv`).
    """

    level: float = 1.0
    hourly_profile: tuple[float, ...] = (0.3, 0.3, 0.3, 0.3, 0.3, 0.6, 1.0, 1.6, 1.8, 1.2, 0.9, 0.9,
                                         1.0, 0.9, 0.9, 1.0, 1.4, 1.8, 1.6, 1.1, 0.8, 0.6, 0.5, 0.4)
    surge_factor: float = 2.5
    surge_weights: tuple[float, ...] = ()
    surge_decay_min: float = 45.0
    patience_min: int = 30
    rates: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_ints(self, "patience_min")
        check_finite(self, "level", "surge_factor", "surge_decay_min")
        require(bool(np.all(np.isfinite(self.hourly_profile))) and bool(np.all(np.isfinite(self.surge_weights))),
                "Demand.hourly_profile and Demand.surge_weights must be finite numbers")
        require(self.level >= 0, f"Demand.level must be >= 0, got {self.level}")
        require(len(self.hourly_profile) == 24, f"Demand.hourly_profile needs 24 values, got {len(self.hourly_profile)}")
        require(all(v >= 0 for v in self.hourly_profile), "Demand.hourly_profile values must be >= 0")
        require(self.surge_factor >= 1, f"Demand.surge_factor must be >= 1, got {self.surge_factor}")
        require(all(w >= 0 for w in self.surge_weights), "Demand.surge_weights must be >= 0")
        require(self.surge_decay_min > 0, f"Demand.surge_decay_min must be > 0, got {self.surge_decay_min}")
        require(1 <= self.patience_min <= 240, f"Demand.patience_min must be in [1, 240], got {self.patience_min}")
        if self.rates is not None:
            require(
                self.rates.ndim == 3 and bool(np.all(self.rates >= 0)) and bool(np.all(np.isfinite(self.rates))),
                "Demand.rates must be a 3-d array (routes, destinations, minutes) of finite rates >= 0",
            )


@dataclass(frozen=True)
class MobileData:
    """What the operator sees: phones counted at ``penetration``, scaled back, delayed, noisy."""

    penetration: float = 0.3
    delay_min: int = 5
    noise_cv: float = 0.1

    def __post_init__(self) -> None:
        check_ints(self, "delay_min")
        check_finite(self, "penetration", "noise_cv")
        require(0 < self.penetration <= 1, f"MobileData.penetration must be in (0, 1], got {self.penetration}")
        require(0 <= self.delay_min <= 60, f"MobileData.delay_min must be in [0, 60], got {self.delay_min}")
        require(0 <= self.noise_cv <= 2, f"MobileData.noise_cv must be in [0, 2], got {self.noise_cv}")

    @property
    def noise_sigma(self) -> float:
        """Log-sd of the multiplicative noise that has coefficient of variation ``noise_cv``."""
        return float(np.sqrt(np.log1p(self.noise_cv**2)))

    def max_factor(self) -> float:
        """Largest possible estimate per true person: ``exp(3 sigma) / penetration``."""
        return float(np.exp(3 * self.noise_sigma)) / self.penetration


@dataclass(frozen=True)
class Scenario:
    network: Network
    disruption: Disruption
    fleet: Fleet = Fleet()
    demand: Demand = Demand()
    mobile_data: MobileData = MobileData()
    horizon_min: int = 720
    start_of_day_min: int = 6 * 60
    name: str = "scenario"

    def __post_init__(self) -> None:
        check_ints(self, "horizon_min", "start_of_day_min")
        require(30 <= self.horizon_min <= 24 * 60, f"Scenario.horizon_min must be in [30, 1440], got {self.horizon_min}")
        require(0 <= self.start_of_day_min < 24 * 60, f"Scenario.start_of_day_min must be in [0, 1440), got {self.start_of_day_min}")
        require(
            self.disruption.start_min < self.horizon_min,
            f"Disruption.start_min={self.disruption.start_min} must be before the horizon {self.horizon_min}",
        )
        n_routes = len(self.network.routes)
        weights = self.demand.surge_weights
        require(
            len(weights) in (0, n_routes),
            f"Demand.surge_weights needs 0 or {n_routes} values (one per route), got {len(weights)}",
        )
        if self.demand.rates is not None:
            shape = (n_routes, self.network.max_dests, self.horizon_min + 1)
            require(self.demand.rates.shape == shape, f"Demand.rates must have shape {shape}, got {self.demand.rates.shape}")


def _timetable(first: float, headway: float, horizon: int) -> tuple[float, ...]:
    return tuple(float(t) for t in np.arange(first, horizon, headway))


def default_scenario() -> Scenario:
    """Hub ``H`` with four routes; the North line closes between N2 and N3 (flood).

    North can short-turn at N2 or detour via the East line and the E2-N4 link (slow, shares the
    East tracks); East and South receive diverted passengers; six units are stranded beyond the
    closure, so the hub starts with 8 of the 16 units (two more come from the depot).
    """
    horizon = 720
    stations = [Station("H", capacity=3000, crowd_threshold=1200)]
    stations += [Station(n) for n in ("N1", "N2", "N3", "N4", "N5", "E1", "E2", "E3", "E4", "S1", "S2", "S3", "W1", "W2")]
    sections = (
        Section("H", "N1", 4), Section("N1", "N2", 5), Section("N2", "N3", 5), Section("N3", "N4", 6),
        Section("N4", "N5", 5),
        Section("H", "E1", 5), Section("E1", "E2", 6), Section("E2", "E3", 6), Section("E3", "E4", 7),
        Section("E2", "N4", 18),
        Section("H", "S1", 4), Section("S1", "S2", 6), Section("S2", "S3", 8),
        Section("H", "W1", 5), Section("W1", "W2", 6),
    )
    routes = (
        Route("North", ("H", "N1", "N2", "N3", "N4", "N5"), _timetable(0, 10, horizon),
              (0.15, 0.2, 0.25, 0.2, 0.2), express=("N2", "N4"), base_demand_per_min=7.0),
        Route("East", ("H", "E1", "E2", "E3", "E4"), _timetable(2, 12, horizon),
              (0.25, 0.3, 0.25, 0.2), express=("E2",), base_demand_per_min=5.0),
        Route("South", ("H", "S1", "S2", "S3"), _timetable(5, 15, horizon),
              (0.3, 0.4, 0.3), express=("S2",), base_demand_per_min=4.0),
        Route("West", ("H", "W1", "W2"), _timetable(7, 20, horizon),
              (0.5, 0.5), base_demand_per_min=2.0, timetable_consist=1),
    )
    network = Network(hub="H", stations=tuple(stations), sections=sections, routes=routes)
    return Scenario(
        network=network,
        disruption=Disruption(closed_sections=(("N2", "N3"),), start_min=30.0, duration_median_min=300.0),
        fleet=Fleet(units_at_hub=8, units_stranded=6, depot_units=2, depot_arrival_min=90.0, unit_capacity=400),
        demand=Demand(surge_factor=2.5, surge_weights=(0.6, 1.0, 0.8, 0.3)),
        horizon_min=horizon,
        name="default",
    )


def synthetic_network(n_routes: int, stops_per_route: int = 5, headway_min: float = 10.0, horizon: int = 720) -> Network:
    """A star of ``n_routes`` lines from hub ``H``; route 0 has a link from route 1 for detours."""
    require(n_routes >= 2, f"synthetic_network needs n_routes >= 2, got {n_routes}")
    require(stops_per_route >= 4, f"synthetic_network needs stops_per_route >= 4, got {stops_per_route}")
    stations = [Station("H", capacity=600 * n_routes + 600, crowd_threshold=300 * n_routes)]
    sections, routes = [], []
    for r in range(n_routes):
        names = [f"R{r}S{i}" for i in range(1, stops_per_route + 1)]
        stations += [Station(n) for n in names]
        path = ["H", *names]
        sections += [Section(a, b, 4.0 + (i + r) % 3) for i, (a, b) in enumerate(zip(path, path[1:]))]
        weights = tuple(1.0 / stops_per_route for _ in names)
        routes.append(Route(f"R{r}", tuple(path), _timetable(r % headway_min, headway_min, horizon), weights,
                            express=tuple(names[1::2]), base_demand_per_min=4.0))
    sections.append(Section("R1S2", "R0S4", 12.0))
    return Network(hub="H", stations=tuple(stations), sections=tuple(sections), routes=tuple(routes))


def synthetic_scenario(n_routes: int, stops_per_route: int = 5) -> Scenario:
    """A scenario on :func:`synthetic_network` with a fleet that scales with the number of routes."""
    network = synthetic_network(n_routes, stops_per_route)
    return Scenario(
        network=network,
        disruption=Disruption(closed_sections=(("R0S2", "R0S3"),)),
        fleet=Fleet(units_at_hub=3 * n_routes, units_stranded=n_routes, depot_units=n_routes),
        demand=Demand(surge_weights=tuple(1.0 if r else 0.5 for r in range(n_routes))),
        name=f"synthetic-{n_routes}",
    )


# The families' ranges are stated for the default scenario (a fleet of 16 units, a 720-minute horizon). They scale
# with the base scenario's fleet size and horizon, and the demand level multiplies the base's, so a family draws
# scenarios around any base instead of imposing the default's fleet and closure times on it.
REFERENCE_FLEET = 16
REFERENCE_HORIZON_MIN = 720


@dataclass(frozen=True)
class ScenarioFamily:
    """Ranges scenario parameters are drawn from (uniform; integers inclusive), for the default scenario's
    fleet and horizon (``REFERENCE_FLEET``, ``REFERENCE_HORIZON_MIN``); :meth:`sample` scales them to its base."""

    name: str
    demand_level: tuple[float, float]
    surge_factor: tuple[float, float]
    start_min: tuple[float, float]
    duration_median_min: tuple[float, float]
    units_at_hub: tuple[int, int]
    units_stranded: tuple[int, int]

    def __post_init__(self) -> None:
        for name in ("demand_level", "surge_factor", "start_min", "duration_median_min", "units_at_hub", "units_stranded"):
            lo, hi = getattr(self, name)
            require(0 <= lo <= hi, f"ScenarioFamily.{name} must be a range (lo, hi) with 0 <= lo <= hi, got {(lo, hi)}")

    def sample(self, base: Scenario, rng: np.random.Generator) -> Scenario:
        """A scenario like ``base`` with this family's parameters drawn from ``rng``: closure start and median
        duration scaled by ``base.horizon_min / REFERENCE_HORIZON_MIN``, units by ``base.fleet.size /
        REFERENCE_FLEET`` (rounded, at least one at the hub), the demand level times ``base.demand.level``."""
        time_scale = base.horizon_min / REFERENCE_HORIZON_MIN
        fleet_scale = base.fleet.size / REFERENCE_FLEET
        disruption = replace(
            base.disruption,
            start_min=float(rng.uniform(*self.start_min)) * time_scale,
            duration_median_min=float(rng.uniform(*self.duration_median_min)) * time_scale,
        )
        at_hub = int(rng.integers(self.units_at_hub[0], self.units_at_hub[1] + 1))
        stranded = int(rng.integers(self.units_stranded[0], self.units_stranded[1] + 1))
        fleet = replace(
            base.fleet,
            units_at_hub=max(1, round(at_hub * fleet_scale)),
            units_stranded=round(stranded * fleet_scale),
        )
        demand = replace(
            base.demand,
            level=float(rng.uniform(*self.demand_level)) * base.demand.level,
            surge_factor=float(rng.uniform(*self.surge_factor)),
        )
        return replace(base, disruption=disruption, fleet=fleet, demand=demand, name=f"{base.name}/{self.name}")


# The held-out test family shifts every range: more demand, longer closures, fewer units.
FAMILIES: dict[str, ScenarioFamily] = {
    "train": ScenarioFamily("train", demand_level=(0.7, 1.2), surge_factor=(1.5, 3.0), start_min=(0, 60),
                            duration_median_min=(120, 360), units_at_hub=(7, 11), units_stranded=(3, 7)),
    "test": ScenarioFamily("test", demand_level=(1.0, 1.4), surge_factor=(2.0, 3.5), start_min=(20, 90),
                           duration_median_min=(240, 480), units_at_hub=(6, 9), units_stranded=(5, 8)),
}


def sample_scenario(family: str, seed: int, base: Scenario | None = None) -> Scenario:
    """Scenario number ``seed`` of ``family`` (``train`` or the held-out ``test``) around ``base``."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    return FAMILIES[family].sample(base or default_scenario(), np.random.default_rng(seed))
