"""The per-seed halting table: the issue's target, per row and run, and the calibration drop."""

import json

import pytest

from benchmarks.bench_lares import calibration_note
from benchmarks.halting_seeds import calibration_drop, load_record, met, table


def _pair(a: str, diff: float, lo: float, hi: float, ratio: float) -> dict:
    return {"a": a, "b": "fixed_depth_4", "NDCG@10_diff": diff, "lo": lo, "hi": hi, "steps_ratio": ratio}


@pytest.mark.parametrize("lo, hi, ratio, expected", [
    (-0.002, 0.001, 0.70, True),  # within the CI at the budget
    (0.001, 0.003, 0.5, True),  # above depth 4
    (-0.003, -0.0001, 0.5, False),  # below the CI
    (-0.002, 0.001, 0.7006, False),  # over the budget
])
def test_met_is_within_or_above_depth_4_at_the_budget(lo, hi, ratio, expected):
    assert met(_pair("x", 0.0, lo, hi, ratio)) is expected


def test_calibration_drop_reads_the_note_the_bench_writes():
    note = f"frozen SPT, env; stop at P(STOP) >= 0.400 ({calibration_note('held-out validation fold 3', 0.12, 2.7)})"
    assert calibration_drop({"note": note, "NDCG@10": 0.1}) == pytest.approx(0.02)
    assert calibration_drop({"note": "frozen SPT, env", "NDCG@10": 0.1}) is None


def test_table_counts_met_runs_and_lists_drops():
    rows = [{"policy": "state-change halting", "NDCG@10": 0.10,
             "note": f"; threshold 4.6 ({calibration_note('validation', 0.115, 2.7)})"},
            {"policy": "PPO halting (SB3)", "NDCG@10": 0.09, "note": "frozen SPT, env"}]
    good = {"seed": 3, "rows": rows, "paired": [_pair("state-change halting", -0.001, -0.003, 0.001, 0.69),
                                                _pair("PPO halting (SB3)", -0.004, -0.006, -0.001, 0.7004)]}
    close = {"seed": 5, "rows": rows, "paired": [_pair("state-change halting", -0.0001, -0.001, 0.001, 0.70004),
                                                 _pair("PPO halting (SB3)", -0.004, -0.006, -0.001, 0.7004)]}
    assert "(0.700040)" in table({"c": close})  # 0.7000 would read as within the budget
    text = table({"a": good, "b": dict(good, seed=4, budget_select="steps")})
    # a record without budget_select selected on NDCG@10
    assert "| a | 3 | ndcg | **-0.0010 [-0.0030, +0.0010] (0.69)** | -0.0040 [-0.0060, -0.0010] (0.7004) |" in text
    assert "| b | 4 | steps | **-0.0010" in text
    assert "| met | | | 2 of 2 | 0 of 2 |" in text and "| calibration - test NDCG@10 | | | 0.0150, 0.0150 |  |" in text


def test_load_record_names_the_missing_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="has neither lares.json nor lares_env.json"):
        load_record(tmp_path, "ml-100k")
    (tmp_path / "lares.json").write_text(json.dumps([{"dataset": "beauty"}]))
    with pytest.raises(ValueError, match=r"no 'ml-100k' results; it has \['beauty'\]"):
        load_record(tmp_path, "ml-100k")
    assert load_record(tmp_path, "beauty") == {"dataset": "beauty"}


def test_load_record_reads_an_env_only_run_and_prefers_the_full_record(tmp_path):
    (tmp_path / "lares_env.json").write_text(json.dumps([{"dataset": "beauty", "from": "env"}]))
    assert load_record(tmp_path, "beauty")["from"] == "env"
    (tmp_path / "lares.json").write_text(json.dumps([{"dataset": "beauty", "from": "full"}]))
    assert load_record(tmp_path, "beauty")["from"] == "full"
