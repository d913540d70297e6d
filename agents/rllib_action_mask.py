"""Action masks for RLlib: the env's ``action_masks()`` carried inside the observation.

RLlib's new API stack has no ``action_masks()`` hook (sb3-contrib's MaskablePPO has one). As in RLlib's
action-masking example, the env runners make each env with :func:`masked_env`, whose
:class:`ActionMaskObservation` wrapper turns every observation into
``{"action_mask": float32 0/1 per action logit, "observations": obs}``; the mask then travels through
RLlib's episodes, connectors and train batches like any observation, and a masked RLModule
(:mod:`agents.masked_mlp_rl_module`, :mod:`agents.phrase_rl_module`) sets the logits of masked actions
to ``FLOAT_MIN``. Discrete spaces have one mask entry per action; MultiDiscrete spaces one per choice of
every component, concatenated in component order (MaskablePPO's layout, and the order of RLlib's
MultiCategorical logits).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

MASK_KEY, OBS_KEY = "action_mask", "observations"


def mask_size(space: gym.Space) -> int:
    """Mask entries (= action logits) of a Discrete or MultiDiscrete space; other spaces are an error."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.MultiDiscrete) and space.nvec.ndim == 1:
        return int(space.nvec.sum())
    raise ValueError(f"action space {space} cannot be masked; allowed: Discrete or a 1-D MultiDiscrete")


def component_starts(space: gym.Space) -> np.ndarray:
    """Where each component's entries start in the flat mask (one component for Discrete)."""
    mask_size(space)  # fails on a space that cannot be masked
    sizes = space.nvec if isinstance(space, gym.spaces.MultiDiscrete) else [space.n]
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)


def with_action_mask(obs: Any, env: gym.Env, starts: np.ndarray | None = None) -> dict[str, Any]:
    """The masked observation of ``obs``: the env's current ``action_masks()`` (flattened) beside it;
    ``starts``: :func:`component_starts` of the env's action space, if known. A mask of the wrong size, or
    one leaving a component no allowed choice, is an error: RLlib would sample a masked action from it
    without a word."""
    space = env.unwrapped.action_space
    starts = component_starts(space) if starts is None else starts
    mask = np.asarray(env.unwrapped.action_masks(), dtype=np.float32).reshape(-1)
    if mask.size != mask_size(space):
        raise ValueError(f"action_masks() gave {mask.size} entries for {space}; need {mask_size(space)}, "
                         "one per action (per choice of every component)")
    empty = np.flatnonzero(np.maximum.reduceat(mask, starts) < 0.5)
    if empty.size:
        raise ValueError(f"action_masks() allows no choice in component(s) {empty.tolist()} of {space}; "
                         "every component needs at least one")
    return {MASK_KEY: mask, OBS_KEY: obs}


class ActionMaskObservation(gym.ObservationWrapper):
    """Observations become ``{"action_mask": float32[n] of 0/1, "observations": obs}``."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        if not callable(getattr(env.unwrapped, "action_masks", None)):
            raise ValueError(f"{env.unwrapped} has no action_masks(); allowed: an env with one, such as "
                             "recrail/TRMRetrieval-v0 or recrail/RailDisruption-v0")
        self._starts = component_starts(env.action_space)  # once, not on every step
        mask_space = gym.spaces.Box(0.0, 1.0, (mask_size(env.action_space),), np.float32)
        self.observation_space = gym.spaces.Dict({MASK_KEY: mask_space, OBS_KEY: env.observation_space})

    def observation(self, observation: Any) -> dict[str, Any]:
        return with_action_mask(observation, self.env, self._starts)


def masked_env(env_id: str, env_config: dict) -> ActionMaskObservation:
    """RLlib env creator (``partial(masked_env, "envs:<id>")``): ``gym.make`` plus the mask wrapper."""
    return ActionMaskObservation(gym.make(env_id, **env_config))


def check_masked_space(space: gym.Space) -> dict[str, gym.Space]:
    """The ``{"action_mask", "observations"}`` subspaces of a masked module's observation space."""
    spaces = getattr(space, "spaces", None) or {}
    if set(spaces) != {MASK_KEY, OBS_KEY}:
        raise ValueError(f"observation space {space} is not allowed; allowed: a Dict with keys {MASK_KEY!r} and "
                         f"{OBS_KEY!r} (make the env with agents.rllib_action_mask.masked_env)")
    return spaces
