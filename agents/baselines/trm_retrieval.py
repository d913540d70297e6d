"""Baselines of ``recrail/TRMRetrieval-v0`` (vector mode) and ``recrail/TRMRetrievalText-v0``.

Vector mode (actions: phrase index, ``V`` = plain call, ``V + 1`` = STOP):
- ``single_call``: one call of the plain TRM (no preference), then STOP: the final list is the
  TRM's own top 10 (the ranker with no stated preference is the plain TRM).
- ``random_phrases``: ``n_calls`` (3) distinct phrases drawn uniformly (seeded per episode), then STOP.
- ``history_genre_greedy``: the ``n_calls`` (3) phrases describing most of the user's history
  items (the history phrase profile), then STOP.
- ``plain_then_hint``: the plain call, then the planner's hint phrase when the env gives one
  (``planner_knowledge`` > 0; otherwise it is ``single_call``), then STOP: trusts the hint always.

Text mode: ``scripted_history`` writes the same calls as ``history_genre_greedy`` in the tag
protocol and answers the first 10 distinct retrieved titles; ``one_phrase`` makes one call with
the history's top phrase and answers its top 10.
"""

from __future__ import annotations

import numpy as np

from agents.baselines import register_baseline
from simulators.recsys.deeprec_protocol import BEGIN_PREFERENCE, END_PREFERENCE, LIST_SIZE, REC_OPEN, REC_CLOSE, THINK_END

VECTOR_ID = "recrail/TRMRetrieval-v0"
TEXT_ID = "recrail/TRMRetrievalText-v0"


class _ScriptedPolicy:
    """Plays a fixed list of actions chosen at the first step of an episode, then STOP."""

    name = "scripted"

    def __init__(self) -> None:
        self._plan: list[int] | None = None
        self._rng = np.random.default_rng(0)

    def reset(self, env, seed: int | None) -> None:
        self._plan = None
        self._rng = np.random.default_rng(seed)

    def plan(self, env) -> list[int]:
        raise NotImplementedError

    def act(self, obs, env) -> int:
        base = env.unwrapped
        if self._plan is None:
            self._plan = list(self.plan(base))
        return self._plan.pop(0) if self._plan else base.STOP


class SingleCall(_ScriptedPolicy):
    def plan(self, env) -> list[int]:
        return [env.PLAIN]


class _PhraseCalls(_ScriptedPolicy):
    """A script of ``n_calls`` phrase calls, then STOP."""

    def __init__(self, n_calls: int = 3) -> None:
        super().__init__()
        if n_calls < 1:
            raise ValueError(f"n_calls must be >= 1, got {n_calls}")
        self.n_calls = n_calls


class RandomPhrases(_PhraseCalls):
    def plan(self, env) -> list[int]:
        return self._rng.choice(env.V, size=min(self.n_calls, env.V), replace=False).tolist()


def history_phrases(env, n: int) -> list[int]:
    """Indices of the ``n`` phrases describing most history items (ties: vocabulary order)."""
    profile = env.history_profile()
    return sorted(range(len(profile)), key=lambda v: (-profile[v], v))[:n]


class HistoryGenreGreedy(_PhraseCalls):
    def plan(self, env) -> list[int]:
        return history_phrases(env, self.n_calls)


class PlainThenHint(_ScriptedPolicy):
    def plan(self, env) -> list[int]:
        hint = env.hint()
        return [env.PLAIN] if hint is None else [env.PLAIN, hint]


class ScriptedTextAgent:
    """Text mode: calls the top history phrases one per turn, then answers 10 retrieved titles."""

    name = "scripted_history"

    def __init__(self, n_calls: int = 3) -> None:
        if n_calls < 1:
            raise ValueError(f"n_calls must be >= 1, got {n_calls}")
        self.n_calls = n_calls
        self._turn = 0

    def reset(self, env, seed: int | None) -> None:
        self._turn = 0

    def act(self, obs: str, env) -> str:
        base = env.unwrapped
        self._turn += 1
        if self._turn <= self.n_calls:
            profile = base.episodes.obs[0, base.episodes._o("hist_profile")]
            order = sorted(range(len(profile)), key=lambda v: (-profile[v], v))
            phrase = base.world.vocabulary.phrases[order[self._turn - 1]]
            return f"{BEGIN_PREFERENCE} {phrase} {END_PREFERENCE}"
        titles = _retrieved_titles(obs)[:LIST_SIZE]
        lines = "\n".join(f"{i}. {t}" for i, t in enumerate(titles, start=1))
        return f"{THINK_END}\n{REC_OPEN}\n{lines}\n{REC_CLOSE}"


def _retrieved_titles(prompt: str) -> list[str]:
    """Distinct titles of every item list in the prompt, in order of appearance."""
    from simulators.recsys.deeprec_protocol import BEGIN_ITEM_LIST, END_ITEM_LIST

    titles: list[str] = []
    for block in prompt.split(BEGIN_ITEM_LIST)[1:]:
        for line in block.split(END_ITEM_LIST)[0].splitlines():
            number, sep, title = line.partition(". ")
            if sep and number.strip().isdigit() and title not in titles:
                titles.append(title)
    return titles


register_baseline(VECTOR_ID, "single_call", SingleCall)
register_baseline(VECTOR_ID, "random_phrases", RandomPhrases)
register_baseline(VECTOR_ID, "history_genre_greedy", HistoryGenreGreedy)
register_baseline(VECTOR_ID, "plain_then_hint", PlainThenHint)
register_baseline(TEXT_ID, "scripted_history", ScriptedTextAgent)
register_baseline(TEXT_ID, "one_phrase", lambda: ScriptedTextAgent(n_calls=1))
