"""The evaluation harness on a tiny deterministic env whose returns we know by hand."""

import json

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

from benchmarks.harness import evaluate_policies

TOY_ID = "recrail_test/Guess-v0"


class GuessEnv(gym.Env):
    """Three steps; reward 1 when the action equals the seeded coin, which the obs reveals."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.coin, self.t, self.hits = int(self.np_random.integers(2)), 0, 0
        return np.array([self.coin], np.float32), {}

    def step(self, action):
        self.t += 1
        hit = int(action == self.coin)
        self.hits += hit
        done = self.t == 3
        info = {"kpis": {"hit_rate": self.hits / 3}} if done else {}
        return np.array([self.coin], np.float32), float(hit), False, done, info


if TOY_ID not in gym.registry:
    gym.register(TOY_ID, entry_point=GuessEnv)


class Constant:
    def __init__(self, action):
        self.action, self.name = action, f"always_{action}"

    def reset(self, env, seed):
        pass

    def act(self, obs, env):
        return self.action


class Oracle:
    name = "oracle"

    def reset(self, env, seed):
        pass

    def act(self, obs, env):
        return int(obs[0])


def coins(n, seed):
    env = GuessEnv()
    return np.array([env.reset(seed=seed + i)[0][0] for i in range(n)])


def test_report_matches_hand_computed_returns_and_differences():
    n, seed = 12, 5
    report = evaluate_policies(
        TOY_ID, {"oracle": Oracle(), "always_1": Constant(1)}, n, seed=seed, reference="oracle", progress=False
    )
    expected_always_1 = 3.0 * coins(n, seed)  # three hits when the coin is 1, none otherwise
    rows = report.summary.set_index(["policy", "metric"])
    assert rows.loc[("oracle", "return"), "mean"] == pytest.approx(3.0)
    assert rows.loc[("always_1", "return"), "mean"] == pytest.approx(expected_always_1.mean())
    assert rows.loc[("always_1", "hit_rate"), "mean"] == pytest.approx(coins(n, seed).mean())
    assert rows.loc[("always_1", "return"), "diff"] == pytest.approx(expected_always_1.mean() - 3.0)
    assert rows.loc[("oracle", "return"), "diff"] == 0.0
    assert rows.loc[("oracle", "length"), "mean"] == 3.0
    low, high = rows.loc[("always_1", "return"), ["ci_low", "ci_high"]]
    assert low <= expected_always_1.mean() <= high
    assert list(report.episodes["seed"].unique()) == list(range(seed, seed + n))


def test_identical_policies_have_zero_paired_difference():
    report = evaluate_policies(TOY_ID, {"a": Constant(0), "b": Constant(0)}, 8, progress=False)
    b = report.summary[report.summary["policy"] == "b"]
    assert (b["diff"] == 0).all() and (b["diff_ci_low"] == 0).all() and (b["diff_ci_high"] == 0).all()


def test_write_produces_json_csv_markdown_and_png(tmp_path):
    report = evaluate_policies(TOY_ID, {"oracle": Oracle(), "always_0": Constant(0)}, 6, progress=False)
    paths = report.write(tmp_path)
    assert set(paths) == {"json", "csv", "md", "png"}
    payload = json.loads(paths["json"].read_text())
    assert payload["n_episodes"] == 6 and payload["reference"] == "oracle"
    assert set(pd.read_csv(paths["csv"])["metric"]) == {"return", "length", "hit_rate"}
    markdown = paths["md"].read_text()
    assert "Paired difference to `oracle`" in markdown and "always_0" in markdown
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class QuitEnv(GuessEnv):
    """Action 1 ends the episode with KPIs; action 0 never does (only a time limit truncates it)."""

    def step(self, action):
        obs, reward, _, _, _ = super().step(action)
        return obs, reward, action == 1, False, {"kpis": {"hit_rate": self.hits / self.t}} if action == 1 else {}


QUIT_ID = "recrail_test/Quit-v0"
if QUIT_ID not in gym.registry:
    gym.register(QUIT_ID, entry_point=QuitEnv)


def test_one_episode_and_a_policy_without_kpis_still_write_a_report(tmp_path):
    report = evaluate_policies(QUIT_ID, {"quit": Constant(1), "stay": Constant(0)}, 1,
                               env_kwargs={"max_episode_steps": 2}, progress=False)
    paths = report.write(tmp_path)

    def reject(token):
        raise ValueError(f"bare {token} in evaluation.json")

    payload = json.loads(paths["json"].read_text(), parse_constant=reject)  # strict JSON: NaN is null
    assert any(row["ci_low"] is None for row in payload["summary"])  # one episode: no CI
    assert "hit_rate" in paths["md"].read_text()  # "stay" never reported it: an empty cell, not a crash


class Unplayable:
    name = "unplayable"

    def reset(self, env, seed):
        pass

    def act(self, obs, env):
        raise AssertionError("an episode ran before the arguments were checked")


def test_unknown_reference_and_empty_inputs_are_errors():
    with pytest.raises(ValueError, match="reference policy 'nobody' is not among"):  # before any episode runs
        evaluate_policies(TOY_ID, {"a": Unplayable()}, 2, reference="nobody", progress=False)
    with pytest.raises(ValueError, match="episodes"):
        evaluate_policies(TOY_ID, {"a": Constant(0)}, 0, progress=False)
