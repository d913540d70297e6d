"""Train a Stable-Baselines3 agent on a recrail environment.

Read top to bottom: validate the config, build a vectorised env, build the algorithm with the
config's hyperparameters, learn with checkpoints / TensorBoard / a progress bar, save, and return
a :class:`SB3Policy` that the evaluation harness can run.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

from agents.policy import METADATA_FILE, SB3_MODEL_FILE
from envs import bare_id  # importing envs registers the recrail ids in this process

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {
    "ppo": PPO,
    "maskable_ppo": MaskablePPO,
    "a2c": A2C,
    "dqn": DQN,
    "sac": SAC,
}
VEC_ENVS = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}
# Policies named in configs beyond SB3's own: name -> (class path, env method giving its layout kwargs)
CUSTOM_POLICIES = {"PhraseScoringPolicy": ("agents.phrase_policy:PhraseScoringPolicy", "phrase_feature_layout")}
NORMALIZER_FILE = "vecnormalize.pkl"  # the observation statistics of a `normalize_obs` run, beside model.zip


@dataclass(frozen=True)
class SB3TrainConfig:
    """What to train and how. ``hyperparams`` go to the SB3 algorithm's constructor as they are
    (``policy`` defaults to ``MlpPolicy``), e.g. ``{"n_steps": 256, "learning_rate": 3e-4}``."""

    algo: str = "ppo"
    timesteps: int = 50_000
    seed: int = 0
    n_envs: int = 4
    vec_env: str = "dummy"
    hyperparams: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    checkpoint_every: int = 0  # environment steps between checkpoints; 0 saves only the final model
    progress: bool = True
    # standardize observations with running mean/std (SB3's VecNormalize), frozen after training and
    # applied by the returned policy: features on very different scales otherwise slow MLP policies
    normalize_obs: bool = False

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHMS:
            raise ValueError(f"algo {self.algo!r} is not an SB3 algorithm; choose from {sorted(ALGORITHMS)}")
        if self.vec_env not in VEC_ENVS:
            raise ValueError(f"vec_env {self.vec_env!r} is not one of {sorted(VEC_ENVS)}")
        for name in ("timesteps", "n_envs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        # the constructor's own arguments, less those train_sb3 sets itself
        allowed = set(inspect.signature(ALGORITHMS[self.algo]).parameters) - {"env", "seed", "verbose", "tensorboard_log"}
        unknown = sorted(set(self.hyperparams) - allowed)
        if unknown:
            raise ValueError(f"{self.algo} has no hyperparameters {unknown}; allowed: {sorted(allowed)}")


class SB3Policy:
    """A trained SB3 model behind the :class:`agents.policy.Policy` interface (greedy actions);
    ``normalizer``: the frozen :class:`VecNormalize` of a ``normalize_obs`` run."""

    def __init__(self, model: BaseAlgorithm, name: str = "sb3", normalizer: VecNormalize | None = None) -> None:
        self.model = model
        self.name = name
        self.normalizer = normalizer
        self._masked = isinstance(model, MaskablePPO)

    def predict(self, obs: Any, **kwargs: Any) -> Any:
        """Greedy actions for one observation or a batch, normalized as in training."""
        if self.normalizer is not None:
            obs = self.normalizer.normalize_obs(obs)
        return self.model.predict(obs, deterministic=True, **kwargs)[0]

    def action_probabilities(self, obs: np.ndarray) -> np.ndarray:
        """P(action) (batch, n) of a Discrete-action policy for a batch of observations, normalized as in training."""
        if not isinstance(self.model.action_space, gym.spaces.Discrete) or self._masked:
            raise ValueError(f"action_probabilities needs an unmasked Discrete policy; {self.name} acts in "
                             f"{self.model.action_space}{' with masks' if self._masked else ''}")
        if self.normalizer is not None:
            obs = self.normalizer.normalize_obs(obs)
        with torch.no_grad():
            dist = self.model.policy.get_distribution(self.model.policy.obs_to_tensor(obs)[0])
        return dist.distribution.probs.cpu().numpy()

    def reset(self, env: gym.Env, seed: int | None) -> None:
        self.model.set_random_seed(seed)

    def act(self, obs: Any, env: gym.Env) -> Any:
        if self._masked:
            return self.predict(obs, action_masks=np.asarray(env.unwrapped.action_masks(), dtype=bool))
        return self.predict(obs)


def train_sb3(
    env_id: str, config: SB3TrainConfig, callbacks: list[BaseCallback] | None = None
) -> SB3Policy:
    """Train ``config.algo`` on ``env_id``; save ``model.zip`` (+ checkpoints, TensorBoard logs) in
    ``config.out_dir`` when given; return the trained policy."""
    algo_cls = ALGORITHMS[config.algo]
    vec_env = make_vec_env(
        f"envs:{bare_id(env_id)}",  # subprocess workers import recrail (and register the ids) themselves
        n_envs=config.n_envs,
        seed=config.seed,
        env_kwargs=config.env_kwargs,
        vec_env_cls=VEC_ENVS[config.vec_env],
    )
    if config.normalize_obs:
        vec_env = VecNormalize(vec_env, norm_obs=True, norm_reward=False)
    hyperparams = {"policy": "MlpPolicy", **config.hyperparams}
    if hyperparams["policy"] in CUSTOM_POLICIES:
        hyperparams.update(_custom_policy(hyperparams, vec_env, env_id))
    out = Path(config.out_dir) if config.out_dir is not None else None
    meta = {"backend": "sb3", "env_id": env_id, **asdict(config), "out_dir": str(out)}
    all_callbacks = list(callbacks or [])
    if out is not None and not config.normalize_obs:
        # statistics an earlier normalized run left in this folder would be applied to this run's models at load
        for stale in [out / NORMALIZER_FILE, *(out / "checkpoints").glob("*_vecnormalize_*_steps.pkl")]:
            stale.unlink(missing_ok=True)
    if out is not None and config.checkpoint_every:
        save_freq = max(config.checkpoint_every // config.n_envs, 1)
        # each checkpoint reloads like model.zip: the metadata beside it, its observation statistics with it
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out / "checkpoints" / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
        all_callbacks.append(CheckpointCallback(save_freq, str(out / "checkpoints"), name_prefix=config.algo,
                                                save_vecnormalize=config.normalize_obs))
    try:
        model = algo_cls(
            env=vec_env,
            seed=config.seed,
            verbose=0,
            tensorboard_log=str(out / "tensorboard") if out is not None else None,
            **hyperparams,
        )
    except AssertionError as err:  # SB3 asserts the spaces an algorithm supports
        vec_env.close()
        raise ValueError(f"{config.algo} cannot train on {env_id}: {err}") from None
    model.learn(total_timesteps=config.timesteps, callback=all_callbacks, progress_bar=config.progress)
    vec_env.close()
    normalizer = vec_env if config.normalize_obs else None
    if normalizer is not None:
        normalizer.training = False  # frozen statistics from here on
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / SB3_MODEL_FILE)
        if normalizer is not None:
            normalizer.save(out / NORMALIZER_FILE)
        (out / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return SB3Policy(model, name=config.algo, normalizer=normalizer)


def _custom_policy(hyperparams: dict[str, Any], vec_env, env_id: str) -> dict[str, Any]:
    """``policy`` and ``policy_kwargs`` for a :data:`CUSTOM_POLICIES` name, the layout asked from the env."""
    name = hyperparams["policy"]
    path, layout_method = CUSTOM_POLICIES[name]
    module, cls = path.split(":")
    if not vec_env.has_attr(layout_method):
        raise ValueError(f"policy {name!r} needs an env with {layout_method}() (recrail/TRMRetrieval-v0); {env_id} has none")
    layout = vec_env.env_method(layout_method, indices=0)[0]
    return {"policy": getattr(importlib.import_module(module), cls),
            "policy_kwargs": {**layout, **hyperparams.get("policy_kwargs", {})}}


def load_sb3_policy(path: Path | str, algo: str | None = None) -> SB3Policy:
    """Load an SB3 ``.zip``; the algorithm comes from ``algo`` or the metadata saved beside it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no SB3 model file at {path}")
    meta_file = path.parent / METADATA_FILE
    if algo is None and meta_file.is_file():
        algo = json.loads(meta_file.read_text())["algo"]
    if algo not in ALGORITHMS:
        raise ValueError(
            f"cannot tell which SB3 algorithm saved {path} (no {METADATA_FILE} beside it); "
            f"pass the algorithm, one of {sorted(ALGORITHMS)}"
        )
    normalizer = None
    # beside model.zip, or CheckpointCallback's own name for a checkpoint <algo>_<steps>_steps.zip
    prefix, _, steps = path.stem.removesuffix("_steps").rpartition("_")
    candidates = (path.with_name(f"{prefix}_vecnormalize_{steps}_steps.pkl"), path.parent / NORMALIZER_FILE)
    stats_file = next((f for f in candidates if f.is_file()), None)
    if stats_file is not None:  # VecNormalize.load wants an env; the statistics do not
        with stats_file.open("rb") as f:
            normalizer = pickle.load(f)
        normalizer.training = False  # evaluation never updates the statistics
    return SB3Policy(ALGORITHMS[algo].load(path, device="cpu"), name=algo, normalizer=normalizer)
