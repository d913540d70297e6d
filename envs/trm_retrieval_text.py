"""``recrail/TRMRetrievalText-v0``: DeepRec's multi-turn preference retrieval, text mode.

The same episodes, TRM and rewards as ``recrail/TRMRetrieval-v0`` (:mod:`envs.trm_retrieval`),
driven by text so that any language model can act (an adapter for Hugging Face causal LMs is
:mod:`agents.hf_adapter`). Protocol and tags: :mod:`simulators.recsys.deeprec_protocol`.

- **Observation** ``Text``: the prompt: the task and protocol, the user's last 20 items as numbered
  titles with their categories, then every call made so far (the stated phrases and the returned
  numbered title list inside ``<|begin_of_item_list|> ... <|end_of_item_list|>``); with
  ``planner_knowledge`` > 0 a line after the history gives the episode's hint phrase (see
  :mod:`envs.trm_retrieval`: right with probability ``planner_knowledge``). Titles are cut to
  60 characters, categories to 60; echoed phrases keep only characters of the observation charset
  (others become "?"). The space's charset is built from the prompt template and the dataset's
  titles and categories, and its ``max_length`` is the longest prompt the protocol allows, so the
  space contains every observation.
- **Action** ``Text(max_length=8192)``: one agent output, a call or the answer. The env accepts any
  ``str``: an LM's output is untrusted, so text outside the action space (characters outside its
  charset, more than 8192 characters) is not an error but a format violation like any other
  malformed output; a non-``str`` action raises ``ValueError``.
- **Reward**: 0 after a valid call; at the end the DeepRec reward of the episode (format + process
  in stage 1, format + outcome in stage 2).
- **Termination**: a valid answer, or any format violation (missing/unbalanced tags, no tool call,
  a 9th call, not exactly 10 items, titles not from the retrieved pool, text after the answer,
  over-long output), which ends the episode with format reward -1 and no outcome reward.
  Nothing truncates.
- **info**: ``n_calls``, ``pool_size``, ``reward_stage``, ``errors`` (the violations of the last
  output); at the end ``kpis`` and ``reward_terms`` as in vector mode.
"""

from __future__ import annotations

import string

import gymnasium as gym
from envs.trm_retrieval import RetrievalEpisodes, TRMRetrievalConfig, _StageSchedule, _user_option
from envs.config import make_config
from simulators.recsys.deeprec_protocol import (
    BEGIN_ITEM_LIST,
    BEGIN_PREFERENCE,
    END_ITEM_LIST,
    END_PREFERENCE,
    LIST_SIZE,
    MAX_OUTPUT_CHARS,
    MAX_PHRASE_CHARS,
    MAX_PHRASES_PER_CALL,
    MAX_TITLE_CHARS,
    REC_OPEN,
    RETRIEVE_K,
    THINK_END,
    display_title,
    match_titles,
    parse_turn,
)

MAX_CATEGORY_CHARS = 60

INSTRUCTIONS = (
    "You recommend the next item for a user. Explore the catalogue by calling a recommendation "
    "tool, then answer.\n"
    f"To call the tool, write a preference: {BEGIN_PREFERENCE} phrase; phrase {END_PREFERENCE} "
    f"(at most {MAX_PHRASES_PER_CALL} phrases). The tool returns {RETRIEVE_K} items as a numbered list "
    f"inside {BEGIN_ITEM_LIST} ... {END_ITEM_LIST}.\n"
    f"To answer, write {THINK_END} then {REC_OPEN} and exactly {LIST_SIZE} numbered titles, one per "
    "line, chosen from the items the tool returned. Write nothing after the answer.\n"
)
HISTORY_HEADER = "User history (oldest first):\n"
HINT_HEADER = "Hint (may be wrong): the user may want "


def _categories(attrs: tuple[str, ...]) -> str:
    text = " ".join(", ".join(attrs).split())
    return text if len(text) <= MAX_CATEGORY_CHARS else text[: MAX_CATEGORY_CHARS - 3] + "..."


class TRMRetrievalTextEnv(gym.Env):
    """DeepRec retrieval in text mode (see the module docstring)."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, config: TRMRetrievalConfig | dict | None = None, render_mode: str | None = None, **overrides) -> None:
        self.config = make_config(TRMRetrievalConfig, config, **overrides)
        if self.config.potential_shaping:
            raise ValueError(
                "potential_shaping=True is not supported in text mode (the final list is the agent's own answer, "
                "so there is no list to score before it); allowed: False, or use recrail/TRMRetrieval-v0"
            )
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode {render_mode!r} is not supported; allowed: None, 'ansi'")
        self.render_mode = render_mode
        self.world = self.config.world()
        self.episodes = RetrievalEpisodes(self.world, self.config, 1)
        ds = self.world.dataset
        self._shown = [display_title(t) for t in ds.item_titles]
        self._cats = [_categories(a) for a in ds.item_attributes]
        chars = set(INSTRUCTIONS) | set(string.digits) | set(". ()?;:\n") | set("".join(self._shown)) | set("".join(self._cats))
        chars |= set(HISTORY_HEADER + HINT_HEADER + self._footer(0) + self._call_header(1))
        self.charset = frozenset(chars)
        self.observation_space = gym.spaces.Text(max_length=self._max_prompt_chars(), min_length=1, charset=self.charset)
        self.action_space = gym.spaces.Text(
            max_length=MAX_OUTPUT_CHARS, min_length=0, charset=frozenset(string.printable) | self.charset
        )
        self._schedule = _StageSchedule(self.config)
        self._done = True
        self._prompt = ""

    @property
    def reward_stage(self) -> int:
        return self._schedule.current()

    def set_reward_stage(self, stage: int) -> None:
        """Switch the reward stage (1: format + process, 2: format + outcome) from now on."""
        self._schedule.set(stage)

    # --------------------------------------------------------------------------- prompt building

    def _footer(self, n_calls: int) -> str:
        return f"Calls made: {n_calls} of {self.config.max_calls}.\n"

    @staticmethod
    def _call_header(k: int) -> str:
        return f"Call {k}: "

    def _item_lines(self, items, with_categories: bool) -> str:
        return "".join(
            f"{n}. {self._shown[i]}" + (f" ({self._cats[i]})" if with_categories and self._cats[i] else "") + "\n"
            for n, i in enumerate(items, start=1)
        )

    def _max_prompt_chars(self) -> int:
        """Longest possible prompt: every title, category and phrase at its maximum length."""
        max_len = self.world.model.config.max_len
        hist_line = len(f"{max_len}. ") + MAX_TITLE_CHARS + len(" ()") + MAX_CATEGORY_CHARS + 1
        phrases = MAX_PHRASES_PER_CALL * MAX_PHRASE_CHARS + (MAX_PHRASES_PER_CALL - 1) * 2
        call = (
            len(self._call_header(self.config.max_calls)) + len(f"{BEGIN_PREFERENCE}  {END_PREFERENCE}\n") + phrases
            + len(BEGIN_ITEM_LIST) + 1 + RETRIEVE_K * (len(f"{RETRIEVE_K}. ") + MAX_TITLE_CHARS + 1) + len(END_ITEM_LIST) + 1
        )
        head = len(INSTRUCTIONS) + len(HISTORY_HEADER) + max_len * hist_line + 1 + len(HINT_HEADER) + MAX_PHRASE_CHARS + 1
        return head + self.config.max_calls * call + len(self._footer(self.config.max_calls))

    def _render_prompt(self) -> str:
        hist = self.episodes.history[0][-self.world.model.config.max_len :].tolist()
        parts = [INSTRUCTIONS, HISTORY_HEADER, self._item_lines(hist, True), "\n"]
        hint = int(self.episodes.hint[0])
        if hint >= 0:
            parts += [HINT_HEADER, self._printable(self.world.vocabulary.phrases[hint][:MAX_PHRASE_CHARS]), "\n"]
        for k, (phrases, items) in enumerate(self._calls, start=1):
            shown = "; ".join(self._printable(p) for p in phrases)
            parts += [
                self._call_header(k), f"{BEGIN_PREFERENCE} {shown} {END_PREFERENCE}\n",
                BEGIN_ITEM_LIST, "\n", self._item_lines(items, False), END_ITEM_LIST, "\n",
            ]
        parts.append(self._footer(len(self._calls)))
        prompt = "".join(parts)
        if len(prompt) > self.observation_space.max_length:  # a bug in _max_prompt_chars, never the agent
            raise RuntimeError(f"prompt of {len(prompt)} chars exceeds the bound {self.observation_space.max_length}")
        return prompt

    def _printable(self, text: str) -> str:
        """``text`` with characters outside the observation charset replaced by "?"."""
        return "".join(c if c in self.charset else "?" for c in text)

    # ------------------------------------------------------------------------------------ API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.episodes.start([0], [self.np_random], [_user_option(options)])
        self._calls: list[tuple[tuple[str, ...], list[int]]] = []
        self._done = False
        self._prompt = self._render_prompt()
        return self._prompt, self._info([])

    def step(self, action):
        if self._done:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        if not isinstance(action, str):
            raise ValueError(f"action must be a str (one agent output), got {type(action).__name__}: {action!r:.80}")
        turn = parse_turn(action)
        errors = list(turn.errors)
        if turn.kind == "call" and len(self._calls) >= self.config.max_calls:
            errors.append(f"a call after the maximum of {self.config.max_calls} calls")
        if turn.kind == "call" and not errors:
            pref = self.world.preference_embedding(turn.phrases)
            retrieved = self.episodes.call([0], pref[None], [None])[0].tolist()
            self._calls.append((turn.phrases, retrieved))
            self._prompt = self._render_prompt()
            return self._prompt, 0.0, False, False, self._info([])
        final: list[int] = []
        if turn.kind == "answer" and not errors:
            if not self._calls:
                errors.append("no tool call before the answer")
            final, match_errors = match_titles(turn.titles, list(self.episodes.pool[0]), {i: self._shown[i] for i in self.episodes.pool[0]})
            errors += match_errors
        ok = not errors
        reward, info = self.episodes.finish(0, final if ok else [], ok, self.reward_stage)
        info.update(self._info(errors))  # before the schedule moves on: the stage this end was scored with
        self._schedule.finished += 1
        self._done = True
        return self._prompt, float(reward), True, False, info

    def _info(self, errors: list[str]) -> dict:
        return {
            "n_calls": len(self._calls),
            "pool_size": len(self.episodes.pool[0]),
            "reward_stage": self.reward_stage,
            "errors": list(errors),
        }

    def render(self):
        return self._prompt if self.render_mode == "ansi" else None
