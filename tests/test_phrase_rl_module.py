"""The RLlib phrase-scoring module: masks respected, phrase logits follow their phrase, trains and reloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from agents.phrase_rl_module import PhraseScoringRLModule
from agents.rllib_action_mask import ActionMaskObservation
from agents.train_rllib import RLlibTrainConfig, _algorithm_config, load_rllib_policy, train_rllib
from benchmarks.harness import run_episode
from envs.trm_retrieval import TRMRetrievalEnv
from tests.test_phrase_policy import phrase_permuted_pair

ENV_ID = "recrail/TRMRetrieval-v0"


@pytest.fixture(scope="module")
def env() -> ActionMaskObservation:
    return ActionMaskObservation(TRMRetrievalEnv(planner_knowledge=1.0))


def _module(env: ActionMaskObservation, seed: int = 0) -> PhraseScoringRLModule:
    torch.manual_seed(seed)
    return PhraseScoringRLModule(observation_space=env.observation_space, action_space=env.action_space,
                                 model_config=env.unwrapped.phrase_feature_layout())


def _batch(obs: np.ndarray, mask: np.ndarray) -> dict:
    return {Columns.OBS: {"observations": torch.as_tensor(obs), "action_mask": torch.as_tensor(mask)}}


def test_masked_actions_are_never_sampled_nor_chosen(env):
    module = _module(env)
    rng = np.random.default_rng(0)
    n = 64
    obs = rng.uniform(-1, 1, (n, env.observation_space["observations"].shape[0])).astype(np.float32)
    mask = (rng.random((n, env.action_space.n)) < 0.3).astype(np.float32)
    mask[np.arange(n), rng.integers(env.action_space.n, size=n)] = 1.0  # at least one valid action per row
    dist_cls = module.get_inference_action_dist_cls()
    with torch.no_grad():
        explore = module.forward_exploration(_batch(obs, mask))[Columns.ACTION_DIST_INPUTS]
        greedy = module.forward_inference(_batch(obs, mask))[Columns.ACTION_DIST_INPUTS]
    sampled = torch.stack([dist_cls.from_logits(explore).sample() for _ in range(50)]).numpy()  # [50, n]
    chosen = dist_cls.from_logits(greedy).to_deterministic().sample().numpy()
    assert mask[np.arange(n), sampled].all()
    assert mask[np.arange(n), chosen].all()
    # unmasked, the near-uniform initial policy would pick masked actions (~70% of them) all the time
    with torch.no_grad():
        free = module.forward_inference(_batch(obs, np.ones_like(mask)))[Columns.ACTION_DIST_INPUTS].argmax(1).numpy()
    assert not mask[np.arange(n), free].all()


def test_phrase_logits_follow_the_phrase_when_its_columns_move(env):
    module = _module(env)
    obs, moved, perm = phrase_permuted_pair(env.unwrapped, module.pi)
    V = len(perm)
    mask = np.ones((2, env.action_space.n), dtype=np.float32)
    with torch.no_grad():
        logits = module.forward_inference(_batch(np.stack([obs, moved]), mask))[Columns.ACTION_DIST_INPUTS].numpy()
    assert np.allclose(logits[1, :V], logits[0, :V][perm], atol=1e-5)
    assert np.ptp(logits[0, :V]) > 1e-3  # the scores do depend on the phrase's features


def test_bad_spaces_and_names_are_rejected(env):
    with pytest.raises(ValueError, match="action_mask"):
        PhraseScoringRLModule(observation_space=env.observation_space["observations"], action_space=env.action_space,
                              model_config=env.unwrapped.phrase_feature_layout())
    with pytest.raises(ValueError, match="phrase_feature_layout"):
        PhraseScoringRLModule(observation_space=env.observation_space, action_space=env.action_space, model_config={})
    with pytest.raises(ValueError, match="module 'nope'"):
        RLlibTrainConfig(module="nope")
    with pytest.raises(ValueError, match="phrase_feature_layout"):
        _algorithm_config("recrail/RailDisruption-v0", RLlibTrainConfig(module="phrase_scoring"))


def test_one_rllib_iteration_trains_acts_and_reloads(tmp_path):
    cfg = RLlibTrainConfig(algo="ppo", iterations=1, num_env_runners=0, module="phrase_scoring", progress=False,
                           training={"train_batch_size_per_learner": 64, "minibatch_size": 32, "num_epochs": 1},
                           env_kwargs={"config": {"planner_knowledge": 0.5}}, out_dir=tmp_path)
    policy = train_rllib(ENV_ID, cfg)
    assert isinstance(policy.module, PhraseScoringRLModule)
    loaded = load_rllib_policy(tmp_path)
    assert isinstance(loaded.module, PhraseScoringRLModule)
    env = TRMRetrievalEnv(planner_knowledge=0.5)
    for seed in range(3):
        env.reset(seed=seed)
        obs = env.episodes.obs[0].copy()
        for _ in range(env.config.max_calls):  # greedy actions stay valid: no repeated call, no early STOP
            action = policy.act(obs, env)
            assert env.action_masks()[action] and loaded.act(obs, env) == action
            obs, _, terminated, _, _ = env.step(action)
            if terminated:
                break
    assert np.isfinite(run_episode(env, policy, seed=7)["return"])
