"""Run a scenario with a dispatch policy, without Gym: the simulator on its own."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from simulators.railway.model import LOG_COLUMNS, RailwayModel
from simulators.railway.scenario import Scenario

# policy_fn(model) -> (modes, consists), one entry per route; see RailwayModel.step.
DispatchPolicy = Callable[[RailwayModel], tuple[np.ndarray, np.ndarray]]


def run_scenario(
    scenario: Scenario, policy_fn: DispatchPolicy, *, epoch_min: int = 5, seed: int = 0
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Simulate the whole horizon, asking ``policy_fn`` every ``epoch_min`` minutes.

    Returns the event log (columns ``LOG_COLUMNS``; ``time_min`` in minutes since the start) and
    the episode's KPIs (see ``RailwayModel.kpis``).
    """
    model = RailwayModel(scenario, epoch_min, np.random.default_rng(seed))
    while not model.at_horizon:
        modes, consists = policy_fn(model)
        model.step(np.asarray(modes), np.asarray(consists))
    return pd.DataFrame(model.log, columns=list(LOG_COLUMNS)), model.kpis()
