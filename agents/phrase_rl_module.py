"""The phrase-scoring actor-critic of :mod:`agents.phrase_policy` as an RLlib RLModule, with action masks.

RLlib's default PPO module is a plain MLP without masks: on ``recrail/TRMRetrieval-v0`` it spends
calls on repeated phrases and cannot learn "call the hinted phrase" (one output row per phrase).
This module is SB3's :class:`agents.phrase_policy.PhraseScoringPolicy` network on RLlib's new API
stack (torch, ``ValueFunctionAPI``, so PPO trains it), built from the same parts with the same
initialisation: a tanh MLP actor and critic ([64, 64] each), phrase logits from one scorer shared
by all phrases over each phrase's own observation columns, and the env's action mask applied to
the logits (masked actions get ``FLOAT_MIN``: never sampled, never the argmax).

The mask reaches the module inside the observation (:mod:`agents.rllib_action_mask`).

``model_config``: the env's ``phrase_feature_layout()`` (``n_phrases``, ``phrase_blocks``), and
optionally ``hiddens`` ([64, 64]), ``phrase_hidden`` (32) and ``state_dims`` (8). Used through
:mod:`agents.train_rllib` as ``RLlibTrainConfig(module="phrase_scoring")``.
"""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import MlpExtractor
from torch import nn

from agents.masked_mlp_rl_module import MaskedMLPRLModule
from agents.phrase_policy import PhraseHead, WithPhraseFeatures, check_phrase_layout
from agents.rllib_action_mask import OBS_KEY, check_masked_space

DEFAULT_MODEL_CONFIG = {"hiddens": [64, 64], "phrase_hidden": 32, "state_dims": 8}  # PhraseScoringPolicy's


class PhraseScoringRLModule(MaskedMLPRLModule):
    """PPO-ready phrase-scoring actor-critic over masked observations (module docstring); the masked
    forward passes and value head are :class:`agents.masked_mlp_rl_module.MaskedMLPRLModule`'s."""

    def setup(self) -> None:
        spaces = check_masked_space(self.observation_space)
        if not isinstance(self.action_space, gym.spaces.Discrete):
            raise ValueError(f"action space {self.action_space} is not allowed; allowed: Discrete (a call per phrase)")
        cfg = {**DEFAULT_MODEL_CONFIG, **(self.model_config or {})}
        missing = [k for k in ("n_phrases", "phrase_blocks") if k not in cfg]
        if missing:
            raise ValueError(f"model_config lacks {missing}; give the env's phrase_feature_layout() in model_config")
        obs_dim, n_actions = int(spaces[OBS_KEY].shape[0]), int(self.action_space.n)
        n_phrases, blocks = int(cfg["n_phrases"]), [int(b) for b in cfg["phrase_blocks"]]
        check_phrase_layout(obs_dim, n_actions, n_phrases, blocks)
        hiddens = list(cfg["hiddens"])
        inner = MlpExtractor(obs_dim, {"pi": hiddens, "vf": hiddens}, nn.Tanh, device="cpu")
        self.extractor = WithPhraseFeatures(inner, n_phrases, blocks)
        self.extractor.apply(partial(BasePolicy.init_weights, gain=np.sqrt(2)))  # SB3's ortho init gains
        self.pi = PhraseHead(inner.latent_dim_pi, n_phrases, len(blocks), n_actions, int(cfg["phrase_hidden"]),
                             int(cfg["state_dims"]))
        self.vf = nn.Linear(self.extractor.latent_dim_vf, 1)
        BasePolicy.init_weights(self.vf, gain=1.0)
