"""The rail RL bench end to end at toy size: both trained agents are paired with the best baseline and each other."""

import json

from benchmarks import bench_rail_rl


def test_bench_pairs_both_agents_with_the_best_baseline_and_each_other(tmp_path):
    result = bench_rail_rl.run(tmp_path, timesteps=256, episodes=2, rllib_iterations=1)
    assert set(result["return_diff_vs_best"]) == {"maskable_ppo", "rllib_ppo"}
    returns = {r["policy"]: r for r in result["summary"] if r["metric"] == "return"}
    best = result["best_baseline"]
    for name, d in result["return_diff_vs_best"].items():  # a paired difference: mean of a - b over the episodes
        assert abs(d["mean"] - (returns[name]["mean"] - returns[best]["mean"])) < 1e-9
    framework = result["return_diff_rllib_vs_maskable"]
    assert abs(framework["mean"] - (returns["rllib_ppo"]["mean"] - returns["maskable_ppo"]["mean"])) < 1e-9
    text = bench_rail_rl.markdown(json.loads(json.dumps(result, default=float)))
    assert "RLlib PPO minus the best baseline" in text and "RLlib PPO minus MaskablePPO" in text
    assert "--rllib-iterations 1`" in text and "| invalid actions |" in text
