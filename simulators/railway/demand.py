"""Demand from a CSV the user supplies, as arrival rates per route, destination and minute.

Columns (header required):

- ``time``: when the passengers arrive at the hub: a clock time ``HH:MM`` / ``HH:MM:SS`` of the
  service day, or an integer number of minutes since the episode start;
- ``count``: expected number of passengers (>= 0) arriving in that minute (or interval);
- ``route`` (route name) and/or ``destination`` (station name); at least one of the two. With
  only a destination, the count is split equally over the routes that serve it; with only a
  route, over the route's destinations by its ``dest_weights``;
- ``duration_min`` (optional, default 1): the count is spread uniformly over that many minutes.

Rows must fall inside the episode's window; a row that does not, an unknown route or station, a
row with neither, a count that is negative or not finite, or a duration that is not a whole number
raises ``ValueError`` naming the row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from simulators.railway.network import Network


def parse_clock(value: str) -> float:
    """``HH:MM`` or ``HH:MM:SS`` (hours may exceed 23, as in GTFS) to minutes since midnight."""
    parts = str(value).strip().split(":")
    if len(parts) not in (2, 3) or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"time {value!r} is not HH:MM or HH:MM:SS")
    h, m = int(parts[0]), int(parts[1])
    s = int(parts[2]) if len(parts) == 3 else 0
    return h * 60 + m + s / 60.0


def read_string_table(source, encoding: str = "utf-8") -> pd.DataFrame:
    """A CSV (path or file object) with every value a string, blank rows dropped; a row's index label + 2 is
    its line in the file (line 1 is the header), so errors can name the line even after blank lines."""
    table = pd.read_csv(source, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding=encoding)
    # a blank line, or one of spaces only (its spaces land in the first column)
    blank = (table.iloc[:, 1:] == "").all(axis=1) & (table.iloc[:, 0].str.strip() == "")
    return table[~blank]


def read_demand_csv(path: Path | str, network: Network, start_of_day_min: int, horizon_min: int) -> np.ndarray:
    """Rates of shape ``(routes, max destinations, horizon_min + 1)`` from the CSV at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"demand CSV {path} does not exist")
    table = read_string_table(path)
    columns = set(table.columns)
    if not {"time", "count"} <= columns or not columns & {"route", "destination"}:
        raise ValueError(f"demand CSV {path} needs columns time, count and route and/or destination; got {sorted(columns)}")
    routes = {r.name: i for i, r in enumerate(network.routes)}
    serving: dict[str, list[tuple[int, int]]] = {}
    for i, route in enumerate(network.routes):
        for d, stop in enumerate(route.stops[1:]):
            serving.setdefault(stop, []).append((i, d))
    rates = np.zeros((len(network.routes), network.max_dests, horizon_min + 1))
    for label, row in zip(table.index, table.to_dict("records")):
        where = f"{path}:{label + 2}"
        raw_time = row["time"].strip()
        try:
            start = float(raw_time) if raw_time.lstrip("-").isdigit() else parse_clock(raw_time) - start_of_day_min
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        raw_duration = (row.get("duration_min") or "1").strip()
        if not raw_duration.isdigit():
            raise ValueError(f"{where}: duration_min {raw_duration!r} is not a whole number of minutes")
        duration = int(raw_duration)
        try:
            count = float(row["count"])
        except ValueError:
            raise ValueError(f"{where}: count {row['count']!r} is not a number") from None
        if not np.isfinite(count) or count < 0 or duration < 1:
            raise ValueError(f"{where}: count must be a finite number >= 0 and duration_min >= 1, got {count} and {duration}")
        first = int(np.floor(start))
        if first < 0 or first + duration - 1 > horizon_min:
            raise ValueError(
                f"{where}: time {raw_time!r} (+{duration} min) is outside the episode window "
                f"[{start_of_day_min // 60:02d}:{start_of_day_min % 60:02d}, +{horizon_min} min]"
            )
        route_name, dest = row.get("route", "").strip(), row.get("destination", "").strip()
        if not (route_name or dest):
            raise ValueError(f"{where}: the row names neither a route nor a destination")
        if route_name and route_name not in routes:
            raise ValueError(f"{where}: unknown route {route_name!r}; routes: {sorted(routes)}")
        if dest and dest not in serving:
            raise ValueError(f"{where}: no route serves destination {dest!r}")
        if route_name and dest:
            cells = [(r, d) for r, d in serving[dest] if r == routes[route_name]]
            if not cells:
                raise ValueError(f"{where}: route {route_name!r} does not serve {dest!r}")
            shares = [1.0]
        elif dest:
            cells = serving[dest]
            shares = [1.0 / len(cells)] * len(cells)
        else:
            r = routes[route_name]
            w = np.asarray(network.routes[r].dest_weights)
            cells = [(r, d) for d in range(len(w))]
            shares = list(w / w.sum())
        for (r, d), share in zip(cells, shares):
            rates[r, d, first : first + duration] += count * share / duration
    return rates
