"""Train an RLlib agent (new API stack: RLModule, Learner, EnvRunner) on a recrail environment.

Runs locally on the machine's CPUs by default and joins an existing Ray cluster with ``address``.
Env runners are separate processes: they build the env as ``gym.make("envs:<id>")``, which
imports and registers recrail there too.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.progress import Progress

# algorithm name -> its AlgorithmConfig class, imported only when used (Ray is slow to import)
ALGORITHMS = {
    "ppo": "ray.rllib.algorithms.ppo:PPOConfig",
    "appo": "ray.rllib.algorithms.appo:APPOConfig",
    "dqn": "ray.rllib.algorithms.dqn:DQNConfig",
    "sac": "ray.rllib.algorithms.sac:SACConfig",
}
METADATA_FILE = "recrail.json"
MODULE_SUBPATH = Path("learner_group") / "learner" / "rl_module" / "default_policy"


@dataclass(frozen=True)
class RLlibTrainConfig:
    """``training`` goes to ``AlgorithmConfig.training`` as it is (e.g. ``lr``,
    ``train_batch_size_per_learner``); ``model`` to ``DefaultModelConfig`` (e.g. ``fcnet_hiddens``);
    ``callbacks`` is an ``RLlibCallback`` subclass (e.g.
    :func:`agents.deeprec_curriculum.two_stage_rllib_callback`)."""

    algo: str = "ppo"
    iterations: int = 10
    num_env_runners: int = 2
    num_envs_per_env_runner: int = 1
    training: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    out_dir: Path | None = None
    address: str | None = None  # None: start Ray locally with this machine's CPUs
    progress: bool = True
    callbacks: type | None = None

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHMS:
            raise ValueError(f"algo {self.algo!r} is not an RLlib algorithm here; choose from {sorted(ALGORITHMS)}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.num_env_runners < 0 or self.num_envs_per_env_runner < 1:
            raise ValueError(
                f"num_env_runners must be >= 0 and num_envs_per_env_runner >= 1, got "
                f"{self.num_env_runners} and {self.num_envs_per_env_runner}"
            )


class RLlibPolicy:
    """An RLlib RLModule behind the :class:`agents.policy.Policy` interface (greedy actions)."""

    def __init__(self, module: Any, name: str = "rllib") -> None:
        self.module = module
        self.name = name
        self._dist_cls = module.get_inference_action_dist_cls()

    def reset(self, env: gym.Env, seed: int | None) -> None:
        if seed is not None:
            torch.manual_seed(seed)

    def act(self, obs: Any, env: gym.Env) -> Any:
        batch = {"obs": torch.as_tensor(np.asarray(obs, dtype=np.float32)[None])}
        with torch.no_grad():
            out = self.module.forward_inference(batch)
        dist = self._dist_cls.from_logits(out["action_dist_inputs"]).to_deterministic()
        action = dist.sample()[0].numpy()
        return action.item() if isinstance(env.action_space, gym.spaces.Discrete) else action


def _algorithm_config(env_id: str, config: RLlibTrainConfig):
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    module_name, class_name = ALGORITHMS[config.algo].split(":")
    algo_config = getattr(importlib.import_module(module_name), class_name)()
    if config.callbacks is not None:
        algo_config = algo_config.callbacks(config.callbacks)
    return (
        algo_config.environment(f"envs:{env_id}", env_config=config.env_kwargs)
        .env_runners(
            num_env_runners=config.num_env_runners,
            num_envs_per_env_runner=config.num_envs_per_env_runner,
        )
        .training(**config.training)
        .rl_module(model_config=DefaultModelConfig(**config.model))
        .debugging(seed=config.seed)
    )


def train_rllib(env_id: str, config: RLlibTrainConfig) -> RLlibPolicy:
    """Train for ``config.iterations`` iterations; save a checkpoint in ``config.out_dir``."""
    import ray

    started_ray = not ray.is_initialized()
    if started_ray:
        # Driver and workers import recrail from the same source tree.
        env_vars = {"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))}
        ray.init(
            address=config.address,
            num_cpus=None if config.address else os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": env_vars},
        )
    try:
        algo = _algorithm_config(env_id, config).build_algo()
        history = []
        with Progress(disable=not config.progress) as bar:
            task = bar.add_task(f"rllib {config.algo} on {env_id}", total=config.iterations)
            for _ in range(config.iterations):
                result = algo.train()
                runners = result.get("env_runners", {})
                sampled = runners.get("num_env_steps_sampled_lifetime")
                if history and sampled is not None and sampled == history[-1]["num_env_steps_sampled_lifetime"]:
                    # Starved env runners can time out silently; training on no new data is not training.
                    warnings.warn(
                        f"rllib iteration {len(history) + 1} sampled no new env steps (lifetime {sampled}); "
                        "the env runners may be starved of CPU or failing",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                history.append({"episode_return_mean": runners.get("episode_return_mean"),
                                "num_env_steps_sampled_lifetime": sampled})
                bar.advance(task)
        module = algo.get_module()
        if config.out_dir is not None:
            out = Path(config.out_dir)
            checkpoint = algo.save_to_path(str((out / "checkpoint").resolve()))
            meta = {"backend": "rllib", "env_id": env_id, **asdict(config), "out_dir": str(out),
                    "checkpoint": str(checkpoint), "history": history}
            (out / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
        algo.stop()
    finally:
        if started_ray:
            ray.shutdown()
    return RLlibPolicy(module, name=f"rllib_{config.algo}")


def load_rllib_policy(checkpoint: Path | str) -> RLlibPolicy:
    """Load the RLModule of an RLlib algorithm checkpoint folder (or of a module folder)."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = Path(checkpoint).resolve()
    if (path / "checkpoint").is_dir():
        path = path / "checkpoint"  # the run folder that `train_rllib` wrote
    module_path = path / MODULE_SUBPATH if (path / MODULE_SUBPATH).is_dir() else path
    if not module_path.is_dir():
        raise FileNotFoundError(f"no RLlib checkpoint folder at {checkpoint}")
    return RLlibPolicy(RLModule.from_checkpoint(str(module_path)), name="rllib")
