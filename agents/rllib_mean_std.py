"""RLlib's ``MeanStdFilter`` connector with statistics that merge correctly across remote env runners.

RLlib (2.60) merges the env runners' filter states by adding each runner's *whole* running statistics to
the merged ones at every sync, although each runner started from the merged statistics of the sync
before, and the merged mean drifts: the depth feature of LatentReasoning-v0 (PPO, 512 steps per
iteration, one remote runner) had means 1.92, 0.89, 0.69, 0.59, 0.53 after iterations 1-5, against 1.92,
1.82, 1.82, 1.82, 1.84 with this class (and ~1.87 with the local runner sampling). Here a runner reports
what it pushed since the last sync (the filter's ``buffer``, which RLlib already keeps), the merge adds
only that, and a runner's buffer empties when it receives the merged state. With no remote runner (the
local one samples) nothing changes.
"""

from __future__ import annotations

from typing import Any

import tree
from ray.rllib.connectors.env_to_module import MeanStdFilter as RLlibMeanStdFilter
from ray.rllib.utils.filter import MeanStdFilter as _Filter
from ray.rllib.utils.filter import RunningStat

BUFFER = "buffer"  # the state key of the observations pushed since the last sync


class MeanStdFilter(RLlibMeanStdFilter):
    """RLlib's ``MeanStdFilter`` whose ``merge_states`` adds each runner's observations once (module docstring).
    Same class name: a pipeline's state is keyed by it, so checkpoints of either load into the other."""

    def get_state(self, *args: Any, **kwargs: Any) -> dict:
        state = super().get_state(*args, **kwargs)
        for agent_id, agent_filter in self._filters.items():
            state[agent_id][BUFFER] = [s.to_state() for s in tree.flatten(agent_filter.buffer)]
        return state

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        for agent_filter in self._filters.values():
            agent_filter.reset_buffer()  # the merged statistics include everything pushed so far

    def merge_states(self, states: list[dict]) -> dict:
        if self._filters is None:
            self._init_new_filters()
        for state in states:
            for agent_id, agent_state in state.items():
                delta = _Filter(agent_state["shape"], demean=agent_state["de_mean_to_zero"],
                                destd=agent_state["de_std_to_one"], clip=agent_state["clip_by_value"])
                delta.buffer = tree.unflatten_as(agent_state["shape"],
                                                 [RunningStat.from_state(s) for s in agent_state[BUFFER]])
                self._filters[agent_id].apply_changes(delta, with_buffer=False)
        return self._get_state_from_filters(self._filters)
