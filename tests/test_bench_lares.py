"""The LARES bench's pieces: multi-draw rows and the budget calibration of a halting policy's P(STOP)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agents.baselines.latent_reasoning import DepthTraces, calibrate_stop_threshold
from benchmarks import bench_lares
from benchmarks.bench_lares import BenchSettings, _finish, draw_seeds, recompute_record, row
from benchmarks.compare_runs import compare, load_per_user
from benchmarks.stats import Interval
from envs.latent_reasoning import LatentReasoningConfig


def _traces(ndcg: list[list[float]], users: list[int] | None = None) -> DepthTraces:
    """Traces of the given NDCG@10 per depth; by default every row is a draw of one user (no user spread)."""
    ndcg = np.asarray(ndcg)
    rows, depths = ndcg.shape
    users = np.zeros(rows, int) if users is None else np.asarray(users)
    return DepthTraces(users, np.zeros((rows, depths, 1), np.float32), np.zeros_like(ndcg), ndcg)


def test_row_averages_each_users_metrics_over_the_draws():
    # user 7: ranks 0 and 1 -> NDCG (1 + 1/log2(3)) / 2; user 9: ranks 10 and 0 -> (0 + 1) / 2, recall 1/2
    r = row("x", np.array([7, 9]), np.array([[0, 10], [1, 0]]), np.array([2.0, 3.0]))
    per_user = r["per_user"]
    np.testing.assert_allclose(per_user["NDCG@10"], [(1 + 1 / np.log2(3)) / 2, 0.5])
    assert list(per_user["user"]) == [7, 9] and list(per_user["Recall@10"]) == [1.0, 0.5]
    assert list(per_user["steps"]) == [2.0, 3.0] and set(per_user["policy"]) == {"x"}
    assert r["users"] == 2 and r["NDCG@10"] == pytest.approx(((1 + 1 / np.log2(3)) / 2 + 0.5) / 2)
    assert r["Recall@10"] == pytest.approx(0.75) and r["steps"] == 2.5
    assert row("y", np.array([0, 1]), np.array([0, 10]))["NDCG@10"] == pytest.approx(0.5)  # one draw: plain ranks


def test_row_needs_one_user_per_column():
    with pytest.raises(ValueError, match=r"x: 3 users for ranks of shape \(2, 2\)"):
        row("x", np.array([0, 1, 2]), np.zeros((2, 2), np.int64))


def test_results_keep_per_user_metrics_and_pair_on_them(tmp_path):
    """The record pairs state-change halting with depth 4 per user; the per-user table is what compare_runs reads."""
    users = np.array([3, 5, 8])
    rows = [row("fixed_depth_4", users, np.array([0, 1, 20]), np.full(3, 4.0)),
            row("state-change halting", users, np.array([1, 1, 0]), np.array([2.0, 3.0, 3.0]))]
    split = SimpleNamespace(dataset=SimpleNamespace(summary=lambda: {"users": 3}))
    res = _finish("ml-100k", split, {"LARES-SPT": [], "LARES-SPT+RPT": []}, rows, {}, {"seed": 0}, tmp_path)
    (pair,) = res["paired"]
    ndcg_rank1 = 1 / np.log2(3)  # ranks 0 / 1 / >= 10 score 1 / 1/log2(3) / 0
    assert pair["NDCG@10_diff"] == pytest.approx(((ndcg_rank1 - 1) + 0 + 1) / 3)
    assert pair["steps_ratio"] == pytest.approx(8 / 3 / 4) and pair["users"] == 3
    assert all("per_user" not in r for r in res["rows"])
    table = load_per_user(tmp_path, "ml-100k")
    assert len(table) == 6 and list(table[table["policy"] == "fixed_depth_4"]["user"]) == [3, 5, 8]
    same = compare(table, table)
    assert list(same["A - B"]) == [0.0, 0.0] and list(same["users"]) == [3, 3]


def test_a_record_is_recomputed_from_its_per_user_table(tmp_path, monkeypatch):
    """Re-reading a run recomputes every CI from the per-user table by the current statistics, pairs by user."""
    users = np.arange(40)
    ranks = np.random.default_rng(0).integers(0, 30, size=(2, 40))
    order = np.random.default_rng(1).permutation(40)  # the same users in another order: pairing is by user
    rows = [row("fixed_depth_4", users, ranks[0], np.full(40, 4.0)),
            row("state-change halting", users[order], ranks[1][order], np.full(40, 2.0))]
    split = SimpleNamespace(dataset=SimpleNamespace(summary=lambda: {"users": 40}))
    res = _finish("ml-100k", split, {"LARES-SPT": [], "LARES-SPT+RPT": []}, rows, {}, {"seed": 0}, tmp_path)
    same = recompute_record(res, tmp_path)  # same statistics: the same record, up to the table's float32 text
    for key in ("NDCG@10", "NDCG@10_lo", "Recall@10_hi", "steps"):
        assert [r[key] for r in same["rows"]] == pytest.approx([r[key] for r in res["rows"]], rel=1e-6)
    for key in ("NDCG@10_diff", "lo", "hi", "steps_ratio"):
        assert same["paired"][0][key] == pytest.approx(res["paired"][0][key], rel=1e-6)
    monkeypatch.setattr(bench_lares, "mean_ci", lambda v: Interval(-1.0, -2.0, -0.5))
    monkeypatch.setattr(bench_lares, "paired_difference",  # position-wise, as the bootstrap pairs
                        lambda a, b: Interval(float(np.abs(np.asarray(a) - np.asarray(b)).sum()), 0.0, 0.0))
    again = recompute_record(res, tmp_path)
    assert again["rows"][0]["NDCG@10_lo"] == -2.0 and again["rows"][1]["Recall@10_hi"] == -0.5
    per_user = {name: bench_lares.ndcg_at_k(torch.as_tensor(r[None]), 10)[0].numpy() for name, r in
                (("depth 4", ranks[0]), ("rule", ranks[1]))}  # both indexed by user id
    expected = np.abs(per_user["rule"] - per_user["depth 4"]).sum()  # |differences| of the same users
    assert again["paired"][0]["NDCG@10_diff"] == pytest.approx(expected, rel=1e-5)
    assert again["paired"][0]["steps_ratio"] == 0.5
    with pytest.raises(FileNotFoundError, match="predates per-user tables"):
        recompute_record(res, tmp_path / "elsewhere")
    with pytest.raises(ValueError, match=r"no per-user metrics of \['PPO halting \(SB3\)'\]"):
        recompute_record({**res, "rows": res["rows"] + [{"policy": "PPO halting (SB3)"}]}, tmp_path)


def test_draw_seeds_keep_the_single_draw_seed():
    assert draw_seeds(3, 1) == [3] and draw_seeds(3, 3) == [3, 100_003, 200_003]


def test_traces_score_the_first_stop_and_force_the_last_depth():
    traces = _traces([[0.0, 0.5, 1.0], [0.2, 0.2, 0.0]])
    assert traces.score(np.array([[False, True, True], [False, False, False]])) == (0.25, 2.5, 2.5)


def test_traces_bound_the_mean_steps_over_users():
    """Rows are (user, draw): users 0 / 1 / 2 average 1.5 / 3 / 2 steps; the bound is mean + 1.6449 SE."""
    traces = _traces(np.tile([0.0, 0.1, 0.2], (6, 1)), users=[0, 1, 2, 0, 1, 2])  # deeper is better
    stop = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]], bool)
    _, steps, upper = traces.score(stop)
    per_user = np.array([1.5, 3.0, 2.0])
    assert steps == pytest.approx(per_user.mean())
    assert upper == pytest.approx(per_user.mean() + 1.6449 * per_user.std(ddof=1) / np.sqrt(3))
    # a budget between the mean and its bound is not met: the calibration keeps the bound within it
    p_stop = stop.astype(float)
    assert calibrate_stop_threshold(traces, p_stop, upper - 1e-9).steps < steps
    assert calibrate_stop_threshold(traces, p_stop, upper).steps == pytest.approx(steps)


# user 0's NDCG@10 per depth 0 / 0.5 / 1, user 1's 0.2 / 0.2 / 0; thresholds and where each user stops:
# 0.1: 1 / 1 (0.1); 0.2: 2 / 1 (0.35, 1.5 steps); 0.3: 2 / 1; 0.4: 3 / 1 (0.6, 2.0); 0.6: 3 / 1; 0.9: 3 / 3 (0.5, 3.0)
@pytest.mark.parametrize("budget, threshold, ndcg, steps", [
    (3.0, 0.4, 0.6, 2.0),  # the best NDCG; 0.6 reaches it too at the same steps, the first found is kept
    (1.5, 0.2, 0.35, 1.5),  # user 0 stops at depth 2 (0.3 >= 0.2), user 1 at depth 1
    (1.0, 0.1, 0.1, 1.0),  # everyone stops after the forced first step
])
def test_stop_threshold_is_the_best_ndcg_within_the_budget(budget, threshold, ndcg, steps):
    traces = _traces([[0.0, 0.5, 1.0], [0.2, 0.2, 0.0]])
    p_stop = np.array([[0.1, 0.3, 0.9], [0.6, 0.4, 0.2]])
    stop = calibrate_stop_threshold(traces, p_stop, budget, select="ndcg")
    assert (stop.threshold, stop.steps) == (threshold, steps) and stop.ndcg == pytest.approx(ndcg)


@pytest.mark.parametrize("budget, threshold, ndcg, steps", [
    (3.0, 0.9, 0.5, 3.0),  # every step, though 0.4 scores 0.6 at 2 steps
    (2.5, 0.4, 0.6, 2.0),  # the most steps within 2.5
    (1.9, 0.2, 0.35, 1.5),
])
def test_stop_threshold_spends_the_most_of_the_budget_by_default(budget, threshold, ndcg, steps):
    traces = _traces([[0.0, 0.5, 1.0], [0.2, 0.2, 0.0]])
    p_stop = np.array([[0.1, 0.3, 0.9], [0.6, 0.4, 0.2]])
    stop = calibrate_stop_threshold(traces, p_stop, budget)
    assert (stop.threshold, stop.steps) == (threshold, steps) and stop.ndcg == pytest.approx(ndcg)


def test_stop_threshold_rejects_bad_input():
    traces = _traces([[0.0, 0.5, 1.0]])
    with pytest.raises(ValueError, match=r"p_stop has shape \(1, 2\)"):
        calibrate_stop_threshold(traces, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="max_mean_steps = 0.5"):
        calibrate_stop_threshold(traces, np.zeros((1, 3)), 0.5)
    with pytest.raises(ValueError, match=r"select = 'recall' is invalid; allowed: one of \('steps', 'ndcg'\)"):
        calibrate_stop_threshold(traces, np.zeros((1, 3)), select="recall")


def test_held_out_traces_keep_the_fold_the_env_never_draws():
    traces = _traces(np.arange(12.0).reshape(6, 2), users=[0, 1, 2, 3, 4, 5])
    held = traces.held_out(LatentReasoningConfig(holdout_fold=1, n_folds=3))
    np.testing.assert_array_equal(held.users, [1, 4])
    np.testing.assert_array_equal(held.ndcg, [[2.0, 3.0], [8.0, 9.0]])
    assert held.obs.shape == (2, 2, 1) and held.state_change.shape == (2, 2)
    with pytest.raises(ValueError, match="holdout_fold = None"):
        traces.held_out(LatentReasoningConfig())
    with pytest.raises(ValueError, match="holdout_fold 6 of n_folds 7 holds out none"):
        traces.held_out(LatentReasoningConfig(holdout_fold=6, n_folds=7))


@pytest.mark.parametrize("field, value", [("ppo_timesteps", 0), ("rllib_iterations", -1), ("max_env_users", 0),
                                          ("step_cost", -0.1), ("shaping", "reward"), ("draws", 0),
                                          ("calibration_fold", 5), ("budget_select", "recall")])
def test_bench_settings_reject_bad_values_by_name(field, value):
    with pytest.raises(ValueError, match=f"{field} = {value!r} is invalid; allowed"):
        BenchSettings(**{field: value})


def test_bench_settings_take_one_row_set_at_a_time():
    assert BenchSettings(env_only=True).env_only and BenchSettings(models_only=True).models_only
    with pytest.raises(ValueError, match="env_only = True is invalid; allowed: False with models_only"):
        BenchSettings(env_only=True, models_only=True)


def test_bench_settings_record_what_changes_the_results():
    s = BenchSettings(seed=3, calibration_fold=3, observe_latent=True, budget_select="ndcg")
    assert {name: getattr(s, name) for name in s.RECORDED} == {
        "shaping": "potential", "seed": 3, "draws": 8, "observe_state_change": True, "observe_latent": True,
        "calibration_fold": 3, "budget_select": "ndcg"}
