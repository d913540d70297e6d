"""Railway network: stations, track sections, routes through a hub, and the service patterns.

The network is an undirected networkx graph whose nodes are stations and whose edges are track
sections (running time and minimum headway, in minutes). Every route starts at the hub and runs
outbound through its stops to its terminus. A train leaving the hub runs one *pattern*:

- ``ALL_STOPS``: the route's path, stopping everywhere (dwell at every stop);
- ``SKIP_STOP``: the same path, stopping only at the route's express stops and terminus;
- ``SHORT_TURN``: while the route is blocked, up to the last stop before the first closed
  section, where it turns back;
- ``DETOUR``: while the route is blocked, the fastest path to the route's terminus on the graph
  without the closed sections (networkx, computed once per closure change), stopping only at the
  route's own stops on that path.

A pattern is compiled once into arrays (sections, section-entry offsets, served destinations,
round-trip time) so that dispatching and headway checks are numpy operations, never graph searches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import networkx as nx
import numpy as np

from simulators.checks import check_finite, check_ints

HOLD, ALL_STOPS, SKIP_STOP, SHORT_TURN, DETOUR = range(5)
MODE_NAMES = ("hold", "all_stops", "skip_stop", "short_turn", "detour")
N_MODES = len(MODE_NAMES)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class Station:
    """A station; ``capacity`` and ``crowd_threshold`` (persons) matter at the hub."""

    name: str
    capacity: int = 4000
    crowd_threshold: int = 1500

    def __post_init__(self) -> None:
        require(bool(self.name), "Station.name must be a non-empty string")
        check_ints(self, "capacity", "crowd_threshold")
        require(self.capacity > 0, f"Station.capacity must be > 0 persons, got {self.capacity}")
        require(
            0 < self.crowd_threshold <= self.capacity,
            f"Station.crowd_threshold must be in (0, capacity={self.capacity}], got {self.crowd_threshold}",
        )


@dataclass(frozen=True)
class Section:
    """A track section between two stations, used in both directions."""

    u: str
    v: str
    run_min: float
    headway_min: float = 3.0

    def __post_init__(self) -> None:
        require(self.u != self.v, f"Section endpoints must differ, got {self.u!r} twice")
        check_finite(self, "run_min", "headway_min")
        require(self.run_min > 0, f"Section {self.u}-{self.v}: run_min must be > 0, got {self.run_min}")
        require(
            self.headway_min >= 0, f"Section {self.u}-{self.v}: headway_min must be >= 0, got {self.headway_min}"
        )


@dataclass(frozen=True)
class Route:
    """A service from the hub (``stops[0]``) to its terminus (``stops[-1]``).

    ``departures`` are the original timetable's hub departures in minutes since the episode start;
    ``dest_weights`` split the route's demand over ``stops[1:]``; ``express`` lists the stops a
    skip-stop train serves (the terminus is always served).
    """

    name: str
    stops: tuple[str, ...]
    departures: tuple[float, ...]
    dest_weights: tuple[float, ...]
    express: tuple[str, ...] = ()
    base_demand_per_min: float = 5.0
    timetable_consist: int = 2
    turnaround_min: float = 6.0

    def __post_init__(self) -> None:
        require(len(self.stops) >= 2, f"Route {self.name!r}: needs the hub and >= 1 stop, got {self.stops}")
        check_finite(self, "base_demand_per_min", "turnaround_min")
        require(bool(np.all(np.isfinite(self.departures))) and bool(np.all(np.isfinite(self.dest_weights))),
                f"Route {self.name!r}: departures and dest_weights must be finite numbers")
        require(len(set(self.stops)) == len(self.stops), f"Route {self.name!r}: repeated stop in {self.stops}")
        require(
            len(self.dest_weights) == len(self.stops) - 1,
            f"Route {self.name!r}: dest_weights needs {len(self.stops) - 1} values (one per stop after the hub), "
            f"got {len(self.dest_weights)}",
        )
        require(
            all(w >= 0 for w in self.dest_weights) and sum(self.dest_weights) > 0,
            f"Route {self.name!r}: dest_weights must be >= 0 with a positive sum, got {self.dest_weights}",
        )
        unknown = set(self.express) - set(self.stops[1:])
        require(not unknown, f"Route {self.name!r}: express stops {sorted(unknown)} are not stops of the route")
        require(self.base_demand_per_min >= 0, f"Route {self.name!r}: base_demand_per_min must be >= 0")
        require(self.timetable_consist in (1, 2), f"Route {self.name!r}: timetable_consist must be 1 or 2")
        require(self.turnaround_min >= 0, f"Route {self.name!r}: turnaround_min must be >= 0")
        require(
            list(self.departures) == sorted(self.departures),
            f"Route {self.name!r}: departures must be sorted ascending",
        )


@dataclass(frozen=True)
class Network:
    """Stations, sections and routes; ``hub`` is where passengers board and decisions are made."""

    hub: str
    stations: tuple[Station, ...]
    sections: tuple[Section, ...]
    routes: tuple[Route, ...]
    dwell_min: float = 1.0

    def __post_init__(self) -> None:
        names = [s.name for s in self.stations]
        require(len(set(names)) == len(names), "Network.stations: station names must be unique")
        require(self.hub in names, f"Network.hub {self.hub!r} is not a station; stations: {names[:10]}...")
        require(len(self.routes) >= 1, "Network.routes: at least one route is required")
        check_finite(self, "dwell_min")
        require(self.dwell_min >= 0, f"Network.dwell_min must be >= 0, got {self.dwell_min}")
        known = set(names)
        for sec in self.sections:
            require(
                sec.u in known and sec.v in known, f"Section {sec.u}-{sec.v} joins an unknown station"
            )
        edges = {frozenset((s.u, s.v)) for s in self.sections}
        require(len(edges) == len(self.sections), "Network.sections: duplicate section between two stations")
        for route in self.routes:
            require(route.stops[0] == self.hub, f"Route {route.name!r} must start at the hub {self.hub!r}")
            for a, b in zip(route.stops, route.stops[1:]):
                require(
                    frozenset((a, b)) in edges, f"Route {route.name!r}: no section between {a!r} and {b!r}"
                )

    @property
    def hub_station(self) -> Station:
        return next(s for s in self.stations if s.name == self.hub)

    @property
    def max_dests(self) -> int:
        return max(len(r.stops) - 1 for r in self.routes)

    def graph(self, closed: frozenset[frozenset[str]] = frozenset()) -> nx.Graph:
        """The track graph, without the ``closed`` sections (each a frozenset of its two stations)."""
        g = nx.Graph()
        g.add_nodes_from(s.name for s in self.stations)
        for sec in self.sections:
            if frozenset((sec.u, sec.v)) not in closed:
                g.add_edge(sec.u, sec.v, run_min=sec.run_min)
        return g


@dataclass(frozen=True)
class Pattern:
    """A compiled train pattern: what a departure of one route in one mode does."""

    sections: np.ndarray  # directed section indices, in travel order
    entry_offsets: np.ndarray  # minutes after the hub departure at which each section is entered
    served: np.ndarray | slice  # the route's destinations (stops[1:]) this train serves; a slice when contiguous
    round_trip_min: float  # until the unit(s) are back at the hub and available again
    one_way_min: float


@dataclass(frozen=True)
class CompiledNetwork:
    """Index tables of a network; ``patterns[state][route][mode]`` is a Pattern or None.

    ``state`` 0 is the normal state and 1 the state with the disruption's sections closed.
    """

    network: Network
    section_index: dict[tuple[str, str], int]
    headway: np.ndarray
    patterns: tuple[tuple[tuple[Pattern | None, ...], ...], ...]
    blocked: tuple[np.ndarray, np.ndarray]  # per state: route path crosses a closed section
    detour_extra_min: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _compile_path(
    net: Network, route: Route, path: list[str], served_stops: set[str], section_index: dict[tuple[str, str], int]
) -> Pattern:
    run = {frozenset((s.u, s.v)): s.run_min for s in net.sections}
    secs, offsets = [], []
    t = 0.0
    for a, b in zip(path, path[1:]):
        secs.append(section_index[(a, b)])
        offsets.append(t)
        t += run[frozenset((a, b))]
        if b in served_stops and b != path[-1]:
            t += net.dwell_min
    dests = route.stops[1:]
    idx = [i for i, s in enumerate(dests) if s in served_stops]
    # A slice indexes a view, much cheaper than fancy indexing when boarding.
    contiguous = bool(idx) and idx == list(range(idx[0], idx[-1] + 1))
    served = slice(idx[0], idx[-1] + 1) if contiguous else np.array(idx, dtype=np.int64)
    return Pattern(
        sections=np.array(secs, dtype=np.int64),
        entry_offsets=np.array(offsets, dtype=np.float64),
        served=served,
        round_trip_min=2.0 * t + route.turnaround_min,
        one_way_min=t,
    )


@lru_cache(maxsize=64)
def compile_network(net: Network, closed_sections: tuple[tuple[str, str], ...]) -> CompiledNetwork:
    """Compile the patterns of every route in the normal and in the closed state (cached)."""
    section_index: dict[tuple[str, str], int] = {}
    headway = []
    for sec in net.sections:
        for a, b in ((sec.u, sec.v), (sec.v, sec.u)):
            section_index[(a, b)] = len(headway)
            headway.append(sec.headway_min)
    closed = frozenset(frozenset(c) for c in closed_sections)
    edges = {frozenset((s.u, s.v)) for s in net.sections}
    for c in closed:
        require(c in edges, f"closed section {tuple(sorted(c))} is not a section of the network")
    open_graph = net.graph(closed)
    patterns_by_state = []
    blocked_by_state = []
    detour_extra = np.zeros(len(net.routes))
    for state in (0, 1):
        route_patterns = []
        blocked = np.zeros(len(net.routes), dtype=bool)
        for r, route in enumerate(net.routes):
            modes: list[Pattern | None] = [None] * N_MODES
            path = list(route.stops)
            legs = [frozenset(p) for p in zip(path, path[1:])]
            is_blocked = state == 1 and any(leg in closed for leg in legs)
            blocked[r] = is_blocked
            express = set(route.express) | {route.stops[-1]}
            if not is_blocked:
                modes[ALL_STOPS] = _compile_path(net, route, path, set(path[1:]), section_index)
                if express != set(path[1:]):
                    modes[SKIP_STOP] = _compile_path(net, route, path, express, section_index)
            else:
                first_closed = next(i for i, leg in enumerate(legs) if leg in closed)
                if first_closed >= 1:  # at least one stop beyond the hub before the closure
                    short = path[: first_closed + 1]
                    modes[SHORT_TURN] = _compile_path(net, route, short, set(short[1:]), section_index)
                if nx.has_path(open_graph, net.hub, route.stops[-1]):
                    detour = nx.shortest_path(open_graph, net.hub, route.stops[-1], weight="run_min")
                    on_path = set(detour[1:]) & set(route.stops[1:])
                    modes[DETOUR] = _compile_path(net, route, detour, on_path, section_index)
                    detour_extra[r] = modes[DETOUR].one_way_min - _compile_path(
                        net, route, path, set(path[1:]), section_index
                    ).one_way_min
            route_patterns.append(tuple(modes))
        patterns_by_state.append(tuple(route_patterns))
        blocked_by_state.append(blocked)
    return CompiledNetwork(
        network=net,
        section_index=section_index,
        headway=np.array(headway, dtype=np.float64),
        patterns=tuple(patterns_by_state),
        blocked=(blocked_by_state[0], blocked_by_state[1]),
        detour_extra_min=detour_extra,
    )
