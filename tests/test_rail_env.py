"""recrail/RailDisruption-v0: config, spaces, masks, invalid-action rule, reward, episode end, baselines."""

import warnings
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import envs  # noqa: F401
from agents.baselines import baseline_names, make_baseline
from agents.baselines.rail import random_masked_action
from envs.rail_disruption import RailDisruptionEnv
from simulators.railway import FAMILIES, default_scenario, synthetic_scenario
from simulators.railway.network import ALL_STOPS, DETOUR, HOLD, N_MODES, SHORT_TURN

ENV_ID = "recrail/RailDisruption-v0"
KPI_KEYS = {"demand_satisfaction", "fleet_share_used", "overcrowding_person_min", "peak_crowd_ratio", "mean_wait_min",
            "p95_wait_min", "denied_boardings", "passengers_lost", "headway_violations", "trains_dispatched",
            "mean_load_factor"}


def hold_all(env: RailDisruptionEnv) -> np.ndarray:
    return np.zeros(env.action_space.shape, dtype=np.int64)


@pytest.mark.parametrize(
    "config, fragment",
    [({"family": "weekend"}, "family"), ({"epoch_min": 0}, "epoch_min"), ({"w_lost": -1.0}, "w_lost"),
     ({"bogus": 1}, "unknown RailDisruptionConfig keys"), ({"scenario": "default"}, "scenario"),
     ({"quota_levels": 0}, "quota_levels"), ({"w_lost": float("nan")}, "RailDisruptionConfig.w_lost = nan is invalid; allowed: a finite number"),
     ({"backlog_clear_ratio": float("inf")}, "backlog_clear_ratio = inf is invalid"),
     ({"epoch_min": True}, "epoch_min = True is invalid; allowed: an integer"),
     ({"hierarchical": "false"}, "hierarchical = 'false' is invalid; allowed: True or False")],
)
def test_bad_config_raises_naming_the_field(config, fragment):
    with pytest.raises(ValueError, match=fragment):
        RailDisruptionEnv(config)


@pytest.mark.parametrize("config", [{"hierarchical": True, "high_level_every": 3}, {"family": "test"}])
def test_check_env_clean_for_other_modes(config):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(RailDisruptionEnv(config), skip_render_check=True)


def test_reset_options_are_rejected_and_make_takes_field_overrides():
    env = RailDisruptionEnv()
    with pytest.raises(ValueError, match=r"unknown reset options \['family'\]; allowed: \[\]"):
        env.reset(seed=0, options={"family": "test"})
    made = gym.make(ENV_ID, family="test", epoch_min=10)
    assert made.unwrapped.config.family == "test" and made.unwrapped.config.epoch_min == 10
    custom = RailDisruptionEnv({"scenario": synthetic_scenario(3)}, family="train")
    assert custom.config.scenario == synthetic_scenario(3) and custom.config.family == "train"


def test_stepping_a_finished_episode_raises():
    env = RailDisruptionEnv({"scenario": replace(default_scenario(), horizon_min=40)})  # closed from minute 30 on
    env.reset(seed=0)
    for _ in range(40 // 5):
        _, _, terminated, truncated, _ = env.step(hold_all(env))
    assert truncated and not terminated
    with pytest.raises(RuntimeError, match="finished episode"):
        env.step(hold_all(env))
    env.reset(seed=0)
    env.step(hold_all(env))


def test_numpy_epoch_and_sparse_service_beyond_the_horizon_stay_in_the_space():
    base = default_scenario()
    west = replace(base.network.routes[3], departures=(0.0, 240.0, 480.0))  # every 4 h, past a 2-h horizon
    scenario = replace(base, network=replace(base.network, routes=(*base.network.routes[:3], west)), horizon_min=120)
    env = RailDisruptionEnv({"scenario": scenario, "epoch_min": np.int64(10)})
    obs, _ = env.reset(seed=0)
    while True:
        assert env.observation_space.contains(obs)
        obs, _, _, truncated, _ = env.step(hold_all(env))
        if truncated:
            break
    assert obs[3 * 8 + 3] == 120 / 60  # no West departure left before the horizon: the horizon


def test_actions_outside_the_space_raise():
    env = RailDisruptionEnv()
    env.reset(seed=0)
    for bad in (np.full(8, 5), np.zeros(7, dtype=int), np.full(8, -1), np.zeros(8) + 0.5):
        with pytest.raises(ValueError, match="not in the action space"):
            env.step(bad)


def test_mask_format_matches_maskable_ppo():
    env = RailDisruptionEnv()
    env.reset(seed=0)
    mask = env.action_masks()
    assert mask.dtype == bool and mask.shape == (int(env.action_space.nvec.sum()),)
    per_route = mask.reshape(env.n_routes, N_MODES + 2)
    assert per_route[:, HOLD].all() and per_route[:, N_MODES].all()  # hold and one unit always allowed
    assert not per_route[:, SHORT_TURN].any() and not per_route[:, DETOUR].any()  # line still open


def test_blocked_route_offers_short_turn_and_detour_once_closed():
    env = RailDisruptionEnv()
    env.reset(seed=0)
    while not env.model.closed:
        env.step(hold_all(env))
    per_route = env.action_masks().reshape(env.n_routes, N_MODES + 2)
    assert not per_route[0, ALL_STOPS] and per_route[0, SHORT_TURN] and per_route[0, DETOUR]
    obs = env._observe()
    assert obs[4] == 1 and obs[5] == 1 and obs[8 * env.n_routes + 2] == 1  # blocked, alternative, closed


def test_infeasible_in_space_action_holds_and_is_counted_and_penalised():
    scenario = replace(default_scenario(), fleet=replace(default_scenario().fleet, units_at_hub=1))
    env, twin = RailDisruptionEnv({"scenario": scenario}), RailDisruptionEnv({"scenario": scenario})
    env.reset(seed=1)
    twin.reset(seed=1)
    action = hold_all(env)
    action[0:2] = (ALL_STOPS, 1)  # two units, only one is free
    assert not env.action_masks()[N_MODES + 1]
    _, reward, _, _, info = env.step(action)
    _, reward_hold, _, _, _ = twin.step(hold_all(twin))
    assert info["invalid_actions"] == 1 and env.model.trains_dispatched == 0
    assert reward == pytest.approx(reward_hold - env.config.w_invalid)


def test_headway_violation_without_masks_runs_is_counted_and_penalised():
    env = RailDisruptionEnv({"epoch_min": 1})
    env.reset(seed=0)
    action = hold_all(env)
    action[0] = ALL_STOPS
    env.step(action)
    assert not env.action_masks()[ALL_STOPS]  # one minute later the first section is still in headway
    _, _, _, _, info = env.step(action)
    assert info["headway_violations"] == 1 and env.model.headway_violations == 1
    assert env.model.trains_dispatched == 2


@settings(max_examples=15)
@given(st.integers(0, 2**16), st.sampled_from(["default", "train", "test"]))
def test_masked_random_play_never_violates_headways_and_ends_with_kpis(seed, family):
    env = gym.make(ENV_ID, config={"family": family})
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    ret = 0.0
    while True:
        assert env.observation_space.contains(obs)
        obs, reward, terminated, truncated, info = env.step(
            random_masked_action(env.action_space.nvec, env.unwrapped.action_masks(), rng)
        )
        ret += reward
        assert info["headway_violations"] == 0
        if terminated or truncated:
            break
    assert KPI_KEYS <= set(info["kpis"]) and info["kpis"]["headway_violations"] == 0
    assert terminated != truncated


def _play(env: RailDisruptionEnv, baseline: str, seed: int) -> tuple[bool, bool, int]:
    policy = make_baseline(ENV_ID, baseline)
    obs, _ = env.reset(seed=seed)
    policy.reset(env, seed)
    steps = 0
    while True:
        obs, _, terminated, truncated, info = env.step(policy.act(obs, env))
        steps += 1
        if terminated or truncated:
            return terminated, truncated, steps


def test_episodes_run_the_whole_day_unless_a_recovery_end_is_asked_for():
    # by default every policy is scored over the same horizon, even when the line reopens early
    assert _play(RailDisruptionEnv(), "fixed_headway", 0) == (False, True, 720 // 5)
    env = RailDisruptionEnv({"backlog_clear_ratio": 0.25})
    terminated, _, _ = _play(env, "fixed_headway", 0)
    assert terminated and env.model.reopened and env.model.now < env.model.horizon
    assert env.model.passengers.waiting() <= env.config.backlog_clear_ratio * 1200
    endless = replace(default_scenario(), disruption=replace(default_scenario().disruption, duration_median_min=5000,
                                                             duration_sigma=0.0))
    env = RailDisruptionEnv({"scenario": endless, "backlog_clear_ratio": 0.25})
    env.reset(seed=0)
    steps = 0
    while True:
        _, _, terminated, truncated, info = env.step(hold_all(env))
        steps += 1
        if terminated or truncated:
            break
    assert truncated and not terminated and steps == 720 // 5 and "kpis" in info


def test_reward_is_the_documented_weighted_sum():
    env = RailDisruptionEnv({"w_served": 1.0, "w_crowd": 0.0, "w_lost": 0.0, "w_empty": 0.0, "w_headway": 0.0,
                             "w_invalid": 0.0})
    env.reset(seed=2)
    action = hold_all(env)
    action[0] = ALL_STOPS
    total_reward, boarded = 0.0, 0
    for _ in range(5):
        _, reward, _, _, info = env.step(action)
        total_reward += reward
        boarded += info["boarded"]
    assert boarded > 0 and total_reward == pytest.approx(boarded)


def test_families_draw_parameters_from_their_ranges():
    env = RailDisruptionEnv({"family": "test"})
    fam = FAMILIES["test"]
    levels = set()
    for seed in range(5):
        env.reset(seed=seed)
        sc = env.scenario
        assert fam.demand_level[0] <= sc.demand.level <= fam.demand_level[1]
        assert fam.units_at_hub[0] <= sc.fleet.units_at_hub <= fam.units_at_hub[1]
        levels.add(sc.demand.level)
    assert len(levels) == 5


def test_families_scale_to_the_base_scenario():
    big = synthetic_scenario(16)  # 80 units, 5x the default's 16
    env = RailDisruptionEnv({"scenario": big, "family": "train"})
    fam = FAMILIES["train"]
    for seed in range(5):
        env.reset(seed=seed)
        fleet = env.scenario.fleet
        assert 5 * fam.units_at_hub[0] <= fleet.units_at_hub <= 5 * fam.units_at_hub[1]
        assert 5 * fam.units_stranded[0] <= fleet.units_stranded <= 5 * fam.units_stranded[1]
        assert fleet.depot_units == big.fleet.depot_units
    short = replace(default_scenario(), horizon_min=60)  # the test family's closures start at 20-90 of 720 minutes
    env = RailDisruptionEnv({"scenario": short, "family": "test"})
    for seed in range(5):
        env.reset(seed=seed)
        assert 20 / 12 <= env.scenario.disruption.start_min <= 90 / 12


def test_hierarchical_mode_keeps_units_within_quotas():
    env = RailDisruptionEnv({"hierarchical": True, "high_level_every": 4, "quota_levels": 4})
    env.reset(seed=0)
    assert env.action_masks().all()
    levels = np.array([2, 1, 1, 0])
    quotas = levels * env.model.stock.size / 4
    while True:
        _, _, terminated, truncated, info = env.step(levels)
        assert np.all(env.model.stock.by_route <= quotas)
        if terminated or truncated:
            break
    assert env.model.stock.by_route[3] == 0 and info["kpis"]["trains_dispatched"] > 0


def test_baselines_are_registered_and_play_feasible_actions():
    names = baseline_names(ENV_ID)
    assert {"timetable", "fixed_headway", "demand_greedy", "load_aware_holding", "random"} <= set(names)
    env = gym.make(ENV_ID, config={"family": "test"})
    returns = {}
    for name in names:
        policy = make_baseline(ENV_ID, name)
        obs, _ = env.reset(seed=5)
        policy.reset(env, 5)
        ret = 0.0
        while True:
            action = policy.act(obs, env)
            mask = env.unwrapped.action_masks().reshape(env.unwrapped.n_routes, N_MODES + 2)
            assert all(mask[r, action[2 * r]] and mask[r, N_MODES + action[2 * r + 1]] for r in range(len(mask)))
            obs, reward, terminated, truncated, info = env.step(action)
            ret += reward
            if terminated or truncated:
                break
        assert info["kpis"]["headway_violations"] == 0
        if name != "random":
            assert info["kpis"]["invalid_actions"] == 0
        returns[name] = ret
    assert returns["fixed_headway"] > returns["timetable"]  # decisions matter in this scenario


def test_timetable_baseline_never_runs_alternatives_and_follows_the_timetable():
    env = RailDisruptionEnv()
    policy = make_baseline(ENV_ID, "timetable")
    obs, _ = env.reset(seed=0)
    policy.reset(env, 0)
    while True:
        obs, _, terminated, truncated, _ = env.step(policy.act(obs, env))
        if terminated or truncated:
            break
    dispatches = [row for row in env.model.log if row[1] == "dispatch"]
    assert dispatches and all(row[3] == "all_stops" for row in dispatches)
    routes = env.model.network.routes
    for t, _, r, _, units, *_ in dispatches:
        assert units == routes[r].timetable_consist
        assert any(t - env.config.epoch_min < d <= t for d in routes[r].departures)


def test_timetable_baseline_runs_departures_at_fractional_minutes():
    base = default_scenario()
    west = replace(base.network.routes[3], departures=(5.5, 17.5, 32.5, 45.0))  # e.g. GTFS times with seconds
    network = replace(base.network, routes=(*base.network.routes[:3], west))
    fleet = replace(base.fleet, units_at_hub=40)  # units for every timetabled train
    env = RailDisruptionEnv({"scenario": replace(base, network=network, fleet=fleet, horizon_min=60)})
    _play(env, "timetable", 0)
    times = [row[0] for row in env.model.log if row[1] == "dispatch" and row[2] == 3]
    assert times == [10, 20, 35, 45]  # each at the first decision at or after its departure


def test_render_modes():
    with pytest.raises(ValueError, match="render_mode"):
        RailDisruptionEnv(render_mode="human")
    image_env, text_env = RailDisruptionEnv(render_mode="rgb_array"), RailDisruptionEnv(render_mode="ansi")
    for env in (image_env, text_env):
        env.reset(seed=0)
        for _ in range(10):
            env.step(hold_all(env))
    image = image_env.render()
    assert image.dtype == np.uint8 and image.shape == (64, 2 * 12 * 4, 3) and (image != 255).any()
    assert "North" in text_env.render() and "waiting=" in text_env.render()
