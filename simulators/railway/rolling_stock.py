"""Rolling stock: interchangeable units that are free at the hub, in service, stranded or at the depot.

A departure takes 1 or 2 coupled units from the hub; they are free again one round trip (out,
turnaround, back) later. Units stranded beyond the closure reach the hub one run after the line
reopens; depot units arrive at a fixed time. Units are conserved:
``free + in_service + stranded + at_depot == fleet size`` at every instant.
"""

from __future__ import annotations

import numpy as np

from simulators.railway.scenario import Fleet


class RollingStock:
    def __init__(self, fleet: Fleet, n_routes: int) -> None:
        self.size = fleet.size
        self.free = fleet.units_at_hub
        self.stranded = fleet.units_stranded
        self.at_depot = fleet.depot_units
        self.in_service = 0
        self.peak_in_service = 0
        self.by_route = np.zeros(n_routes, dtype=np.int64)  # units in service per route

    def take(self, route: int, n: int) -> None:
        if n > self.free:
            raise RuntimeError(f"cannot take {n} units, only {self.free} free")  # callers check first
        self.free -= n
        self.in_service += n
        self.by_route[route] += n
        self.peak_in_service = max(self.peak_in_service, self.in_service)

    def give_back(self, route: int, n: int) -> None:
        self.in_service -= n
        self.by_route[route] -= n
        self.free += n

    def release_stranded(self) -> int:
        n, self.stranded = self.stranded, 0
        self.free += n
        return n

    def release_depot(self) -> int:
        n, self.at_depot = self.at_depot, 0
        self.free += n
        return n

    def total(self) -> int:
        return self.free + self.in_service + self.stranded + self.at_depot
