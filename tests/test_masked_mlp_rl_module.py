"""The RLlib masked MLP module: per-component masks respected on MultiDiscrete, bad spaces named, trains and reloads."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from agents.masked_mlp_rl_module import MaskedMLPRLModule
from agents.rllib_action_mask import ActionMaskObservation, mask_size, with_action_mask
from agents.train_rllib import RLlibTrainConfig, _check_settings, load_rllib_policy, train_rllib
from envs.rail_disruption import RailDisruptionEnv

ENV_ID = "recrail/RailDisruption-v0"


@pytest.fixture(scope="module")
def env() -> ActionMaskObservation:
    return ActionMaskObservation(RailDisruptionEnv())


def _module(env: gym.Env, **model_config) -> MaskedMLPRLModule:
    torch.manual_seed(0)
    return MaskedMLPRLModule(observation_space=env.observation_space, action_space=env.action_space,
                             model_config=model_config)


def _batch(obs: np.ndarray, mask: np.ndarray) -> dict:
    return {Columns.OBS: {"observations": torch.as_tensor(obs), "action_mask": torch.as_tensor(mask)}}


def _allowed(mask: np.ndarray, actions: np.ndarray, nvec: np.ndarray) -> np.ndarray:
    """Whether every component's choice of each row's MultiDiscrete action is allowed by the flat mask."""
    offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
    return np.take_along_axis(mask, actions + offsets, axis=1).astype(bool).all(1)


def test_masked_choices_are_never_sampled_nor_chosen_in_any_component(env):
    module, nvec = _module(env), env.action_space.nvec
    rng = np.random.default_rng(0)
    n = 64
    obs = rng.uniform(0, 1, (n, env.observation_space["observations"].shape[0])).astype(np.float32)
    mask = (rng.random((n, mask_size(env.action_space))) < 0.4).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
    for c, k in enumerate(nvec):  # each component keeps at least one allowed choice
        mask[np.arange(n), offsets[c] + rng.integers(k, size=n)] = 1.0
    dist_cls = module.get_inference_action_dist_cls()
    with torch.no_grad():
        explore = module.forward_exploration(_batch(obs, mask))[Columns.ACTION_DIST_INPUTS]
        greedy = module.forward_inference(_batch(obs, mask))[Columns.ACTION_DIST_INPUTS]
        free = module.forward_inference(_batch(obs, np.ones_like(mask)))[Columns.ACTION_DIST_INPUTS]
    for _ in range(20):
        sampled = dist_cls.from_logits(explore).sample().numpy()
        assert sampled.shape == (n, len(nvec)) and _allowed(mask, sampled, nvec).all()
    assert _allowed(mask, dist_cls.from_logits(greedy).to_deterministic().sample().numpy(), nvec).all()
    # unmasked, the near-uniform initial policy picks forbidden choices (60% of each component's) in most rows
    assert _allowed(mask, dist_cls.from_logits(free).sample().numpy(), nvec).mean() < 0.5


def test_bad_spaces_and_settings_are_named(env):
    with pytest.raises(ValueError, match="action_mask"):
        MaskedMLPRLModule(observation_space=env.observation_space["observations"], action_space=env.action_space)
    with pytest.raises(ValueError, match=r"no settings \['hidens'\]; allowed: \['hiddens'\]"):
        _check_settings(ENV_ID, RLlibTrainConfig(module="masked_mlp", model={"hidens": [8]}))
    with pytest.raises(ValueError, match="cannot be masked"):
        mask_size(gym.spaces.Box(0, 1, (2,)))
    with pytest.raises(ValueError, match=r"need \(7,\)"):
        bad = gym.spaces.Dict({"action_mask": gym.spaces.Box(0, 1, (3,)), "observations": gym.spaces.Box(0, 1, (4,))})
        MaskedMLPRLModule(observation_space=bad, action_space=gym.spaces.Discrete(7))
    with pytest.raises(ValueError, match="has no action_masks"):
        ActionMaskObservation(gym.make("CartPole-v1"))
    rail = RailDisruptionEnv()
    rail.reset(seed=0)
    rail.action_masks = lambda: np.ones(27, bool)
    with pytest.raises(ValueError, match=r"gave 27 entries for MultiDiscrete\(\[5 2 5 2 5 2 5 2\]\); need 28"):
        with_action_mask(None, rail)
    rail.action_masks = lambda: np.r_[np.ones(7), np.zeros(5), np.ones(16)]  # route 1's modes all masked
    with pytest.raises(ValueError, match=r"no choice in component\(s\) \[2\]"):
        with_action_mask(None, rail)
    rail.action_masks = lambda: np.ones((4, 7), bool)  # sb3-contrib also takes a mask per component: flattened
    assert with_action_mask(None, rail)["action_mask"].shape == (28,)


def test_one_rllib_iteration_on_the_rail_env_trains_acts_and_reloads(tmp_path):
    cfg = RLlibTrainConfig(algo="ppo", iterations=1, num_env_runners=0, module="masked_mlp", progress=False,
                           training={"train_batch_size_per_learner": 64, "minibatch_size": 32, "num_epochs": 1},
                           out_dir=tmp_path)
    policy = train_rllib(ENV_ID, cfg)
    assert isinstance(policy.module, MaskedMLPRLModule) and policy.module.pi.out_features == 28  # 4 routes x (5 modes + 2 consists)
    loaded = load_rllib_policy(tmp_path)
    env = RailDisruptionEnv()
    obs, _ = env.reset(seed=3)
    for _ in range(10):  # greedy actions stay feasible, and the reloaded module acts alike
        action = policy.act(obs, env)
        assert env.action_space.contains(action)
        assert _allowed(env.action_masks()[None].astype(np.float32), action[None], env.action_space.nvec).all()
        assert np.array_equal(loaded.act(obs, env), action)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
