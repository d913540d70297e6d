"""Build a railway scenario from a GTFS feed (a folder or a .zip) around one hub station.

Given the hub's stop name and a service date, the importer keeps the rail-like routes (GTFS
``route_type`` tram 0, subway 1, rail 2, monorail 12 and the extended 100-199, 400-499, 900-999
types, or the types you pass) whose trips on that date call at the hub and continue beyond it (with the
previous service day's trips that leave the hub past 24:00, i.e. after midnight of that date).
Trips are grouped into routes by ``(route_id, direction_id)``, then by the way they run (trips that call at
shared stations beyond the hub in the same order), so a feed without ``direction_id`` still gives each
direction its route, circle lines too; a branch of the same direction is folded into its longest pattern. A route's stops are the downstream
part of its longest stopping pattern, its express stops those of its shortest pattern (when that
is a sub-pattern), its timetable the hub departures inside the episode window (``frequencies.txt``
trips are expanded), and section running times the median over trips. Stations are parent stations,
else stop names (parent-less platforms of one station share its name); parent stations that share a
name stay apart as "Name (stop_id)". Demand comes from a profile scaled to the timetable or from a
demand CSV (see :mod:`simulators.railway.demand`).

Errors name what is wrong: a missing file or column, a hub stop that is not in the feed (with close
matches), a date without service (with the calendar's range), no trips through the hub, a window
without departures (with the day's span), a value that is not an integer (with its file line), a
stop or route a trip names that the feed does not define, a headway that is not positive.
"""

from __future__ import annotations

import difflib
import io
import zipfile
from collections import Counter
from collections.abc import Collection
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from simulators.railway.demand import parse_clock, read_demand_csv, read_string_table
from simulators.railway.network import ALL_STOPS, Network, Route, Section, Station, compile_network
from simulators.railway.scenario import Demand, Disruption, Fleet, Scenario

RAIL_ROUTE_TYPES = frozenset({0, 1, 2, 12, *range(100, 200), *range(400, 500), *range(900, 1000)})
REQUIRED = ("stops", "routes", "trips", "stop_times")
OPTIONAL = ("calendar", "calendar_dates", "frequencies")
DAY_MIN = 1440.0  # minutes in a service day
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
COLUMNS = {  # the columns the importer reads, per file
    "stops": ("stop_id", "stop_name"),
    "routes": ("route_id", "route_type"),
    "trips": ("route_id", "service_id", "trip_id"),
    "stop_times": ("trip_id", "arrival_time", "departure_time", "stop_id", "stop_sequence"),
    "calendar": ("service_id", *WEEKDAYS, "start_date", "end_date"),
    "calendar_dates": ("service_id", "date", "exception_type"),
    "frequencies": ("trip_id", "start_time", "end_time", "headway_secs"),
}


def read_feed(feed: Path | str) -> dict[str, pd.DataFrame]:
    """The feed's tables (all columns as strings) from a folder or a .zip (files may sit in a subfolder)."""
    feed = Path(feed)
    if not feed.exists():
        raise ValueError(f"GTFS feed {feed} does not exist (give a folder or a .zip)")
    raw: dict[str, bytes | Path] = {}
    if feed.is_dir():
        for name in (*REQUIRED, *OPTIONAL):
            if (feed / f"{name}.txt").is_file():
                raw[name] = feed / f"{name}.txt"
    elif zipfile.is_zipfile(feed):
        with zipfile.ZipFile(feed) as archive:
            for member in archive.namelist():
                name = Path(member).name.removesuffix(".txt")
                if member.endswith(".txt") and name in (*REQUIRED, *OPTIONAL) and name not in raw:
                    raw[name] = archive.read(member)
    else:
        raise ValueError(f"GTFS feed {feed} is neither a folder nor a .zip file")
    missing = [f"{n}.txt" for n in REQUIRED if n not in raw]
    if missing:
        raise ValueError(f"GTFS feed {feed} lacks {', '.join(missing)}")
    if "calendar" not in raw and "calendar_dates" not in raw:
        raise ValueError(f"GTFS feed {feed} has neither calendar.txt nor calendar_dates.txt")
    tables = {}
    for name, source in raw.items():
        handle = io.BytesIO(source) if isinstance(source, bytes) else source
        table = read_string_table(handle, encoding="utf-8-sig")
        tables[name] = table.rename(columns=lambda c: c.strip())
        missing = [c for c in COLUMNS[name] if c not in tables[name].columns]
        if missing:
            raise ValueError(f"GTFS feed {feed}: {name}.txt lacks the columns {missing}")
    return tables


def _ints(table: pd.DataFrame, name: str, column: str) -> pd.Series:
    """Column ``column`` of ``name``.txt as ints; a value that is not an integer raises naming its row."""
    values = pd.to_numeric(table[column].str.strip(), errors="coerce")
    bad = (values.isna() | (values != values.round())).to_numpy()
    if bad.any():  # the line from the row's label: the table may be a filtered view of the file
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}.txt line {table.index[row] + 2}: {column} {table[column].iloc[row]!r} is not an integer")
    return values.astype(int)


def _parse_date(value: date | str) -> date:
    if isinstance(value, date):
        return value
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(str(value), fmt).date()
        except ValueError:
            continue
    raise ValueError(f"service date {value!r} is not YYYYMMDD or YYYY-MM-DD")


def active_services(tables: dict[str, pd.DataFrame], day: date) -> set[str]:
    """Service ids running on ``day`` (calendar.txt plus calendar_dates.txt exceptions); may be empty."""
    stamp = day.strftime("%Y%m%d")
    services: set[str] = set()
    cal = tables.get("calendar")
    if cal is not None and len(cal):
        runs = (cal["start_date"] <= stamp) & (cal["end_date"] >= stamp) & (cal[WEEKDAYS[day.weekday()]] == "1")
        services |= set(cal.loc[runs, "service_id"])
    dates = tables.get("calendar_dates")
    if dates is not None and len(dates):
        today = dates[dates["date"] == stamp]
        services |= set(today.loc[today["exception_type"] == "1", "service_id"])
        services -= set(today.loc[today["exception_type"] == "2", "service_id"])
    return services


def _calendar_span(tables: dict[str, pd.DataFrame]) -> str:
    """The dates calendar.txt and calendar_dates.txt cover, for errors."""
    dates = [d for name, columns in (("calendar", ("start_date", "end_date")), ("calendar_dates", ("date",)))
             if tables.get(name) is not None and len(tables[name]) for c in columns for d in tables[name][c]]
    return f"{min(dates)} to {max(dates)}" if dates else "no dates at all"


def _station_names(stops: pd.DataFrame) -> dict[str, str]:
    """stop_id -> station name. A stop belongs to the top of its parent chain (a platform to its station, a
    boarding area through its platform), a parent station to itself, and a stop with neither joins the
    stops of its name (a station's parent-less platforms, as in Caltrain's feed). Stations that share a
    name are distinct (two "86 St"): each gets its stop_id appended, ``"Park St (PX)"``."""
    name = dict(zip(stops["stop_id"], stops["stop_name"].str.strip()))
    parent = dict(zip(stops["stop_id"], stops.get("parent_station", pd.Series([""] * len(stops)))))
    parents = set(parent.values()) - {""}

    def top(sid: str) -> str:
        seen = {sid}
        while parent.get(sid) and parent[sid] not in seen:  # a parent missing from stops.txt ends the chain
            sid = parent[sid]
            seen.add(sid)
        return sid

    station = {sid: top(sid) if parent[sid] or sid in parents else "" for sid in stops["stop_id"]}  # "": by name
    station_name: dict[str, str] = {}
    for sid, key in station.items():
        if key:
            station_name.setdefault(key, name.get(key, name[sid]))  # a missing parent: its platform's name
    shared = Counter(station_name.values())
    return {sid: name[sid] if not key else station_name[key] + (f" ({key})" if shared[station_name[key]] > 1 else "")
            for sid, key in station.items()}


def _hub_name(station_names: Collection[str], hub: str) -> str:
    names = sorted(set(station_names))
    for name in names:
        if name.lower() == hub.strip().lower():
            return name
    same = [n for n in names if n.lower().startswith(hub.strip().lower() + " (")]
    if len(same) > 1:
        raise ValueError(f"hub stop {hub!r} names {len(same)} stations: {', '.join(map(repr, same))}; pass one of them")
    close = difflib.get_close_matches(hub, names, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"hub stop {hub!r} is not a stop name of the feed{hint}")


def _expand_frequencies(trip_first: dict[str, float], tables: dict[str, pd.DataFrame]) -> dict[str, list[float]]:
    """trip_id -> start offsets (minutes, added to the trip's stop times) of each run. ``trip_first`` holds
    each trip's departure from its first stop, the time ``frequencies.txt``'s ``start_time`` refers to."""
    runs = {trip: [0.0] for trip in trip_first}
    freq = tables.get("frequencies")
    if freq is None or not len(freq):
        return runs
    freq = freq.assign(headway=_ints(freq, "frequencies", "headway_secs"))
    if (freq["headway"] <= 0).any():
        bad = freq.loc[freq["headway"] <= 0].iloc[0]
        raise ValueError(f"frequencies.txt: trip {bad['trip_id']!r} has headway_secs {bad['headway_secs']!r}; allowed: > 0")
    for trip, group in freq.groupby("trip_id"):
        if trip not in trip_first:
            continue
        if np.isnan(trip_first[trip]):
            raise ValueError(f"stop_times.txt: frequency-based trip {trip!r} has no time at its first stop")
        starts = []
        for row in group.itertuples():
            begin, end, step = parse_clock(row.start_time), parse_clock(row.end_time), row.headway / 60.0
            starts += list(np.arange(begin, end, step) - trip_first[trip])
        runs[trip] = starts
    return runs


def _same_way(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Two stopping patterns (stations from the hub on) run the same way: they share a station beyond the hub
    and call at the shared ones in the same order (a circle line's two directions share them reversed)."""
    shared = set(a[1:]) & set(b[1:])
    return bool(shared) and [s for s in a if s in shared] == [s for s in b if s in shared]


def _directions(runs: list) -> list[list]:
    """One (route, direction)'s runs split by the way they run (:func:`_same_way` with a pattern of the group).
    Without ``direction_id`` both directions share one key and split here; with it, a key's runs stay one group."""
    group_of: dict[tuple[str, ...], int] = {}  # stopping pattern -> group (patterns are few, runs many)
    patterns: list[list[tuple[str, ...]]] = []
    groups: list[list] = []
    for run in runs:
        pattern = run[0]
        if pattern not in group_of:
            g = next((g for g, known in enumerate(patterns) if any(_same_way(pattern, q) for q in known)), len(groups))
            if g == len(groups):
                patterns.append([])
                groups.append([])
            patterns[g].append(pattern)
            group_of[pattern] = g
        groups[group_of[pattern]].append(run)
    return groups


def load_gtfs_scenario(
    feed: Path | str,
    hub_stop_name: str,
    service_date: date | str,
    *,
    start_time: str = "06:00",
    horizon_min: int = 720,
    route_types: Collection[int] | None = None,
    closed_section: tuple[str, str] | None = None,
    fleet: Fleet | None = None,
    demand: Demand | None = None,
    demand_csv: Path | str | None = None,
    passengers_per_departure: float = 150.0,
    hub_capacity: int = 4000,
    hub_crowd_threshold: int = 1500,
    headway_min: float = 3.0,
    turnaround_min: float = 6.0,
) -> Scenario:
    """A :class:`Scenario` from a GTFS feed around ``hub_stop_name`` on ``service_date``.

    ``closed_section`` defaults to the third section of the busiest route (the second when it has
    only three stops, the first when it has two) so that short-turns are possible; ``fleet``
    defaults to half the units the timetable needs at the hub, 30% stranded, the rest at the depot.
    """
    tables = read_feed(feed)
    day = _parse_date(service_date)
    services = active_services(tables, day)
    earlier = active_services(tables, day - timedelta(days=1))  # its trips past 24:00 run after midnight
    stops = tables["stops"]
    station_of = _station_names(stops)
    hub = _hub_name(station_of.values(), hub_stop_name)
    types = RAIL_ROUTE_TYPES if route_types is None else frozenset(route_types)
    routes = tables["routes"]
    trips = tables["trips"]
    unknown_routes = sorted(set(trips["route_id"]) - set(routes["route_id"]))
    if unknown_routes:
        raise ValueError(f"trips.txt names route_id {unknown_routes[:5]} that routes.txt does not define")
    routes = routes[_ints(routes, "routes", "route_type").isin(types)]
    trips = trips[trips["service_id"].isin(services | earlier) & trips["route_id"].isin(routes["route_id"])]
    service_of = dict(zip(trips["trip_id"], trips["service_id"]))
    if "direction_id" not in trips.columns:
        trips = trips.assign(direction_id="0")
    start_of_day = int(parse_clock(start_time))

    st = tables["stop_times"]
    st = st[st["trip_id"].isin(trips["trip_id"])].copy()
    st["seq"] = _ints(st, "stop_times", "stop_sequence")
    st["station"] = st["stop_id"].map(station_of)
    if st["station"].isna().any():
        bad = st.loc[st["station"].isna()].iloc[0]
        raise ValueError(f"stop_times.txt: trip {bad['trip_id']!r} calls at stop_id {bad['stop_id']!r}, "
                         "which stops.txt does not define")
    st["arr"] = st["arrival_time"].where(st["arrival_time"] != "", st["departure_time"]).map(_clock_or_nan)
    st["dep"] = st["departure_time"].where(st["departure_time"] != "", st["arrival_time"]).map(_clock_or_nan)
    st = st.sort_values(["trip_id", "seq"])

    route_key = dict(zip(trips["trip_id"], zip(trips["route_id"], trips["direction_id"])))
    passing: list[tuple[tuple[str, ...], list[float], list[float], str]] = []
    trip_first: dict[str, float] = {}
    for trip, group in st.groupby("trip_id", sort=False):
        stations = group["station"].tolist()
        if hub not in stations[:-1]:
            continue
        i = stations.index(hub)
        down = tuple(stations[i:])
        if len(set(down)) != len(down) or np.isnan(group["dep"].iloc[i]):
            continue
        trip_first[trip] = group["dep"].iloc[0]
        passing.append((down, group["arr"].tolist()[i:], group["dep"].tolist()[i:], trip))
    offsets = _expand_frequencies(trip_first, tables)
    patterns: dict[tuple[str, str], list[tuple[tuple[str, ...], list[float], list[float], str]]] = {}
    for run in passing:
        trip = run[3]
        if service_of[trip] not in services and all(run[2][0] + off < DAY_MIN for off in offsets[trip]):
            continue  # a previous-day trip whose runs all left the hub before midnight
        patterns.setdefault(route_key[trip], []).append(run)
    if not patterns and not services:
        raise ValueError(f"no service runs on {day:%Y%m%d} in this feed; its calendar covers {_calendar_span(tables)}")
    if not patterns:
        raise ValueError(
            f"no trips of route types {sorted(types)[:6]}... call at hub {hub!r} and continue beyond it on {day:%Y%m%d}"
        )

    # a trip of both days runs twice: today, and yesterday's run shifted back by a day
    shifts = {trip: [0.0] * (service_of[trip] in services) + [-DAY_MIN] * (service_of[trip] in earlier)
              for trip in trip_first}
    all_departures: list[float] = []
    route_names = dict(zip(routes["route_id"], routes.get("route_short_name", routes["route_id"])))
    long_names = dict(zip(routes["route_id"], routes.get("route_long_name", routes["route_id"])))
    run_samples: dict[frozenset[str], list[float]] = {}
    built: list[Route] = []
    for (route_id, _), runs in [(key, group) for key, runs in sorted(patterns.items()) for group in _directions(runs)]:
        counts = Counter(p[0] for p in runs)
        base = max(counts, key=lambda s: (len(s), counts[s]))
        shortest = min(counts, key=lambda s: (len(s), -counts[s]))
        express = tuple(s for s in shortest[1:] if s in base) if set(shortest) < set(base) else ()
        times = [p[2][0] + off + shift - start_of_day for p in runs for off in offsets[p[3]] for shift in shifts[p[3]]]
        departures = sorted(float(t) for t in times if 0 <= t <= horizon_min)
        all_departures += [t for t in times if t + start_of_day >= 0]  # yesterday's before midnight: not today's
        for stations, arr, dep, _ in runs:
            for a, b, t_dep, t_arr in zip(stations, stations[1:], dep, arr[1:]):
                if not (np.isnan(t_dep) or np.isnan(t_arr)):
                    run_samples.setdefault(frozenset((a, b)), []).append(t_arr - t_dep)
        name = (route_names.get(route_id) or long_names.get(route_id) or route_id).strip()
        built.append(Route(
            name=f"{name} > {base[-1]}",
            stops=base,
            departures=tuple(departures),
            dest_weights=tuple(1.0 for _ in base[1:]),
            express=express if express and set(express) != set(base[1:]) else (),
            base_demand_per_min=passengers_per_departure * len(departures) / horizon_min,
            turnaround_min=turnaround_min,
        ))
    if not any(route.departures for route in built):
        span = (f"; its departures that day run from {_clock(min(all_departures) + start_of_day)} to "
                f"{_clock(max(all_departures) + start_of_day)}" if all_departures else "")
        raise ValueError(f"no train leaves hub {hub!r} between {start_time} and {horizon_min} min later on "
                         f"{day:%Y%m%d}{span}")
    built = _unique_names(built)
    sections, seen = [], set()
    for route in built:
        for a, b in zip(route.stops, route.stops[1:]):
            key = frozenset((a, b))
            if key not in seen:
                seen.add(key)
                samples = run_samples.get(key, [])
                sections.append(Section(a, b, max(0.5, float(np.median(samples))) if samples else 2.0, headway_min))
    names = sorted({s for r in built for s in r.stops} - {hub})
    stations = (Station(hub, capacity=hub_capacity, crowd_threshold=hub_crowd_threshold), *(Station(n) for n in names))
    network = Network(hub=hub, stations=stations, sections=tuple(sections), routes=tuple(built))

    busiest = max(built, key=lambda r: len(r.departures))
    if closed_section is None:
        k = min(2, len(busiest.stops) - 2)
        closed_section = (busiest.stops[k], busiest.stops[k + 1])
    if fleet is None:
        fleet = _default_fleet(network)
    scenario = Scenario(
        network=network,
        disruption=Disruption(closed_sections=(tuple(closed_section),), start_min=min(30.0, horizon_min / 4)),
        fleet=fleet,
        demand=demand or Demand(),
        horizon_min=horizon_min,
        start_of_day_min=start_of_day,
        name=f"gtfs:{Path(feed).name}@{hub}",
    )
    if demand_csv is not None:
        rates = read_demand_csv(demand_csv, network, start_of_day, horizon_min)
        scenario = replace(scenario, demand=replace(scenario.demand, rates=rates))
    return scenario


def _clock(minutes: float) -> str:
    """``HH:MM`` of minutes since midnight (past 24:00 for the next day, as GTFS writes it)."""
    return f"{int(minutes) // 60:02d}:{int(minutes) % 60:02d}"


def _clock_or_nan(value: str) -> float:
    return parse_clock(value) if value.strip() else float("nan")


def _unique_names(routes: list[Route]) -> list[Route]:
    counts = Counter(r.name for r in routes)
    seen: Counter[str] = Counter()
    out = []
    for r in routes:
        if counts[r.name] > 1:
            seen[r.name] += 1
            r = replace(r, name=f"{r.name} #{seen[r.name]}")
        out.append(r)
    return out


def _default_fleet(network: Network) -> Fleet:
    compiled = compile_network(network, ())
    needed = 0
    for r, route in enumerate(network.routes):
        deps = np.asarray(route.departures)
        if deps.size >= 2:
            headway = float(np.median(np.diff(deps)))
            cycle = compiled.patterns[0][r][ALL_STOPS].round_trip_min
            needed += route.timetable_consist * int(np.ceil(cycle / max(headway, 1.0)))
        elif deps.size == 1:
            needed += route.timetable_consist
    needed = max(needed, 2)
    at_hub = max(1, needed // 2)
    stranded = int(round(0.3 * needed))
    return Fleet(units_at_hub=at_hub, units_stranded=stranded, depot_units=max(0, needed - at_hub - stranded))
