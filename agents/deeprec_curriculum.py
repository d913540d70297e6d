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
        # from the updates counted so far: a callback reused by a continued learn() stays in stage 2
        self._set(1 if self.updates < self.stage1_updates else 2)

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
        vec = env.unwrapped
        if hasattr(vec, "set_reward_stage"):  # a native vector env (vector_entry_point)
            vec.set_reward_stage(stage)
        else:  # gymnasium's Sync/AsyncVectorEnv: every sub-env, also those in subprocesses
            vec.call("set_reward_stage", stage)

    def push(algorithm) -> None:
        """The stage of the algorithm's iteration to every env runner (restored or recreated ones included)."""
        stage = 1 if algorithm.iteration < stage1_iterations else 2
        algorithm.env_runner_group.foreach_env_runner(lambda r: set_stage(r, stage), local_env_runner=True)

    class TwoStageRLlibCallback(RLlibCallback):
        def on_algorithm_init(self, *, algorithm, **kwargs) -> None:
            push(algorithm)

        def on_checkpoint_loaded(self, *, algorithm, **kwargs) -> None:
            push(algorithm)  # a restored algorithm past the switch stays in stage 2

        def on_env_runners_recreated(self, *, algorithm, is_evaluation, **kwargs) -> None:
            if not is_evaluation:
                push(algorithm)  # a recreated runner starts in its config's stage

        def on_train_result(self, *, algorithm, result, **kwargs) -> None:
            push(algorithm)

    return TwoStageRLlibCallback
