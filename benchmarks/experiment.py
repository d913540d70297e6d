"""Experiment config files: ``benchmarks/configs/<Name>-v0.yaml``, one per environment.

A file holds the env's kwargs (training and held-out evaluation), the ``make demo`` budget, and
per backend and algorithm the hyperparameters, in the spirit of rl-baselines3-zoo. See
CONTRIBUTING.md for the schema. Unknown keys are errors, so a typo never silently falls back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from agents.train_rllib import ALGORITHMS as RLLIB_ALGORITHMS
from agents.train_rllib import RLlibTrainConfig
from agents.train_sb3 import ALGORITHMS as SB3_ALGORITHMS
from agents.train_sb3 import SB3TrainConfig
from envs import entry_for

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def _check_keys(where: str, given: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")


@dataclass(frozen=True)
class DemoSpec:
    """What ``make demo`` trains and how long it evaluates for one environment."""

    algo: str
    timesteps: int
    episodes: int
    reference: str | None = None

    def __post_init__(self) -> None:
        if self.timesteps < 1 or self.episodes < 1:
            raise ValueError(f"demo timesteps and episodes must be >= 1, got {self.timesteps}, {self.episodes}")


@dataclass(frozen=True)
class ExperimentConfig:
    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_env_kwargs: dict[str, Any] | None = None
    demo: DemoSpec | None = None
    sb3: dict[str, dict[str, Any]] = field(default_factory=dict)
    rllib: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: Path | str) -> ExperimentConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no experiment config at {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ValueError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None
        if not isinstance(raw, dict) or "env_id" not in raw:
            raise ValueError(f"{path}: expected a mapping with at least 'env_id'")
        _check_keys(str(path), raw, {f.name for f in fields(cls)})
        for key in ("env_kwargs", "eval_env_kwargs"):
            if raw.get(key) is not None and not isinstance(raw[key], dict):
                raise ValueError(f"{path} {key}: expected a mapping of gym.make keyword arguments, got {raw[key]!r}")
        entry_for(raw["env_id"])  # raises on an unknown id
        for backend, algorithms in (("sb3", SB3_ALGORITHMS), ("rllib", RLLIB_ALGORITHMS)):
            section = raw.get(backend) or {}
            if not isinstance(section, dict):
                raise ValueError(f"{path} {backend}: expected a mapping of algorithm names to settings")
            _check_keys(f"{path} {backend}", section, set(algorithms))
        demo = raw.get("demo")
        if demo is not None:
            _check_keys(f"{path} demo", demo, {f.name for f in fields(DemoSpec)})
            demo = DemoSpec(**demo)
        return cls(**{**raw, "demo": demo})

    @property
    def heldout_env_kwargs(self) -> dict[str, Any]:
        """Kwargs for held-out evaluation (the training kwargs when none are given)."""
        return self.env_kwargs if self.eval_env_kwargs is None else self.eval_env_kwargs

    def sb3_config(self, algo: str, **overrides: Any) -> SB3TrainConfig:
        """The typed SB3 config for ``algo``: this file's hyperparameters, then ``overrides``."""
        hyper = dict(self.sb3.get(algo, {}))
        top_level = {f.name for f in fields(SB3TrainConfig)} - {"hyperparams", "algo"}
        lifted = {k: hyper.pop(k) for k in list(hyper) if k in top_level}
        return SB3TrainConfig(algo=algo, hyperparams=hyper, **{"env_kwargs": self.env_kwargs, **lifted, **overrides})

    def rllib_config(self, algo: str, **overrides: Any) -> RLlibTrainConfig:
        """The typed RLlib config for ``algo``: this file's settings, then ``overrides``."""
        settings = dict(self.rllib.get(algo, {}))
        top_level = {f.name for f in fields(RLlibTrainConfig)} - {"training", "algo"}
        lifted = {k: settings.pop(k) for k in list(settings) if k in top_level}
        return RLlibTrainConfig(algo=algo, training=settings, **{"env_kwargs": self.env_kwargs, **lifted, **overrides})


def config_path(env_id: str) -> Path:
    """The experiment file of ``env_id``: ``benchmarks/configs/<Name>-v0.yaml``."""
    return CONFIG_DIR / f"{entry_for(env_id).name}.yaml"


def load_experiment(env_id: str, path: Path | str | None = None) -> ExperimentConfig:
    """Load ``path`` (default: the env's own file) and check it is about ``env_id``."""
    config = ExperimentConfig.from_file(path or config_path(env_id))
    if entry_for(config.env_id).env_id != entry_for(env_id).env_id:
        raise ValueError(f"config {path} is for {config.env_id}, not {env_id}")
    return config
