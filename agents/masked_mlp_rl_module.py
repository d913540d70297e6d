"""MaskablePPO's default network as an RLlib RLModule: a tanh MLP actor-critic with action masks.

RLlib's default PPO module has no action masks. On ``recrail/RailDisruption-v0`` (MultiDiscrete: a
service mode and a consist per route) it then spends its first 80k steps learning which actions are
feasible and scored below ``random`` (375 invalid actions per episode). This module is the network of
sb3-contrib's ``MaskablePPO("MlpPolicy")`` on RLlib's new API stack (torch, ``ValueFunctionAPI``, so
PPO trains it), with SB3's initialisation: separate tanh MLPs for actor and critic ([64, 64] each,
orthogonal, gain sqrt 2), a linear logit head (gain 0.01) and value head (gain 1). Masked logits get
``FLOAT_MIN``: never sampled, never the argmax, no gradient through them. Discrete actions use a
categorical distribution; MultiDiscrete ones one categorical per component (the mask is split the same
way; every component must keep at least one allowed choice, as for MaskablePPO).

The mask reaches the module inside the observation (:mod:`agents.rllib_action_mask`). ``model_config``:
optionally ``hiddens`` ([64, 64]). Used through :mod:`agents.train_rllib` as
``RLlibTrainConfig(module="masked_mlp")`` with any env that has ``action_masks()``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical, TorchMultiCategorical
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.torch_utils import FLOAT_MIN
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import MlpExtractor
from torch import nn

from agents.rllib_action_mask import MASK_KEY, OBS_KEY, check_masked_space, mask_size

DEFAULT_MODEL_CONFIG = {"hiddens": [64, 64]}  # SB3's MlpPolicy


class MaskedMLPRLModule(TorchRLModule, ValueFunctionAPI):
    """PPO-ready masked MLP actor-critic over masked observations (module docstring)."""

    def setup(self) -> None:
        spaces = check_masked_space(self.observation_space)
        cfg = {**DEFAULT_MODEL_CONFIG, **(self.model_config or {})}  # typos: agents.train_rllib checks the keys
        obs_space = spaces[OBS_KEY]
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise ValueError(f"observations {obs_space} are not allowed; allowed: a 1-D Box")
        n_logits = mask_size(self.action_space)
        if spaces[MASK_KEY].shape != (n_logits,):
            raise ValueError(f"action mask of shape {spaces[MASK_KEY].shape} for {self.action_space}; "
                             f"need ({n_logits},), one entry per action logit")
        hiddens = [int(h) for h in cfg["hiddens"]]
        self.extractor = MlpExtractor(int(obs_space.shape[0]), {"pi": hiddens, "vf": hiddens}, nn.Tanh, device="cpu")
        self.extractor.apply(partial(BasePolicy.init_weights, gain=np.sqrt(2)))
        self.pi = nn.Linear(self.extractor.latent_dim_pi, n_logits)
        self.vf = nn.Linear(self.extractor.latent_dim_vf, 1)
        BasePolicy.init_weights(self.pi, gain=0.01)
        BasePolicy.init_weights(self.vf, gain=1.0)
        if isinstance(self.action_space, gym.spaces.MultiDiscrete):
            self.action_dist_cls = TorchMultiCategorical.get_partial_dist_cls(
                input_lens=[int(n) for n in self.action_space.nvec])
        else:
            self.action_dist_cls = TorchCategorical

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        logits = self.pi(self.extractor.forward_actor(obs[OBS_KEY]))
        return {Columns.ACTION_DIST_INPUTS: logits.masked_fill(obs[MASK_KEY] < 0.5, FLOAT_MIN)}

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        out = self._forward(batch)
        out[Columns.EMBEDDINGS] = self.extractor.forward_critic(batch[Columns.OBS][OBS_KEY])  # reused by the value loss
        return out

    def compute_values(self, batch: dict[str, Any], embeddings: torch.Tensor | None = None) -> torch.Tensor:
        if embeddings is None:
            embeddings = self.extractor.forward_critic(batch[Columns.OBS][OBS_KEY])
        return self.vf(embeddings).squeeze(-1)
