"""The latent-steering benchmark: its reference is the plain model, its play pairs draws, its differences by hand."""

import numpy as np
import pandas as pd
import pytest
import torch

from agents.baselines.latent_reasoning import draw_seeds
from benchmarks.bench_lares import env_draws, fixed_depth
from benchmarks.lares_residual import REFERENCE, parse_args, play, random_refinement, summarize, zero_refinement
from envs.latent_reasoning import LatentReasoningVectorEnv
from simulators.recsys.metrics import ndcg_at_k

RESIDUAL = {"action_mode": "residual", "residual_dim": 8, "observe_latent": True}


def test_zero_refinement_is_the_model_at_depth_4_with_the_same_noise():
    """The reference row is fixed depth 4 in halt mode, user by user and draw by draw; a random
    refinement on the same draws moves some rankings."""
    seeds = draw_seeds(3, 2)
    per_user = play(RESIDUAL, {REFERENCE: zero_refinement(8), "random": random_refinement(8)}, seeds, batch=256)
    halt = LatentReasoningVectorEnv(256, {"split": "test"})
    users = halt.batch.split.users("test")
    ranks = torch.as_tensor(env_draws(halt, users, fixed_depth(4), seeds)[0])
    zero = per_user[per_user.policy == REFERENCE]
    np.testing.assert_array_equal(zero.user, users)
    np.testing.assert_allclose(zero["NDCG@10"], ndcg_at_k(ranks, 10).mean(0).numpy())
    random = per_user[per_user.policy == "random"]
    assert not np.array_equal(random["NDCG@10"].to_numpy(), zero["NDCG@10"].to_numpy())


def test_summarize_pairs_each_policy_with_the_reference():
    per_user = pd.DataFrame({"policy": [REFERENCE] * 3 + ["PPO"] * 3, "user": [4, 7, 9, 9, 4, 7],
                             "NDCG@10": [0.5, 0.0, 1.0, 1.0, 0.8, 0.3], "Recall@10": [1.0, 0.0, 1.0, 1.0, 1.0, 1.0]})
    rows = {r["policy"]: r for r in summarize(per_user)}
    assert "NDCG@10_diff" not in rows[REFERENCE]
    # paired by user, not by position: users 4, 7, 9 gain 0.3, 0.3, 0.0 (by position: 0.5, 0.8, -0.7)
    assert rows["PPO"]["NDCG@10_diff"] == pytest.approx(0.2)
    assert 0.0 <= rows["PPO"]["NDCG@10_diff_lo"] <= rows["PPO"]["NDCG@10_diff_hi"] <= 0.3 + 1e-12
    assert rows["PPO"]["Recall@10_diff"] == pytest.approx(1 / 3)
    assert rows["PPO"]["NDCG@10"] == pytest.approx(0.7)


def test_bad_arguments_are_refused():
    required = ["--dataset", "ml-100k", "--ckpt-dir", "ckpt"]
    assert parse_args(required).scales == [0.5]
    for bad in (["--scales", "1", "0"], ["--draws", "0"], ["--dim", "0"]):
        with pytest.raises(SystemExit):
            parse_args(required + bad)
