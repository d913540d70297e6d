"""Trained agents act as in training: RLlib's Box actions are unsquashed and clipped like its env runners do."""

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.models.torch.torch_distributions import TorchDiagGaussian

from agents.train_rllib import RLlibPolicy


class GaussianModule:
    """The parts of an RLModule RLlibPolicy uses: a diagonal Gaussian whose mean is ``mean``."""

    def __init__(self, mean: list[float], action_space: gym.spaces.Box) -> None:
        self.mean = torch.tensor([mean])
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = action_space

    def get_inference_action_dist_cls(self):
        return TorchDiagGaussian

    def forward_inference(self, batch):
        n = len(batch["obs"])
        return {"action_dist_inputs": torch.cat([self.mean.repeat(n, 1), torch.zeros(n, self.mean.shape[1])], 1)}


def test_rllib_box_actions_are_unsquashed_to_the_bounds_and_clipped():
    unit = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    policy = RLlibPolicy(GaussianModule([0.5, 1.7], unit))
    np.testing.assert_allclose(policy.predict(np.zeros((4, 3))), [[0.5, 1.0]] * 4)  # 1.7 would leave the space
    wide = gym.spaces.Box(np.array([0.0, -10.0], np.float32), np.array([10.0, 10.0], np.float32))
    action = RLlibPolicy(GaussianModule([0.0, -0.5], wide)).predict(np.zeros((1, 3)))[0]
    np.testing.assert_allclose(action, [5.0, -5.0])  # [-1, 1] maps onto [low, high], as in training
    assert wide.contains(action.astype(np.float32))
