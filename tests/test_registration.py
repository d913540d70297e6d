"""Every registered id: Gymnasium's checker, determinism, fresh-process make, config and baselines."""

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from agents.baselines import baseline_names, make_baseline
from agents.train_rllib import _algorithm_config
from benchmarks.experiment import load_experiment
from benchmarks.harness import run_episode
from tests.conftest import REPO_ROOT

ENV_IDS = envs.env_ids()


def strict_check(env: gym.Env) -> None:
    """check_env with every checker warning an error (bar the note that a made env is wrapped)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version.*")
        check_env(env, skip_render_check=True)


def sample_action(env: gym.Env, rng: np.random.Generator):
    """A random action; respects ``action_masks()`` when the env has them."""
    space = env.action_space
    space.seed(int(rng.integers(2**31)))
    if not hasattr(env.unwrapped, "action_masks"):
        return space.sample()
    mask = np.asarray(env.unwrapped.action_masks(), dtype=bool)
    if isinstance(space, gym.spaces.Discrete):
        return space.sample(mask=mask.astype(np.int8))
    splits = np.cumsum(space.nvec.ravel())[:-1]
    return space.sample(mask=tuple(m.astype(np.int8) for m in np.split(mask, splits)))


def rollout(env_id: str, seed: int, steps: int) -> list:
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    trace = [obs]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(sample_action(env, rng))
        trace += [obs, reward, terminated, truncated, sorted(info.get("kpis", {}).items())]
        if terminated or truncated:
            obs, info = env.reset()
            trace.append(obs)
    env.close()
    return trace


def same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_ids_live_in_the_recrail_namespace():
    assert ENV_IDS and all(i.startswith("recrail/") and i.endswith("-v0") for i in ENV_IDS)
    assert all(i in gym.registry for i in ENV_IDS)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_unwrapped_and_made(env_id):
    env = gym.make(env_id)
    strict_check(env.unwrapped)
    strict_check(gym.make(env_id))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_and_actions_give_identical_trajectories(env_id):
    first, second = rollout(env_id, 7, 40), rollout(env_id, 7, 40)
    assert same(first, second)
    assert not same(first, rollout(env_id, 8, 40)), "a different seed should change the trajectory"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_module_prefixed_id_works_in_a_fresh_process(env_id):
    code = (
        "import gymnasium as gym\n"
        f"env = gym.make('envs:{env_id}')\n"
        "obs, info = env.reset(seed=0)\n"
        "assert env.observation_space.contains(obs)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_every_env_has_an_experiment_config_and_baselines_that_report_kpis(env_id):
    experiment = load_experiment(env_id)
    for algo in experiment.sb3:  # the file's settings make valid typed configs
        experiment.sb3_config(algo)
    for algo in experiment.rllib:  # ... and RLlib takes every key (AlgorithmConfig.training raises on unknown ones)
        _algorithm_config(env_id, experiment.rllib_config(algo))
    names = baseline_names(env_id)
    assert names, f"{env_id} has no baselines"
    if experiment.demo is not None and experiment.demo.reference is not None:
        assert experiment.demo.reference in names
    env = gym.make(env_id, **experiment.env_kwargs)
    for name in names:
        result = run_episode(env, make_baseline(env_id, name), seed=3)
        assert result["length"] >= 1
        assert len(result) > 2, f"{env_id}: baseline {name} ended an episode without info['kpis']"
