"""DeepRec's two-stage reward strategy as training callbacks.

Stage 1 rewards the process (format + tool invocation + phrase diversity), stage 2 the outcome
(format + hit + rank-weighted similarity). The callbacks start training in stage 1 and switch
every environment to stage 2 after ``stage1_updates`` policy updates, by calling the envs'
``set_reward_stage(stage)`` (:mod:`envs.trm_retrieval`, :mod:`envs.trm_retrieval_text`).

- :class:`TwoStageRewardCallback` (Stable-Baselines3): one update = one rollout collection +
  optimisation; uses ``VecEnv.env_method``, so it works with DummyVecEnv and SubprocVecEnv over
  ``gym.make``-wrapped envs.
- :func:`two_stage_rllib_callback` (RLlib, new API stack): a ``RLlibCallback`` class that counts
  training iterations and calls ``set_reward_stage`` on every env runner's sub-envs.

Without any callback, the env option ``stage1_episodes`` gives the same curriculum counted in
episodes per env, which any trainer (the demo included) honours.
"""

from __future__ import annotations

from stable_baselines3.common.callbacks import BaseCallback


class TwoStageRewardCallback(BaseCallback):
    """Sets reward stage 1 at the start of training and stage 2 after ``stage1_updates`` updates."""

    def __init__(self, stage1_updates: int, verbose: int = 0) -> None:
        super().__init__(verbose)
        if not isinstance(stage1_updates, int) or stage1_updates < 0:
            raise ValueError(f"stage1_updates must be an int >= 0, got {stage1_updates!r}")
        self.stage1_updates = stage1_updates
        self.updates = 0
        self.stage = 1

    def _set(self, stage: int) -> None:
        self.training_env.env_method("set_reward_stage", stage)
        self.stage = stage
        if self.verbose:
            print(f"DeepRec reward stage {stage} after {self.updates} updates")

    def _on_training_start(self) -> None:
        self._set(1 if self.stage1_updates > 0 else 2)

    def _on_rollout_end(self) -> None:
        # Called once per collected rollout, i.e. right before each policy update.
        self.updates += 1
        if self.stage == 1 and self.updates >= self.stage1_updates:
            self._set(2)

    def _on_step(self) -> bool:
        return True


def two_stage_rllib_callback(stage1_iterations: int):
    """An RLlib ``RLlibCallback`` class switching to stage 2 after ``stage1_iterations`` iterations."""
    if stage1_iterations < 0:
        raise ValueError(f"stage1_iterations must be >= 0, got {stage1_iterations!r}")
    from ray.rllib.callbacks.callbacks import RLlibCallback

    def set_stage(env_runner, stage: int) -> None:
        env = getattr(env_runner, "env", None)
        if env is None:  # the local runner of a remote-runner setup has no env
            return
        vec = env.unwrapped  # RLlib's SyncVectorEnv under its wrappers
        for sub in getattr(vec, "envs", None) or [vec]:
            sub.unwrapped.set_reward_stage(stage)

    class TwoStageRLlibCallback(RLlibCallback):
        def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
            stage = 1 if stage1_iterations > 0 else 2
            algorithm.env_runner_group.foreach_env_runner(lambda r: set_stage(r, stage), local_env_runner=True)

        def on_train_result(self, *, algorithm, result, **kwargs) -> None:
            if algorithm.iteration == stage1_iterations:
                algorithm.env_runner_group.foreach_env_runner(lambda r: set_stage(r, 2), local_env_runner=True)

    return TwoStageRLlibCallback
