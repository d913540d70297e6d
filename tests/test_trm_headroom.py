"""The headroom benchmark's closed-form episodes equal the env's episodes."""

from __future__ import annotations

import numpy as np

from benchmarks.bench_trm_headroom import UserBatch, learned_choice
from envs.trm_retrieval import TRMRetrievalEnv
from simulators.recsys.preference_trm import default_trm_world


def test_closed_form_ndcg_equals_env_episodes():
    world = default_trm_world()
    batch = UserBatch(world, "heldout", "test", max_users=12, weights=(0.5,))
    env = TRMRetrievalEnv(users="heldout", stage="test", ranker_preference_weight=0.5)
    for j, user in enumerate(batch.users.tolist()):
        for phrase in (0, 7):
            env.reset(seed=0, options={"user": user})
            env.step(env.PLAIN)
            env.step(phrase)
            _, _, done, _, info = env.step(env.STOP)
            assert done and np.isclose(info["kpis"]["NDCG@10"], batch.phrase[0.5][j, phrase])
        env.reset(seed=0, options={"user": user})
        env.step(env.PLAIN)
        _, _, _, _, info = env.step(env.STOP)
        assert np.isclose(info["kpis"]["NDCG@10"], batch.single[j])


def test_learned_choice_takes_the_plain_call_when_no_gain_is_predicted():
    world = default_trm_world()
    batch = UserBatch(world, "train", "valid", max_users=30, weights=(0.5,))
    batch.phrase[0.5][:] = batch.single[:, None] - 0.1  # every phrase loses: the fit predicts losses
    assert np.array_equal(learned_choice(batch, batch, 0.5), batch.single)
