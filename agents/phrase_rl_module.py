"""The phrase-scoring actor-critic of :mod:`agents.phrase_policy` as an RLlib RLModule, with action masks.

RLlib's default PPO module is a plain MLP without masks: on ``recrail/TRMRetrieval-v0`` it spends
calls on repeated phrases and cannot learn "call the hinted phrase" (one output row per phrase).
This module is SB3's :class:`agents.phrase_policy.PhraseScoringPolicy` network on RLlib's new API
stack (torch, ``ValueFunctionAPI``, so PPO trains it), built from the same parts with the same
initialisation: a tanh MLP actor and critic ([64, 64] each), phrase logits from one scorer shared
by all phrases over each phrase's own observation columns, and the env's action mask applied to
the logits (masked actions get ``FLOAT_MIN``: never sampled, never the argmax).

The mask reaches the module inside the observation, as in RLlib's action-masking example: the
env runners make the env with :func:`masked_env`, whose :class:`ActionMaskObservation` wrapper
turns each observation into ``{"action_mask": env.action_masks(), "observations": obs}``, so the
mask travels through RLlib's episodes, connectors and train batches like any observation.

``model_config``: the env's ``phrase_feature_layout()`` (``n_phrases``, ``phrase_blocks``), and
optionally ``hiddens`` ([64, 64]), ``phrase_hidden`` (32) and ``state_dims`` (8). Used through
:mod:`agents.train_rllib` as ``RLlibTrainConfig(module="phrase_scoring")``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.torch_utils import FLOAT_MIN
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import MlpExtractor
from torch import nn

from agents.phrase_policy import PhraseHead, WithPhraseFeatures, check_phrase_layout

MASK_KEY, OBS_KEY = "action_mask", "observations"
DEFAULT_MODEL_CONFIG = {"hiddens": [64, 64], "phrase_hidden": 32, "state_dims": 8}  # PhraseScoringPolicy's


def with_action_mask(obs: Any, env: gym.Env) -> dict[str, Any]:
    """The masked observation of ``obs``: the env's current ``action_masks()`` beside it."""
    return {MASK_KEY: np.asarray(env.unwrapped.action_masks(), dtype=np.float32), OBS_KEY: obs}


class ActionMaskObservation(gym.ObservationWrapper):
    """Observations become ``{"action_mask": float32[n] of 0/1, "observations": obs}``."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        if not isinstance(env.action_space, gym.spaces.Discrete) or not callable(getattr(env.unwrapped, "action_masks", None)):
            raise ValueError(f"{env.unwrapped} has no action_masks() over a Discrete action space; "
                             "allowed: an env such as recrail/TRMRetrieval-v0")
        mask_space = gym.spaces.Box(0.0, 1.0, (int(env.action_space.n),), np.float32)
        self.observation_space = gym.spaces.Dict({MASK_KEY: mask_space, OBS_KEY: env.observation_space})

    def observation(self, observation: Any) -> dict[str, Any]:
        return with_action_mask(observation, self.env)


def masked_env(env_id: str, env_config: dict) -> ActionMaskObservation:
    """RLlib env creator (``partial(masked_env, "envs:<id>")``): ``gym.make`` plus the mask wrapper."""
    return ActionMaskObservation(gym.make(env_id, **env_config))


class PhraseScoringRLModule(TorchRLModule, ValueFunctionAPI):
    """PPO-ready phrase-scoring actor-critic over masked observations (module docstring)."""

    def setup(self) -> None:
        spaces = getattr(self.observation_space, "spaces", None) or {}
        if set(spaces) != {MASK_KEY, OBS_KEY}:
            raise ValueError(f"observation space {self.observation_space} is not allowed; allowed: a Dict with keys "
                             f"{MASK_KEY!r} and {OBS_KEY!r} (make the env with agents.phrase_rl_module.masked_env)")
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
