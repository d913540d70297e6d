"""The railway simulator: configs, compiled patterns, passengers, rolling stock, MD, invariants."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulators.railway import (
    Demand,
    Disruption,
    Fleet,
    MobileData,
    RailwayModel,
    Route,
    Section,
    Station,
    default_scenario,
    run_scenario,
    synthetic_scenario,
)
from simulators.railway.demand import read_demand_csv
from simulators.railway.model import LOG_COLUMNS
from simulators.railway.network import ALL_STOPS, DETOUR, HOLD, N_MODES, SHORT_TURN, SKIP_STOP, compile_network
from simulators.railway.passengers import Passengers, split_proportionally
from simulators.railway.rules import DispatchPlan, preferred_mode

SCENARIO = default_scenario()


# -- configuration errors ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: Station("X", capacity=0), "capacity"),
        (lambda: Station("X", capacity=100, crowd_threshold=200), "crowd_threshold"),
        (lambda: Section("A", "A", 3), "endpoints"),
        (lambda: Section("A", "B", 0), "run_min"),
        (lambda: Route("r", ("H", "A"), (), (0.5, 0.5)), "dest_weights"),
        (lambda: Route("r", ("H", "A"), (), (1.0,), express=("Z",)), "express"),
        (lambda: Route("r", ("H", "A"), (5.0, 1.0), (1.0,)), "sorted"),
        (lambda: Disruption(closed_sections=()), "closed_sections"),
        (lambda: Fleet(units_at_hub=-1), "units_at_hub"),
        (lambda: Demand(patience_min=0), "patience_min"),
        (lambda: MobileData(penetration=0.0), "penetration"),
        (lambda: replace(SCENARIO, horizon_min=10), "horizon_min"),
        (lambda: replace(SCENARIO, demand=Demand(surge_weights=(1.0,))), "surge_weights"),
        (lambda: replace(SCENARIO.network, hub="nowhere"), "hub"),
        (lambda: compile_network(SCENARIO.network, (("H", "S3"),)), "not a section"),
        # a float count of units or minutes would index arrays wrongly; NaN and inf pass range checks
        (lambda: Fleet(units_at_hub=8.5), "Fleet.units_at_hub = 8.5 is invalid; allowed: an integer"),
        (lambda: Demand(patience_min=30.0), "Demand.patience_min = 30.0 is invalid; allowed: an integer"),
        (lambda: MobileData(delay_min=2.5), "MobileData.delay_min = 2.5 is invalid"),
        (lambda: replace(SCENARIO, start_of_day_min=360.5), "Scenario.start_of_day_min = 360.5 is invalid"),
        (lambda: Station("X", capacity=True), "Station.capacity = True is invalid; allowed: an integer"),
        (lambda: Disruption((("A", "B"),), start_min=float("nan")), "Disruption.start_min = nan is invalid; allowed: a finite number"),
        (lambda: Demand(level=float("inf")), "Demand.level = inf is invalid"),
        (lambda: Section("A", "B", float("inf")), "Section.run_min = inf is invalid"),
        (lambda: Demand(hourly_profile=(float("nan"),) * 24), "hourly_profile and Demand.surge_weights must be finite"),
    ],
)
def test_bad_configs_raise_naming_the_field(build, fragment):
    with pytest.raises(ValueError, match=fragment):
        build()


def test_route_needs_a_section_between_consecutive_stops():
    net = SCENARIO.network
    broken = replace(net.routes[0], stops=("H", "N2", "N1", "N3", "N4", "N5"))
    with pytest.raises(ValueError, match="no section between 'H' and 'N2'"):
        replace(net, routes=(broken, *net.routes[1:]))


def test_epoch_longer_than_patience_is_rejected():
    with pytest.raises(ValueError, match="epoch_min"):
        RailwayModel(SCENARIO, 45, np.random.default_rng(0))


# -- compiled patterns -------------------------------------------------------------------------
def test_blocked_route_gets_short_turn_and_detour_only_while_closed():
    compiled = compile_network(SCENARIO.network, SCENARIO.disruption.closed_sections)
    north_open, north_closed = compiled.patterns[0][0], compiled.patterns[1][0]
    assert north_open[ALL_STOPS] is not None and north_open[SKIP_STOP] is not None
    assert north_open[SHORT_TURN] is None and north_open[DETOUR] is None
    assert north_closed[ALL_STOPS] is None and north_closed[SKIP_STOP] is None
    short, detour = north_closed[SHORT_TURN], north_closed[DETOUR]
    assert short.round_trip_min < north_open[ALL_STOPS].round_trip_min
    assert compiled.detour_extra_min[0] > 0  # the detour is slower than the normal path
    dests = SCENARIO.network.routes[0].stops[1:]
    assert [dests[i] for i in np.arange(len(dests))[short.served]] == ["N1", "N2"]
    assert [dests[i] for i in np.arange(len(dests))[detour.served]] == ["N4", "N5"]
    assert list(compiled.blocked[1]) == [True, False, False, False]


# -- passengers --------------------------------------------------------------------------------
@given(st.lists(st.integers(0, 50), min_size=1, max_size=8), st.data())
def test_split_proportionally_takes_exactly_n_within_cells(cells, data):
    cells = np.array(cells, dtype=np.int64)
    n = data.draw(st.integers(0, int(cells.sum())))
    take = split_proportionally(cells, n)
    assert take.sum() == n and np.all(take >= 0) and np.all(take <= cells)


def test_boarding_is_fifo_and_counts_denied_passengers():
    arrivals = np.zeros((1, 2, 20), dtype=np.int64)
    arrivals[0, 0, 1] = 30  # oldest cohort
    arrivals[0, 1, 3] = 50
    arrivals[0, 0, 5] = 40
    pax = Passengers(arrivals, patience=10, capacity=1000, crowd_threshold=500)
    pax.advance(6)
    boarded = pax.board(0, np.array([0, 1]), capacity=60)
    assert boarded == 60
    assert pax.remaining[0, 0, 1] == 0 and pax.remaining[0, 1, 3] == 20 and pax.remaining[0, 0, 5] == 40
    assert pax.denied == 60  # 120 wanted the train, 60 got on
    assert pax.wait_hist[5] == 30 and pax.wait_hist[3] == 30  # waited 6-1 and 6-3 minutes


def test_wait_kpis_count_those_who_gave_up_at_their_patience():
    arrivals = np.zeros((1, 1, 61), dtype=np.int64)
    arrivals[0, 0, 0] = 10
    pax = Passengers(arrivals, patience=30, capacity=1000, crowd_threshold=500)
    for t in range(10, 61, 10):
        pax.advance(t)
    assert pax.reneged == 10 and pax.wait_hist[30] == 10 and pax.wait_hist.sum() == 10
    scenario = replace(SCENARIO, fleet=replace(SCENARIO.fleet, units_at_hub=1, depot_units=0))
    _, kpis = run_scenario(scenario, lambda model: ([HOLD] * model.n_routes, [1] * model.n_routes))
    # nobody boards: everyone who left the platform gave up after patience_min
    assert kpis["passengers_boarded"] == 0 and kpis["mean_wait_min"] == kpis["p95_wait_min"] == 30


def test_passengers_renege_after_patience_and_platform_capacity_refuses():
    arrivals = np.zeros((1, 1, 30), dtype=np.int64)
    arrivals[0, 0, 2] = 80
    arrivals[0, 0, 4] = 50
    pax = Passengers(arrivals, patience=5, capacity=100, crowd_threshold=60)
    pax.advance(3)
    pax.advance(6)
    assert pax.refused == 30 and pax.waiting() == 100
    assert pax.overcrowd_person_min == 2 * 20 + 3 * 40  # minutes 2-3 at 80, 4-6 at 100; threshold 60
    pax.advance(8)  # cohort 2 leaves at minute 7
    assert pax.reneged == 80 and pax.waiting() == 20
    assert pax.arrived == pax.boarded + pax.waiting() + pax.reneged + pax.refused
    assert pax.waiting_log.max() <= 100 and pax.peak_waiting == 100


# -- invariants under random scenarios and actions ------------------------------------------------
scenarios = st.builds(
    lambda level, surge, start, duration, hub_units, stranded, patience, capacity: replace(
        SCENARIO,
        demand=replace(SCENARIO.demand, level=level, surge_factor=surge, patience_min=patience),
        disruption=replace(SCENARIO.disruption, start_min=start, duration_median_min=duration),
        fleet=replace(SCENARIO.fleet, units_at_hub=hub_units, units_stranded=stranded),
        network=replace(SCENARIO.network, stations=(Station("H", capacity=capacity, crowd_threshold=capacity // 2),
                                                    *SCENARIO.network.stations[1:])),
    ),
    st.floats(0.2, 4.0), st.floats(1.0, 4.0), st.floats(0, 200), st.floats(30, 600),
    st.integers(1, 12), st.integers(0, 8), st.integers(5, 60), st.integers(200, 3000),
)


def _check_invariants(model: RailwayModel) -> None:
    pax, stock = model.passengers, model.stock
    assert pax.arrived == pax.boarded + pax.waiting() + pax.reneged + pax.refused
    window = slice(max(0, model.now - pax.patience + 1), model.now + 1)
    assert int(pax.route_cohorts[:, window].sum()) == pax.waiting() == int(pax.remaining[:, :, window].sum())
    assert not pax.route_cohorts[:, : window.start].any()  # cohorts past their patience have left
    assert pax.remaining.min() >= 0 and pax.route_cohorts.min() >= 0 and pax.waiting_log.min() >= 0
    assert pax.waiting_log[:, : model.now + 1].sum(axis=0).max() <= pax.capacity
    assert stock.total() == stock.size
    assert min(stock.free, stock.in_service, stock.stranded, stock.at_depot, stock.by_route.min()) >= 0
    assert stock.by_route.sum() == stock.in_service


@given(scenarios, st.integers(0, 2**16), st.integers(1, 10))
def test_conservation_and_capacity_for_any_actions(scenario, seed, epoch):
    rng = np.random.default_rng(seed)
    model = RailwayModel(scenario, min(epoch, scenario.demand.patience_min), np.random.default_rng(seed))
    while not model.at_horizon:
        model.step(rng.integers(0, N_MODES, model.n_routes), rng.integers(1, 3, model.n_routes))
        _check_invariants(model)
    dispatches = [row for row in model.log if row[1] == "dispatch"]
    assert all(0 <= row[5] <= row[6] for row in dispatches)  # boarded within train capacity
    assert len(dispatches) == model.trains_dispatched


def _independent_headway_violations(model: RailwayModel) -> int:
    """Recount violations from the event log alone: sections entered within their headway."""
    entries: dict[int, list[float]] = {}
    compiled = model.compiled
    for t, event, r, mode, *_ in model.log:
        if event != "dispatch":
            continue
        state = 1 if model.closure_start <= t < model.closure_end else 0
        pattern = compiled.patterns[state][r][list(("hold", "all_stops", "skip_stop", "short_turn", "detour")).index(mode)]
        for sec, off in zip(pattern.sections.tolist(), pattern.entry_offsets.tolist()):
            entries.setdefault(sec, []).append(t + off)
    bad = 0
    for sec, times in entries.items():
        times.sort()
        bad += int(np.sum(np.diff(times) < compiled.headway[sec] - 1e-9))
    return bad


@given(scenarios, st.integers(0, 2**16), st.integers(1, 4))
def test_masked_random_actions_never_violate_headways(scenario, seed, epoch):
    rng = np.random.default_rng(seed)
    model = RailwayModel(scenario, epoch, np.random.default_rng(seed))
    while not model.at_horizon:
        mask = model.mode_mask()
        modes = [int(rng.choice(np.flatnonzero(mask[r]))) for r in range(model.n_routes)]
        model.step(modes, rng.integers(1, 3, model.n_routes))
        _check_invariants(model)
    assert model.headway_violations == 0
    assert _independent_headway_violations(model) == 0


def test_unmasked_actions_do_violate_and_the_count_matches_the_log():
    model = RailwayModel(SCENARIO, 1, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    while not model.at_horizon:
        model.step(rng.integers(0, N_MODES, model.n_routes), np.ones(model.n_routes, dtype=int))
    assert model.headway_violations > 0
    assert _independent_headway_violations(model) >= model.headway_violations


# -- whole episodes ------------------------------------------------------------------------------
def _greedy(model: RailwayModel):
    plan = DispatchPlan(model)
    for r in range(model.n_routes):
        plan.add(r, preferred_mode(plan.mask[r]), 1)
    return plan.modes, plan.consists


def test_run_scenario_returns_an_event_log_and_every_kpi():
    scenario = replace(SCENARIO, disruption=replace(SCENARIO.disruption, duration_median_min=200, duration_sigma=0))
    log, kpis = run_scenario(scenario, _greedy, seed=3)
    assert list(log.columns) == list(LOG_COLUMNS)
    assert {"closure", "reopen", "dispatch", "units_back"} <= set(log["event"])
    for key in ("demand_satisfaction", "fleet_share_used", "overcrowding_person_min", "peak_crowd_ratio",
                "mean_wait_min", "p95_wait_min", "denied_boardings", "passengers_lost", "headway_violations",
                "trains_dispatched", "mean_load_factor"):
        assert key in kpis
    assert 0 < kpis["demand_satisfaction"] <= 1 and 0 < kpis["fleet_share_used"] <= 1
    assert kpis["trains_dispatched"] == (log["event"] == "dispatch").sum()
    assert kpis["p95_wait_min"] >= kpis["mean_wait_min"] > 0
    assert kpis["closure_duration_min"] == 200
    again = run_scenario(scenario, _greedy, seed=3)
    assert again[1] == kpis  # deterministic under a seed


@pytest.mark.parametrize("mode, consist", [(1, 3), (1, 0), (1, -1), (-1, 1), (5, 1), (1, 1.5), (0.5, 1)])
def test_the_simulator_rejects_modes_and_consists_outside_their_ranges(mode, consist):
    def policy(model):
        modes = [0] * model.n_routes
        modes[3] = mode
        return modes, [1] * 3 + [consist]

    with pytest.raises(ValueError, match="allowed: 4 integer modes in 0..4 .* consists in \\(1, 2\\)"):
        run_scenario(SCENARIO, policy)


def test_closed_sections_must_be_a_tuple_of_station_pairs():
    with pytest.raises(ValueError, match=r"closed_sections = \[\('N2', 'N3'\)\] is invalid"):
        replace(SCENARIO.disruption, closed_sections=[("N2", "N3")])


def test_holding_everything_serves_nobody_and_loses_passengers():
    _, kpis = run_scenario(SCENARIO, lambda m: (np.zeros(m.n_routes, int), np.ones(m.n_routes, int)), seed=0)
    assert kpis["passengers_boarded"] == 0 and kpis["passengers_lost"] > 0 and kpis["fleet_share_used"] == 0


def test_demand_surges_while_the_line_is_closed():
    model = RailwayModel(replace(SCENARIO, demand=replace(SCENARIO.demand, surge_factor=3.0)), 5, np.random.default_rng(0))
    rates = model._rates()
    start, end = int(model.closure_start), int(min(model.closure_end, model.horizon))
    east = rates[1].sum(axis=0)
    assert east[start + 1] > 2.5 * east[start - 1] * 0.9
    assert end <= start + 30 or east[start + 1 : end].min() > east[: start].max()


def test_stranded_and_depot_units_join_the_hub():
    model = RailwayModel(SCENARIO, 5, np.random.default_rng(0))
    while not model.at_horizon:
        model.step(np.zeros(model.n_routes, int), np.ones(model.n_routes, int))
    events = [row[1] for row in model.log]
    if model.closure_end < model.horizon - 60:
        assert "stranded_units_back" in events
    assert "depot_units_arrive" in events
    assert model.stock.free == SCENARIO.fleet.size - (0 if "stranded_units_back" in events else SCENARIO.fleet.units_stranded)


def test_mobile_data_is_delayed_thinned_and_unbiased():
    scenario = replace(SCENARIO, mobile_data=MobileData(penetration=0.25, delay_min=7, noise_cv=0.1))
    model = RailwayModel(scenario, 5, np.random.default_rng(0))
    for _ in range(8):
        model.step(np.zeros(model.n_routes, int), np.ones(model.n_routes, int))
    truth = model.passengers.waiting_log[:, model.now - 7]
    draws = np.array([model.sensor.waiting(model.passengers.waiting_log, model.now) for _ in range(400)])
    assert np.allclose(draws.mean(axis=0), truth * model.sensor._waiting_noise[:, model.now - 7], rtol=0.1)
    assert np.all(draws.std(axis=0) > 0)  # noisy
    phones = draws * 0.25 / model.sensor._waiting_noise[:, model.now - 7]
    assert np.allclose(phones, np.round(phones)) and np.all(phones <= truth)  # a count of phones among the truth


def test_synthetic_scenarios_scale_and_run():
    for n in (2, 6):
        scenario = synthetic_scenario(n)
        log, kpis = run_scenario(scenario, _greedy, seed=0)
        assert len(scenario.network.routes) == n and kpis["trains_dispatched"] > 0


# -- demand CSV ----------------------------------------------------------------------------------
def test_demand_csv_rows_map_to_routes_and_destinations(tmp_path):
    path = tmp_path / "demand.csv"
    path.write_text("time,route,destination,count,duration_min\n06:10,East,E2,30,1\n20,,S1,12,4\n06:05,West,,10,\n")
    rates = read_demand_csv(path, SCENARIO.network, start_of_day_min=360, horizon_min=60)
    assert rates.shape == (4, 5, 61)
    assert rates[1, 1, 10] == 30
    assert np.allclose(rates[2, 0, 20:24], 3.0)
    assert np.isclose(rates[3, :2, 5].sum(), 10.0)
    assert np.isclose(rates.sum(), 52.0)
    scenario = replace(SCENARIO, horizon_min=60, demand=replace(SCENARIO.demand, rates=rates))
    _, kpis = run_scenario(scenario, _greedy)
    assert kpis["passengers_arrived"] > 0


@pytest.mark.parametrize(
    "row, fragment",
    [("06:10,Nowhere,,5", "unknown route"), ("06:10,,Z9,5", "no route serves"), ("23:00,East,,5", "outside"),
     ("06:10,East,,-5", "count must be a finite number >= 0"), ("06:10,East,,nan", "count must be a finite number"),
     ("06:10,East,,inf", "count must be a finite number"), ("06:10,,,5", "neither a route nor a destination"),
     ("6h,East,,5", "HH:MM"), ("06:10,West,E1,5", "does not serve")],
)
def test_demand_csv_errors_name_the_row(tmp_path, row, fragment):
    path = tmp_path / "demand.csv"
    path.write_text("time,route,destination,count\n" + row + "\n")
    with pytest.raises(ValueError, match=fragment):
        read_demand_csv(path, SCENARIO.network, start_of_day_min=360, horizon_min=60)


@pytest.mark.parametrize("duration", ["1.5", "ten", "-2"])
def test_demand_csv_durations_must_be_whole_minutes(tmp_path, duration):
    path = tmp_path / "demand.csv"
    path.write_text(f"time,route,count,duration_min\n06:10,East,5,1\n06:20,East,5,{duration}\n")
    with pytest.raises(ValueError, match=f"demand.csv:3: duration_min '{duration}' is not a whole number"):
        read_demand_csv(path, SCENARIO.network, start_of_day_min=360, horizon_min=60)


def test_hold_mode_is_always_feasible_and_dispatch_needs_a_unit():
    model = RailwayModel(replace(SCENARIO, fleet=Fleet(units_at_hub=1, units_stranded=0, depot_units=0)), 5,
                         np.random.default_rng(0))
    assert model.mode_mask()[:, HOLD].all() and model.mode_mask()[:, ALL_STOPS].any()
    model.step([ALL_STOPS, ALL_STOPS, HOLD, HOLD], [1, 1, 1, 1])
    assert model.trains_dispatched == 1 and model.invalid_actions == 1  # the second route had no unit left
    assert not model.mode_mask()[:, HOLD + 1 :].any()


def test_scenario_generator_is_seeded_and_families_differ():
    from simulators.railway import FAMILIES, sample_scenario

    assert sample_scenario("train", 4) == sample_scenario("train", 4)
    assert sample_scenario("train", 4) != sample_scenario("train", 5)
    for seed in range(20):
        sc = sample_scenario("test", seed)
        fam = FAMILIES["test"]
        assert fam.duration_median_min[0] <= sc.disruption.duration_median_min <= fam.duration_median_min[1]
        assert fam.units_stranded[0] <= sc.fleet.units_stranded <= fam.units_stranded[1]
    with pytest.raises(ValueError, match="family"):
        sample_scenario("holiday", 0)
