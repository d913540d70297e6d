"""Rule dispatchers shared by the hierarchical environment's low level and the baselines."""

from __future__ import annotations

import numpy as np

from simulators.railway.model import RailwayModel
from simulators.railway.network import ALL_STOPS, DETOUR, HOLD, SHORT_TURN

# Preference when a route may run several patterns: the full service first, then what is left.
SERVICE_PREFERENCE = (ALL_STOPS, SHORT_TURN, DETOUR)


def preferred_mode(mask_row: np.ndarray) -> int:
    """The first feasible mode of ``SERVICE_PREFERENCE``, or ``HOLD``."""
    for mode in SERVICE_PREFERENCE:
        if mask_row[mode]:
            return mode
    return HOLD


class DispatchPlan:
    """One epoch's decisions built route by route, kept jointly feasible: enough free units in
    total, and no two departures of the same step on a shared track section."""

    def __init__(self, model: RailwayModel) -> None:
        self.model = model
        self.mask = model.mode_mask()
        self.free = model.stock.free
        self.modes = np.zeros(model.n_routes, dtype=np.int64)
        self.consists = np.ones(model.n_routes, dtype=np.int64)
        self._sections: set[int] = set()

    def add(self, route: int, mode: int, consist: int) -> bool:
        """Plan ``route`` to run ``mode`` with ``consist`` units if that is feasible; say whether."""
        if mode == HOLD or not self.mask[route, mode] or consist > self.free:
            return False
        sections = set(self.model.compiled.patterns[self.model.state][route][mode].sections.tolist())
        if sections & self._sections:
            return False
        self._sections |= sections
        self.modes[route], self.consists[route] = mode, consist
        self.free -= consist
        return True

    def consist_for(self, queue: float, threshold: float) -> int:
        """Two units when ``queue`` exceeds ``threshold`` and two are free, else one."""
        return 2 if queue > threshold and self.free >= 2 else 1


def quota_dispatch(
    model: RailwayModel, md_waiting: np.ndarray, quotas: np.ndarray, min_load: float, max_gap_min: float
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch, largest MD queue first, every route below its unit quota whose queue fills
    ``min_load`` of a unit or whose last departure is ``max_gap_min`` ago; two units when the
    queue exceeds one unit's capacity."""
    plan = DispatchPlan(model)
    cap = model.unit_capacity
    for r in np.argsort(-md_waiting, kind="stable"):
        due = md_waiting[r] >= min_load * cap or model.now - model.last_departure[r] >= max_gap_min
        room = quotas[r] - model.stock.by_route[r]  # units the quota still allows on the route
        if due and room >= 1:
            plan.add(int(r), preferred_mode(plan.mask[r]), int(min(room, plan.consist_for(md_waiting[r], cap))))
    return plan.modes, plan.consists
