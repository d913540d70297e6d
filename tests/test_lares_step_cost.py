"""The step-cost chooser: its held-out fold, its multi-draw play and its choice rule."""

import numpy as np
import pytest

from benchmarks.bench_lares import BenchSettings, fixed_depth, env_episodes, observation_config
from benchmarks.lares_step_cost import choose, fold_users, parse_args, play
from envs.latent_reasoning import LatentReasoningVectorEnv


def test_fold_users_are_exactly_the_users_the_training_env_never_draws():
    config = {"holdout_fold": 2, "n_folds": 5}
    env = LatentReasoningVectorEnv(4, config)
    held = fold_users({}, 2, 5)
    trained = env.batch.eligible_users("valid")
    assert len(held) > 0 and not set(held) & set(trained)
    assert sorted(set(held) | set(trained)) == sorted(env.batch.split.users("valid"))


def test_play_averages_the_draws_of_each_user():
    """Two draws: the per-user mean of two seeded episode sets (seeds as play sets them)."""
    users = fold_users({}, 0, 5)[:20]
    ndcg, steps = play({}, users, fixed_depth(3), draws=2, seed=7)
    assert np.all(steps == 3)
    env = LatentReasoningVectorEnv(len(users), {"split": "valid"})
    ranks = [env_episodes(env, users, fixed_depth(3), seed=7 + 100_000 * r)[0] for r in (1, 2)]
    expected = np.mean([np.where(r < 10, 1 / np.log2(r + 2.0), 0.0) for r in ranks], axis=0)
    np.testing.assert_allclose(ndcg, expected)


@pytest.mark.parametrize(
    "rows, chosen, meets",
    [
        # the best difference within the budget wins, though a cheaper-steps cost scores worse
        ([{"cost": 0.001, "diff": 0.001, "steps_ratio": 0.8}, {"cost": 0.002, "diff": -0.001, "steps_ratio": 0.7},
          {"cost": 0.003, "diff": -0.004, "steps_ratio": 0.5}], 0.002, True),
        # none within the budget: the largest cost, flagged
        ([{"cost": 0.001, "diff": 0.0, "steps_ratio": 0.9}, {"cost": 0.002, "diff": -0.001, "steps_ratio": 0.75}],
         0.002, False),
    ],
)
def test_choose(rows, chosen, meets):
    assert choose(rows) == (chosen, meets)


def test_the_agents_observe_what_the_bench_agents_observe():
    """The cost is chosen for the bench's agents: same observation by default, and the same flags change it."""
    required = ["--dataset", "ml-100k", "--ckpt-dir", "ckpt", "--costs", "0.001"]
    assert observation_config(parse_args(required)) == observation_config(BenchSettings())
    flipped = parse_args(required + ["--observe-latent", "--no-observe-state-change"])
    assert observation_config(flipped) == {"observe_latent": True, "observe_state_change": False}
    with pytest.raises(SystemExit):
        parse_args(required + ["--draws", "0"])
