"""The phrase-scoring MaskablePPO policy: shared per-phrase scores, layout from the env, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.phrase_policy import PhraseScoringPolicy
from agents.train_sb3 import SB3TrainConfig, load_sb3_policy, train_sb3
from envs.trm_retrieval import TRMRetrievalEnv


def _policy(env: TRMRetrievalEnv) -> PhraseScoringPolicy:
    return PhraseScoringPolicy(env.observation_space, env.action_space, lambda _: 1e-3, **env.phrase_feature_layout())


def phrase_permuted_pair(env: TRMRetrievalEnv, head: torch.nn.Module) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep only ``head``'s shared per-phrase score (a ``PhraseHead``); return an observation after
    one call, the same observation with every phrase block's columns permuted, and the permutation."""
    for layer in (head.linear, head.state_proj):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    torch.nn.init.normal_(head.score[-1].weight)
    env.reset(seed=3)
    env.step(5)
    obs = env.episodes.obs[0].copy()
    layout = env.phrase_feature_layout()
    V = layout["n_phrases"]
    perm = np.random.default_rng(0).permutation(V)
    moved = obs.copy()
    for start in layout["phrase_blocks"]:
        moved[start : start + V] = obs[start : start + V][perm]
    return obs, moved, perm


def test_phrase_scores_follow_the_phrase_when_its_columns_move():
    env = TRMRetrievalEnv(planner_knowledge=1.0)
    torch.manual_seed(0)
    policy = _policy(env)
    obs, moved, perm = phrase_permuted_pair(env, policy.action_net)
    V = len(perm)
    with torch.no_grad():
        logits = [policy.get_distribution(torch.as_tensor(o[None])).distribution.logits[0, :V].numpy() for o in (obs, moved)]
    assert np.allclose(logits[1], logits[0][perm], atol=1e-5)
    assert np.ptp(logits[0]) > 1e-3  # the scores do depend on the phrase's features


def test_layout_errors_name_the_bad_value():
    env = TRMRetrievalEnv()
    with pytest.raises(ValueError, match="phrase_blocks"):
        PhraseScoringPolicy(env.observation_space, env.action_space, lambda _: 1e-3, n_phrases=env.V, phrase_blocks=[10_000])
    with pytest.raises(ValueError, match="n_phrases"):
        PhraseScoringPolicy(env.observation_space, env.action_space, lambda _: 1e-3, n_phrases=0, phrase_blocks=[0])


def test_train_save_load_and_wrong_env(tmp_path):
    cfg = SB3TrainConfig(algo="maskable_ppo", timesteps=256, n_envs=2, progress=False, out_dir=tmp_path,
                         hyperparams={"policy": "PhraseScoringPolicy", "n_steps": 128, "batch_size": 128})
    policy = train_sb3("recrail/TRMRetrieval-v0", cfg)
    loaded = load_sb3_policy(tmp_path / "model.zip")
    env = TRMRetrievalEnv()
    obs, _ = env.reset(seed=1)
    assert isinstance(loaded.model.policy, PhraseScoringPolicy)
    assert policy.act(obs, env) == loaded.act(obs, env)
    with pytest.raises(ValueError, match="phrase_feature_layout"):
        train_sb3("recrail/RailDisruption-v0", SB3TrainConfig(algo="maskable_ppo", timesteps=64, n_envs=1, progress=False,
                                                               hyperparams={"policy": "PhraseScoringPolicy"}))


def test_subprocess_vector_envs_import_recrail_and_give_the_layout():
    cfg = SB3TrainConfig(algo="maskable_ppo", timesteps=128, n_envs=2, vec_env="subproc", progress=False,
                         hyperparams={"policy": "PhraseScoringPolicy", "n_steps": 64, "batch_size": 64})
    policy = train_sb3("recrail/TRMRetrieval-v0", cfg)  # workers are fresh processes (forkserver/spawn)
    assert isinstance(policy.model.policy, PhraseScoringPolicy)
