"""Train an RLlib agent (new API stack: RLModule, Learner, EnvRunner) on a recrail environment.

Runs locally on the machine's CPUs by default and joins an existing Ray cluster with ``address``.
Env runners are separate processes: they build the env as ``gym.make("envs:<id>")``, which
imports and registers recrail there too. ``module`` names a custom RLModule of
:data:`CUSTOM_MODULES` instead of RLlib's default MLP: ``"masked_mlp"`` (MaskablePPO's MLP with the env's
action masks, :mod:`agents.masked_mlp_rl_module`, for any env with ``action_masks()``, e.g.
``recrail/RailDisruption-v0``) or ``"phrase_scoring"`` (the phrase-scoring PPO policy with action masks of
:mod:`agents.phrase_rl_module`, for ``recrail/TRMRetrieval-v0``).
``normalize_obs`` standardizes observations with RLlib's ``MeanStdFilter`` env-to-module connector (its
merge across remote env runners fixed: :mod:`agents.rllib_mean_std`); its statistics are frozen at the end
of training, kept in the checkpoint and applied by :class:`RLlibPolicy` (as SB3's ``VecNormalize`` is by
:class:`agents.train_sb3.SB3Policy`).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.progress import Progress

from agents.policy import METADATA_FILE

# algorithm name -> its AlgorithmConfig class, imported only when used (Ray is slow to import)
ALGORITHMS = {
    "ppo": "ray.rllib.algorithms.ppo:PPOConfig",
    "appo": "ray.rllib.algorithms.appo:APPOConfig",
    "dqn": "ray.rllib.algorithms.dqn:DQNConfig",
    "sac": "ray.rllib.algorithms.sac:SACConfig",
}
# RLModules named by `module`: name -> (class path, env method giving the layout put in its model_config, or
# None). They read masked observations, so their envs are made by `agents.rllib_action_mask.masked_env`.
CUSTOM_MODULES = {"phrase_scoring": ("agents.phrase_rl_module:PhraseScoringRLModule", "phrase_feature_layout"),
                  "masked_mlp": ("agents.masked_mlp_rl_module:MaskedMLPRLModule", None)}
MODULE_SUBPATH = Path("learner_group") / "learner" / "rl_module" / "default_policy"
CONNECTOR_SUBPATH = Path("env_runner") / "env_to_module_connector"
MEAN_STD_FILTER = "MeanStdFilter"  # the connector's name in its pipeline's state


@dataclass(frozen=True)
class RLlibTrainConfig:
    """``training`` goes to ``AlgorithmConfig.training`` as it is (e.g. ``lr``,
    ``train_batch_size_per_learner``); ``model`` to ``DefaultModelConfig`` (e.g. ``fcnet_hiddens``),
    or, with ``module`` (a :data:`CUSTOM_MODULES` name), to that module's ``model_config``;
    ``callbacks`` is an ``RLlibCallback`` subclass (e.g.
    :func:`agents.deeprec_curriculum.two_stage_rllib_callback`)."""

    algo: str = "ppo"
    iterations: int = 10
    num_env_runners: int = 2
    num_envs_per_env_runner: int = 1
    # how an env runner builds its num_envs_per_env_runner envs (a gymnasium.VectorizeMode value):
    # "vector_entry_point" uses the env's native batched VectorEnv (one torch call for all of them)
    vectorize: str = "sync"
    training: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    out_dir: Path | None = None
    address: str | None = None  # None: start Ray locally with this machine's CPUs
    progress: bool = True
    callbacks: type | None = None
    module: str | None = None  # None: the algorithm's default RLModule
    normalize_obs: bool = False  # RLlib's MeanStdFilter on the observations (running mean and std)
    # how long an iteration waits for the remote env runners' samples. None waits for all of them: a
    # run is then the same on a loaded machine. RLlib's default (60 s) drops the samples of a runner
    # that is slower than that, so the iteration trains on less data or on none. This happened on the
    # shared 2-core box: "No samples returned from remote workers", then a different agent.
    sample_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHMS:
            raise ValueError(f"algo {self.algo!r} is not an RLlib algorithm here; choose from {sorted(ALGORITHMS)}")
        if self.module is not None and self.module not in CUSTOM_MODULES:
            raise ValueError(f"module {self.module!r} is not a custom RLModule here; "
                             f"choose from None or {sorted(CUSTOM_MODULES)}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.num_env_runners < 0 or self.num_envs_per_env_runner < 1:
            raise ValueError(
                f"num_env_runners must be >= 0 and num_envs_per_env_runner >= 1, got "
                f"{self.num_env_runners} and {self.num_envs_per_env_runner}"
            )
        modes = [m.value for m in gym.VectorizeMode]
        if self.vectorize not in modes:
            raise ValueError(f"vectorize {self.vectorize!r} is not allowed; choose from {modes}")
        if self.module is not None and self.vectorize == "vector_entry_point":
            raise ValueError(f"vectorize 'vector_entry_point' is not allowed with module {self.module!r}, whose "
                             "env runners wrap masked scalar envs; choose 'sync' or 'async'")
        if self.sample_timeout_s is not None and not self.sample_timeout_s > 0:
            raise ValueError(f"sample_timeout_s {self.sample_timeout_s!r} is not allowed; choose None (wait for "
                             "every env runner) or a number of seconds > 0")
        if self.module is not None and self.normalize_obs:
            raise ValueError(f"normalize_obs is not allowed with module {self.module!r}, whose observations "
                             "carry action masks and layouts; use it with module None")


@dataclass(frozen=True)
class ObservationFilter:
    """The frozen statistics of RLlib's ``MeanStdFilter``: ``clip((obs - mean) / (std + 1e-6), +-clip)``."""

    mean: np.ndarray
    std: np.ndarray
    clip: float | None

    @classmethod
    def from_pipeline_state(cls, state: dict[str, Any]) -> ObservationFilter | None:
        """From an env-to-module pipeline's state; None when it has no ``MeanStdFilter``."""
        from ray.rllib.utils.filter import RunningStat

        if MEAN_STD_FILTER not in state:
            return None
        agent = state[MEAN_STD_FILTER][None]  # single-agent: the filter's key is the agent id None
        stats = RunningStat.from_state(agent["running_stats"][0])
        return cls(np.asarray(stats.mean, np.float32), np.asarray(stats.std, np.float32), agent["clip_by_value"])

    def __call__(self, obs: Any) -> np.ndarray:
        from ray.rllib.utils.numpy import SMALL_NUMBER

        x = (np.asarray(obs, dtype=np.float32) - self.mean) / (self.std + SMALL_NUMBER)
        return np.clip(x, -self.clip, self.clip) if self.clip else x


def _mean_std_filter(env: Any = None, spaces: Any = None, device: Any = None) -> Any:
    """The env-to-module connector of ``normalize_obs`` (RLlib passes the env, its spaces and the device)."""
    from agents.rllib_mean_std import MeanStdFilter

    return MeanStdFilter(multi_agent=False)


class RLlibPolicy:
    """An RLlib RLModule behind the :class:`agents.policy.Policy` interface (greedy actions);
    ``obs_filter``: the frozen observation statistics of a ``normalize_obs`` run."""

    def __init__(self, module: Any, name: str = "rllib", obs_filter: ObservationFilter | None = None) -> None:
        self.module = module
        self.name = name
        self.obs_filter = obs_filter
        self._dist_cls = module.get_inference_action_dist_cls()
        space = getattr(module, "observation_space", None)  # a masked module's: {"action_mask", "observations"}
        self._masked = isinstance(space, gym.spaces.Dict) and "action_mask" in space.spaces

    def reset(self, env: gym.Env, seed: int | None) -> None:
        if seed is not None:
            torch.manual_seed(seed)

    def predict(self, obs: Any) -> np.ndarray:
        """Greedy actions for a batch of observations (of a module without action masks), filtered as in training."""
        if self._masked:
            raise ValueError("predict takes plain observation batches; a masked module acts through act(obs, env)")
        if self.obs_filter is not None:
            obs = self.obs_filter(obs)
        return self._greedy(torch.as_tensor(np.asarray(obs, dtype=np.float32)))

    def action_probabilities(self, obs: np.ndarray) -> np.ndarray:
        """P(action) (batch, n) of a Discrete-action module without masks, for a batch of observations."""
        space = getattr(self.module, "action_space", None)
        if self._masked or not isinstance(space, gym.spaces.Discrete):
            raise ValueError(f"action_probabilities needs an unmasked Discrete module; {self.name} acts in {space}"
                             f"{' with masks' if self._masked else ''}")
        if self.obs_filter is not None:
            obs = self.obs_filter(obs)
        with torch.no_grad():
            out = self.module.forward_inference({"obs": torch.as_tensor(np.asarray(obs, dtype=np.float32))})
        return torch.softmax(out["action_dist_inputs"], -1).numpy()

    def act(self, obs: Any, env: gym.Env) -> Any:
        if self._masked:
            from agents.rllib_action_mask import with_action_mask

            masked = with_action_mask(obs, env)
            action = self._greedy({k: torch.as_tensor(np.asarray(v, np.float32)[None]) for k, v in masked.items()})[0]
        else:
            action = self.predict(np.asarray(obs)[None])[0]
        return action.item() if isinstance(env.action_space, gym.spaces.Discrete) else action

    def _greedy(self, obs: Any) -> np.ndarray:
        from ray.rllib.utils.spaces.space_utils import unsquash_action

        with torch.no_grad():
            out = self.module.forward_inference({"obs": obs})
        action = self._dist_cls.from_logits(out["action_dist_inputs"]).to_deterministic().sample().numpy()
        # as in training (RLlib's default normalize_actions=True): a Box action maps from [-1, 1] to the
        # space's bounds and is clipped there; Discrete actions pass unchanged
        return unsquash_action(action, self.module.action_space)


def _import(path: str) -> Any:
    module_name, attr = path.split(":")
    return getattr(importlib.import_module(module_name), attr)


def _algorithm_config(env_id: str, config: RLlibTrainConfig):
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    algo_config = _import(ALGORITHMS[config.algo])()
    if config.callbacks is not None:
        algo_config = algo_config.callbacks(config.callbacks)
    env: Any = f"envs:{env_id}"
    if config.module is None:
        module = {"model_config": DefaultModelConfig(**config.model)}
    else:
        from ray.tune.registry import register_env

        from agents.rllib_action_mask import mask_size, masked_env

        path, layout_method = CUSTOM_MODULES[config.module]
        probe = gym.make(env, **config.env_kwargs).unwrapped  # the layout is a property of the env's config
        for method in ("action_masks", layout_method):
            if method is not None and not callable(getattr(probe, method, None)):
                raise ValueError(f"module {config.module!r} needs an env with {method}(); {env_id} has none")
        mask_size(probe.action_space)  # a space that cannot be masked fails here, before Ray starts
        layout = getattr(probe, layout_method)() if layout_method else {}
        probe.close()
        module = {"rl_module_spec": RLModuleSpec(module_class=_import(path), model_config={**config.model, **layout})}
        # Ray's registry hands the creator (by reference: env runners import it and recrail themselves) to the runners.
        register_env(f"masked:{env}", partial(masked_env, env))
        env = f"masked:{env}"
    algo_config = (
        algo_config.environment(env, env_config=config.env_kwargs)
        .env_runners(
            num_env_runners=config.num_env_runners,
            num_envs_per_env_runner=config.num_envs_per_env_runner,
            gym_env_vectorize_mode=config.vectorize,
            sample_timeout_s=config.sample_timeout_s,
        )
        .training(**config.training)
        .rl_module(**module)
        .debugging(seed=config.seed)
    )
    if config.normalize_obs:
        algo_config = algo_config.env_runners(env_to_module_connector=_mean_std_filter)
    return algo_config


def _check_settings(env_id: str, config: RLlibTrainConfig) -> None:
    """Reject, before Ray starts, what would fail only once the cluster is up: ``training`` keys the algorithm's
    ``training()`` (over its class hierarchy) does not take, ``model`` keys the module does not have (RLlib's
    default model's, or a custom module's ``DEFAULT_MODEL_CONFIG``; the env's layout is not a setting), and the
    native vectorization for an env without a ``vector_entry_point``."""
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    import envs  # noqa: F401  (registers the ids the spec lookup needs)

    if config.vectorize == "vector_entry_point" and gym.spec(env_id).vector_entry_point is None:
        raise ValueError(f"vectorize 'vector_entry_point' needs a native vector env; {env_id} has none: "
                         "choose 'sync' or 'async'")
    if config.module is None:
        model_keys = {f.name for f in fields(DefaultModelConfig)}
    else:  # a custom module's settings: its DEFAULT_MODEL_CONFIG (RLlib adds keys of its own, so it cannot check)
        model_keys = set(importlib.import_module(CUSTOM_MODULES[config.module][0].split(":")[0]).DEFAULT_MODEL_CONFIG)
    unknown_model = sorted(set(config.model) - model_keys)
    if unknown_model:
        raise ValueError(f"rllib model has no settings {unknown_model}; allowed: {sorted(model_keys)}")
    cls = _import(ALGORITHMS[config.algo])
    allowed = {name for klass in cls.__mro__ if "training" in vars(klass)
               for name in inspect.signature(vars(klass)["training"]).parameters} - {"self", "kwargs"}
    unknown = sorted(set(config.training) - allowed)
    if unknown:
        raise ValueError(f"rllib {config.algo} has no training settings {unknown}; allowed: {sorted(allowed)}")


def train_rllib(env_id: str, config: RLlibTrainConfig) -> RLlibPolicy:
    """Train for ``config.iterations`` iterations; save a checkpoint in ``config.out_dir``."""
    import ray
    from ray.rllib.core import COMPONENT_ENV_TO_MODULE_CONNECTOR

    _check_settings(env_id, config)  # before Ray starts: a typo fails in a second, not after the cluster is up
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
                sampled = runners.get("num_env_steps_sampled_lifetime", 0)
                if sampled == (history[-1]["num_env_steps_sampled_lifetime"] if history else 0):
                    # Env runners past sample_timeout_s are dropped silently; training on no new data is not training.
                    warnings.warn(
                        f"rllib iteration {len(history) + 1} sampled no new env steps (lifetime {sampled}); "
                        "the env runners may be starved of CPU (sample_timeout_s "
                        f"{config.sample_timeout_s}) or failing",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                history.append({"episode_return_mean": runners.get("episode_return_mean"),
                                "num_env_steps_sampled_lifetime": sampled})
                bar.advance(task)
        module = algo.get_module()
        # the local env runner holds the filter statistics merged from all env runners
        runner_state = algo.env_runner.get_state(components=COMPONENT_ENV_TO_MODULE_CONNECTOR)
        obs_filter = ObservationFilter.from_pipeline_state(runner_state[COMPONENT_ENV_TO_MODULE_CONNECTOR])
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
    return RLlibPolicy(module, name=f"rllib_{config.algo}", obs_filter=obs_filter)


def load_rllib_policy(checkpoint: Path | str) -> RLlibPolicy:
    """Load the RLModule of an RLlib algorithm checkpoint folder (or of a module folder), with the
    frozen observation filter of a ``normalize_obs`` run."""
    from ray.rllib.connectors.env_to_module.env_to_module_pipeline import EnvToModulePipeline
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = Path(checkpoint).resolve()
    if (path / "checkpoint").is_dir():
        path = path / "checkpoint"  # the run folder that `train_rllib` wrote
    module_path = path / MODULE_SUBPATH if (path / MODULE_SUBPATH).is_dir() else path
    if not module_path.is_dir():
        raise FileNotFoundError(f"no RLlib checkpoint folder at {checkpoint}")
    # a module folder inside an algorithm checkpoint: the filter lives in that checkpoint's env runner
    depth = len(MODULE_SUBPATH.parts)
    root = module_path.parents[depth - 1] if module_path.parts[-depth:] == MODULE_SUBPATH.parts else path
    obs_filter = None
    if (root / CONNECTOR_SUBPATH).is_dir():
        pipeline = EnvToModulePipeline.from_checkpoint(str(root / CONNECTOR_SUBPATH))
        obs_filter = ObservationFilter.from_pipeline_state(pipeline.get_state())
    return RLlibPolicy(RLModule.from_checkpoint(str(module_path)), name="rllib", obs_filter=obs_filter)
