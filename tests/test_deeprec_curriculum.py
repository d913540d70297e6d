"""The two-stage reward callback switches SB3's vectorised envs from stage 1 to stage 2."""

from __future__ import annotations

import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

import envs  # noqa: F401
from agents.deeprec_curriculum import TwoStageRewardCallback


class StageLog(BaseCallback):
    """Records the envs' reward stage at every rollout start."""

    def __init__(self) -> None:
        super().__init__()
        self.stages: list[list[int]] = []

    def _on_rollout_start(self) -> None:
        self.stages.append(self.training_env.get_attr("reward_stage"))

    def _on_step(self) -> bool:
        return True


def test_two_stage_callback_switches_after_n_updates():
    vec = make_vec_env("recrail/TRMRetrieval-v0", n_envs=2, seed=0)
    model = PPO("MlpPolicy", vec, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu")
    curriculum, log = TwoStageRewardCallback(stage1_updates=2), StageLog()
    model.learn(total_timesteps=4 * 32, callback=[curriculum, log])
    assert log.stages == [[1, 1], [1, 1], [2, 2], [2, 2]]
    assert curriculum.updates == 4 and curriculum.stage == 2
    vec.close()
    with pytest.raises(ValueError, match="stage1_updates"):
        TwoStageRewardCallback(-1)


def test_a_reused_callback_stays_in_stage_2_when_learning_continues():
    vec = make_vec_env("recrail/TRMRetrieval-v0", n_envs=2, seed=0)
    model = PPO("MlpPolicy", vec, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu")
    curriculum, log = TwoStageRewardCallback(stage1_updates=1), StageLog()
    model.learn(total_timesteps=2 * 32, callback=[curriculum, log])
    model.learn(total_timesteps=2 * 32, callback=[curriculum, log], reset_num_timesteps=False)
    assert log.stages == [[1, 1], [2, 2], [2, 2], [2, 2]]
    vec.close()


class _Runner:
    def __init__(self, env) -> None:
        self.env = env


class _Group:
    def __init__(self, runners) -> None:
        self.runners = runners

    def foreach_env_runner(self, fn, local_env_runner=True):
        return [fn(r) for r in self.runners]


class _Algorithm:
    def __init__(self, runners, iteration: int = 0) -> None:
        self.env_runner_group, self.iteration = _Group(runners), iteration


def test_rllib_callback_reaches_every_kind_of_vector_env_and_follows_the_iteration():
    import gymnasium as gym

    from agents.deeprec_curriculum import two_stage_rllib_callback
    from envs.trm_retrieval import TRMRetrievalEnv, TRMRetrievalVectorEnv

    sync = gym.vector.SyncVectorEnv([TRMRetrievalEnv, TRMRetrievalEnv])  # reached through its call()
    native = TRMRetrievalVectorEnv(num_envs=2)
    algorithm = _Algorithm([_Runner(None), _Runner(sync), _Runner(native)])  # a local runner without env too
    callback = two_stage_rllib_callback(2)()
    callback.on_algorithm_init(algorithm=algorithm)
    assert list(sync.get_attr("reward_stage")) == [1, 1] and native._schedules[0].current() == 1
    algorithm.iteration = 2
    callback.on_train_result(algorithm=algorithm, result={})
    assert list(sync.get_attr("reward_stage")) == [2, 2] and native._schedules[1].current() == 2
    restored = _Algorithm([_Runner(sync)], iteration=5)  # a checkpoint past the switch: no return to stage 1
    callback.on_algorithm_init(algorithm=restored)
    callback.on_checkpoint_loaded(algorithm=restored)
    assert list(sync.get_attr("reward_stage")) == [2, 2]
    sync.close()
