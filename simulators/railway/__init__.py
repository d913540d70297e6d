"""Railway disruption simulator: a hub, routes, an open-ended closure, rolling stock and passengers.

Usable without Gym: ``run_scenario(default_scenario(), policy_fn)`` returns an event log and KPIs.
Modules: ``network`` (stations, sections, routes, compiled patterns), ``scenario`` (configs,
default and synthetic scenarios, train/test families), ``passengers`` (cohort flows),
``mobile_data`` (the operator's view), ``rolling_stock``, ``model`` (the SimPy model), ``rules``
(rule dispatchers), ``gtfs`` (GTFS import), ``demand`` (demand CSV), ``run``.
"""

from simulators.railway.model import RailwayModel
from simulators.railway.network import MODE_NAMES, Network, Route, Section, Station
from simulators.railway.run import run_scenario
from simulators.railway.scenario import (
    FAMILIES,
    Demand,
    Disruption,
    Fleet,
    MobileData,
    Scenario,
    ScenarioFamily,
    default_scenario,
    sample_scenario,
    synthetic_scenario,
)

__all__ = [
    "FAMILIES", "MODE_NAMES", "Demand", "Disruption", "Fleet", "MobileData", "Network", "RailwayModel",
    "Route", "Scenario", "ScenarioFamily", "Section", "Station", "default_scenario", "run_scenario",
    "sample_scenario", "synthetic_scenario",
]
