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
