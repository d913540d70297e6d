"""``recrail/TRMRetrieval-v0``: DeepRec's multi-turn preference retrieval, vector mode.

An agent explores the item space by calling a preference-aware TRM
(:mod:`simulators.recsys.preference_trm`) for a user over several turns, then the env ranks what
was retrieved (Zheng, Wang, Liu et al., 2025; protocol and rewards in
:mod:`simulators.recsys.deeprec_protocol`).

- **Episode / start**: one user drawn uniformly from the users with a target in the configured
  leave-one-out ``stage`` ("test" by default: the last item is the target, all earlier items the
  history), restricted to ``users`` ("all", "train" or "heldout": a fixed seeded partition with
  ``heldout_fraction`` of the users held out). ``reset(options={"user": u})`` pins user index u.
- **Action** ``Discrete(V + 2)``: ``a < V`` calls the TRM with phrase ``a`` of the phrase vocabulary
  (``env.unwrapped.phrases``: the dataset's genres/attributes and frequent title words);
  ``a == V`` calls the plain TRM (no preference); ``a == V + 1`` is STOP. Each call retrieves the
  top 20 items (history excluded) into the pool. Repeating a phrase is allowed (it retrieves the
  same items, and is counted as a call).
- **Final ranker** (at STOP, or automatically after ``max_calls`` = 8 calls): each pool item gets
  ``cos(u_0, i) + w * mean_c cos(u_c, i)``, where ``u_0`` is the user without preference (the
  plain TRM), ``u_c`` the user fused with the preference of phrase call c (the mean is over the
  phrase calls; none: the term is 0) and ``w = ranker_preference_weight`` (0.5); the top 10 are the
  recommendation list, ties to the item retrieved first. So the stated preferences re-rank the
  pool, and a plain call alone reproduces the plain TRM's top 10.
- **Observation** ``Box(-1, 1, (2H + 4V + 3,), float32)``, H = TRM hidden size, in order: the unit
  sequence state of the history (H); the history's phrase profile (V: share of history items each
  phrase describes); the mean unit TRM vector of the pool (H, zeros when empty); the pool's phrase
  profile (V); pool size / (20 x max_calls); which actions were used (V + 1: phrases and the
  plain call); calls made / max_calls; the planner's hint (V: one-hot, all zeros when
  ``planner_knowledge`` is 0).
- **Planner knowledge** (``planner_knowledge`` = rho, default 0): DeepRec's planner is an LLM that
  knows items and users beyond the TRM. With rho = 0 the agent sees only what the TRM sees (the
  history), and then no phrase policy we measured beats the plain call (``bench_trm_headroom``).
  With rho > 0 each episode draws a hint phrase: with probability rho one of the vocabulary
  phrases describing the target, otherwise a uniformly random phrase; the agent is not told which.
  It simulates a planner whose prior knowledge is right a fraction rho of the time.
- **Reward**: 0 per call; at the end the DeepRec reward (format + process in stage 1, format +
  outcome in stage 2; see the protocol module). STOP before any call is a format violation ("no
  tool call"): reward -1, empty list. ``reward_stage`` is a config switch; ``stage1_episodes`` > 0
  makes the env itself use stage 1 for its first N episodes (a two-stage curriculum that works
  under any trainer), and :meth:`TRMRetrievalEnv.set_reward_stage` sets the stage explicitly
  (what :mod:`agents.deeprec_curriculum` calls). ``potential_shaping`` (off by default) pays the
  same return spread over the steps: with Phi(s) = the reward the episode would get if it stopped
  in s (Phi = 0 before the first call), a call earns Phi(s') - Phi(s) and the last step the final
  reward - Phi(s). The rewards of an episode sum to the unshaped final reward exactly (potential-
  based shaping with gamma = 1, Ng et al. 1999: the same optimal policies), but each call's effect
  on the ranked list is paid when it is made, which is what PPO needs to find short call sequences.
- **Termination**: STOP or the 8th call (terminated); nothing truncates.
- **render**: "ansi" (user, target, calls, pool) or "rgb_array" (the observation as a colour strip).
- **info**: ``n_calls``, ``pool_size``, ``reward_stage`` (the stage this episode is scored with); at the end ``kpis`` = Recall@1/5/10,
  NDCG@5/10 of the target in the final list, n_calls, pool_size, format_ok, target_in_pool, and
  ``reward_terms`` (format, invocation, diversity, hit, similarity).

:class:`TRMRetrievalVectorEnv` is a native ``gymnasium.vector.VectorEnv`` that steps N episodes
with one batched TRM call per step (next-step autoreset); sub-env i behaves exactly like the
scalar env reset with seed ``seed + i``.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding

from envs.config import check_options, make_config
from simulators.checks import check_field, is_finite, is_int
from simulators.recsys.deeprec_protocol import LIST_SIZE, MAX_CALLS, RETRIEVE_K, episode_reward
from simulators.recsys.preference_trm import TRMWorld, load_trm_world

USER_SETS = ("all", "train", "heldout")
SPLIT_STAGES = ("valid", "test")
_PARTITION_SEED = 20250601
TARGET_FROM_END = {"valid": 2, "test": 1}  # leave-one-out: the stage's target is sequence[-cut]


@dataclass(frozen=True)
class TRMRetrievalConfig:
    """Configuration of both DeepRec environments (vector and text mode).

    ``data_path=None`` is the synthetic default world with the shipped TRM weights; real data
    needs ``data_path`` plus a TRM ``checkpoint`` trained on it.
    """

    data_path: str | None = None
    data_format: str = "auto"
    checkpoint: str | None = None
    max_phrases: int = 64
    stage: str = "test"
    users: str = "all"
    heldout_fraction: float = 0.2
    max_calls: int = MAX_CALLS
    reward_stage: int = 2
    stage1_episodes: int = 0
    ranker_preference_weight: float = 0.5
    planner_knowledge: float = 0.0
    potential_shaping: bool = False

    def __post_init__(self) -> None:
        check_field(self, "max_phrases", is_int(self.max_phrases) and self.max_phrases >= 1, "an int >= 1")
        check_field(self, "stage", self.stage in SPLIT_STAGES, f"one of {SPLIT_STAGES}")
        check_field(self, "users", self.users in USER_SETS, f"one of {USER_SETS}")
        check_field(self, "heldout_fraction", is_finite(self.heldout_fraction) and 0.0 < self.heldout_fraction < 1.0,
                    "a float in (0, 1)")
        check_field(self, "max_calls", is_int(self.max_calls) and 1 <= self.max_calls <= MAX_CALLS,
                    f"an int in 1..{MAX_CALLS}")
        check_field(self, "reward_stage", is_int(self.reward_stage) and self.reward_stage in (1, 2), "1 or 2")
        check_field(self, "stage1_episodes", is_int(self.stage1_episodes) and self.stage1_episodes >= 0,
                    "an int >= 0")
        check_field(self, "ranker_preference_weight",
                    is_finite(self.ranker_preference_weight) and self.ranker_preference_weight >= 0, "a float >= 0")
        check_field(self, "planner_knowledge",
                    is_finite(self.planner_knowledge) and 0.0 <= self.planner_knowledge <= 1.0, "a float in [0, 1]")
        check_field(self, "potential_shaping", isinstance(self.potential_shaping, bool), "True or False")
        check_field(self, "data_path", self.data_path is None or isinstance(self.data_path, str),
                    "None or a path string")
        check_field(self, "checkpoint", self.checkpoint is None or isinstance(self.checkpoint, str),
                    "None or a path string")

    def world(self) -> TRMWorld:
        return load_trm_world(self.data_path, self.checkpoint, self.data_format, self.max_phrases)


def user_pool(world: TRMWorld, config: TRMRetrievalConfig) -> np.ndarray:
    """User indices episodes are drawn from (stage users, then the train/held-out partition)."""
    users = world.split.users(config.stage)
    if config.users == "all":
        return users
    order = np.random.default_rng(_PARTITION_SEED).permutation(world.dataset.n_users)
    heldout = np.zeros(world.dataset.n_users, dtype=bool)
    heldout[order[: int(round(config.heldout_fraction * world.dataset.n_users))]] = True
    keep = heldout[users] if config.users == "heldout" else ~heldout[users]
    return users[keep]


class RetrievalEpisodes:
    """The state of N DeepRec episodes, stepped in batches (shared by every env class).

    Slot i holds one user's episode: the TRM sequence state, the pool (item -> retrieval order),
    the preference embedding of every call, and the observation features.
    """

    def __init__(self, world: TRMWorld, config: TRMRetrievalConfig, n: int) -> None:
        self.world = world
        self.config = config
        self.n = n
        self.users = user_pool(world, config)
        if self.users.size == 0:
            raise ValueError(f"no users with a {config.stage} target in user set {config.users!r}")
        self.V = len(world.vocabulary)
        self.H = world.model.config.hidden
        n_items = world.n_items
        self.user = np.zeros(n, dtype=np.int64)
        self.target = np.zeros(n, dtype=np.int64)
        self.history: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * n  # time order
        self.states = torch.zeros(n, self.H)
        self.exclude = torch.zeros(n, n_items + 1, dtype=torch.bool)
        self.pool: list[dict[int, int]] = [{} for _ in range(n)]
        self.prefs: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.hint = np.full(n, -1, dtype=np.int64)  # the hinted phrase index, -1 = none
        self.phi = np.zeros(n)  # potential_shaping: the reward if the episode stopped now
        self.final_list: list[list[int]] = [[] for _ in range(n)]  # each slot's last recommended list
        self._item_has = world.vocabulary.item_has.astype(np.float32)  # [V, n+1]
        # Observation layout: consecutive blocks of these widths (see the module docstring).
        widths = {"hist": self.H, "hist_profile": self.V, "pool_mean": self.H, "pool_profile": self.V,
                  "pool_size": 1, "used": self.V + 1, "turn": 1, "hint": self.V}
        ends = np.cumsum(list(widths.values()))
        self._slices = {k: slice(int(e - w), int(e)) for (k, w), e in zip(widths.items(), ends)}
        self.obs_dim = int(ends[-1])  # 2H + 4V + 3
        self.obs = np.zeros((n, self.obs_dim), dtype=np.float32)

    def _o(self, part: str) -> slice:
        """The observation columns of block ``part``."""
        return self._slices[part]

    def start(self, slots: list[int], rngs: list[np.random.Generator], users: list[int | None]) -> None:
        """Begin an episode in each slot: draw (or take) the user, encode the history once."""
        for slot, rng, user in zip(slots, rngs, users):
            if user is None:
                user = int(self.users[rng.integers(len(self.users))])
            elif user not in set(self.users.tolist()):
                raise ValueError(
                    f"user {user!r} has no {self.config.stage} target in user set {self.config.users!r}; "
                    f"allowed: one of {len(self.users)} indices such as {self.users[:5].tolist()}"
                )
            self.user[slot] = user
        inputs, targets = self.world.split.batch(self.config.stage, self.user[slots], self.world.model.config.max_len)
        exclude = self.world.split.history_mask(self.config.stage, self.user[slots])
        states = self.world.sequence_states(inputs)
        for j, (slot, rng) in enumerate(zip(slots, rngs)):
            self.target[slot] = int(targets[j])
            self.exclude[slot] = exclude[j]
            self.states[slot] = states[j]
            cut = TARGET_FROM_END[self.config.stage]
            hist = self.world.dataset.sequences[self.user[slot]][:-cut]
            self.history[slot] = hist
            self.pool[slot] = {}
            self.prefs[slot] = []
            self.phi[slot] = 0.0
            o = self.obs[slot]
            o[:] = 0.0
            o[self._o("hist")] = torch.nn.functional.normalize(states[j], dim=0).numpy()
            o[self._o("hist_profile")] = self._item_has[:, hist].mean(axis=1)
            self.hint[slot] = self._draw_hint(rng, self.target[slot])
            if self.hint[slot] >= 0:
                o[self._o("hint").start + self.hint[slot]] = 1.0

    def _draw_hint(self, rng: np.random.Generator, target: int) -> int:
        """The planner's hint phrase (see the module docstring); -1 when ``planner_knowledge`` is 0."""
        rho = self.config.planner_knowledge
        if rho == 0.0:  # draw nothing: episodes stay identical to an env without the option
            return -1
        describing = np.flatnonzero(self._item_has[:, target])
        if rng.random() < rho and describing.size:
            return int(rng.choice(describing))
        return int(rng.integers(self.V))

    def action_masks(self) -> np.ndarray:
        """bool[n, V + 2]: phrases and the plain call not used yet; STOP once a call was made."""
        masks = np.ones((self.n, self.V + 2), dtype=bool)
        masks[:, : self.V + 1] = self.obs[:, self._o("used")] == 0.0
        masks[:, self.V + 1] = self.obs[:, self._o("turn").start] > 0.0
        return masks

    def call(self, slots: list[int], preferences: np.ndarray, used: list[int | None]) -> np.ndarray:
        """One TRM call per slot (batched): the top 20 (int64[len(slots), 20]) join each pool."""
        if not slots:
            return np.zeros((0, RETRIEVE_K), dtype=np.int64)
        retrieved = self.world.retrieve_from_states(
            self.states[slots], preferences, self.exclude[slots], RETRIEVE_K
        )
        for j, slot in enumerate(slots):
            pool = self.pool[slot]
            for item in retrieved[j].tolist():
                pool.setdefault(item, len(pool))
            self.prefs[slot].append(np.asarray(preferences[j], dtype=np.float32))
            items = np.fromiter(pool, dtype=np.int64, count=len(pool))
            o = self.obs[slot]
            o[self._o("pool_mean")] = self.world.item_vec_unit[items].mean(axis=0)
            o[self._o("pool_profile")] = self._item_has[:, items].mean(axis=1)
            o[self._o("pool_size")] = len(pool) / (RETRIEVE_K * self.config.max_calls)
            if used[j] is not None:
                o[self._o("used").start + used[j]] = 1.0
            o[self._o("turn")] = len(self.prefs[slot]) / self.config.max_calls
        return retrieved

    def n_calls(self, slot: int) -> int:
        return len(self.prefs[slot])

    def ranked_pool(self, slot: int) -> list[int]:
        """The pool ordered by the final ranker (see the module docstring)."""
        items = list(self.pool[slot])
        if not items:
            return []
        stated = [p for p in self.prefs[slot] if p.any()]
        prefs = np.stack([np.zeros_like(self.prefs[slot][0]), *stated])
        cos = self.world.user_scores(self.states[slot].expand(len(prefs), -1), prefs)[:, items].numpy()
        scores = cos[0] + (self.config.ranker_preference_weight * cos[1:].mean(axis=0) if stated else 0.0)
        order = sorted(range(len(items)), key=lambda j: (-scores[j], j))  # ties: retrieved first
        return [items[j] for j in order]

    def end(self, slot: int, stage: int) -> tuple[float, dict]:
        """Reward and end-of-episode info if the episode stopped now (the env's ranker makes the list)."""
        ok = self.n_calls(slot) > 0
        self.final_list[slot] = self.ranked_pool(slot)[:LIST_SIZE] if ok else []
        return self.finish(slot, self.final_list[slot], ok, stage)

    def step_reward(self, slot: int, final: float | None, stage: int) -> float:
        """The reward of a step: ``final`` at the end (None: not the end), 0 before; with
        ``potential_shaping`` the change of Phi (see the module docstring)."""
        if not self.config.potential_shaping:
            return 0.0 if final is None else final
        previous = self.phi[slot]
        if final is not None:  # the end: Phi returns to 0
            self.phi[slot] = 0.0
            return final - previous
        self.phi[slot] = self.end(slot, stage)[0]
        return self.phi[slot] - previous

    def finish(self, slot: int, final: list[int], format_ok: bool, stage: int) -> tuple[float, dict]:
        """Score the final list: (reward, info entries ``kpis`` and ``reward_terms``)."""
        target = int(self.target[slot])
        rank0 = final.index(target) if target in final else None
        if final:
            ids = np.asarray(final, dtype=np.int64)
            sims = 0.5 * (self.world.item_text_unit[ids] @ self.world.item_text_unit[target]
                          + self.world.item_vec_unit[ids] @ self.world.item_vec_unit[target])
        else:
            sims = np.zeros(0)
        prefs = np.stack(self.prefs[slot]) if self.prefs[slot] else np.zeros((0, self.world.encoder.dim))
        terms = episode_reward(stage, format_ok, prefs, rank0, sims)
        hit = rank0 is not None and format_ok
        kpis = {
            "Recall@1": float(hit and rank0 < 1),
            "Recall@5": float(hit and rank0 < 5),
            "Recall@10": float(hit and rank0 < 10),
            "NDCG@5": float(1.0 / np.log2(rank0 + 2)) if hit and rank0 < 5 else 0.0,
            "NDCG@10": float(1.0 / np.log2(rank0 + 2)) if hit and rank0 < 10 else 0.0,
            "n_calls": float(self.n_calls(slot)),
            "pool_size": float(len(self.pool[slot])),
            "format_ok": float(format_ok),
            "target_in_pool": float(target in self.pool[slot]),
        }
        reward_terms = {k: getattr(terms, k) for k in ("format", "invocation", "diversity", "hit", "similarity")}
        return terms.total, {"kpis": kpis, "reward_terms": reward_terms}


class _StageSchedule:
    """The reward stage of an env: config stage, optional first-N-episodes stage 1, explicit override."""

    def __init__(self, config: TRMRetrievalConfig) -> None:
        self.stage = config.reward_stage
        self.stage1_episodes = config.stage1_episodes
        self.finished = 0

    def current(self) -> int:
        return 1 if self.finished < self.stage1_episodes else self.stage

    def set(self, stage: int) -> None:
        if stage not in (1, 2):
            raise ValueError(f"reward stage must be 1 or 2, got {stage!r}")
        self.stage = stage
        self.stage1_episodes = 0


class TRMRetrievalEnv(gym.Env):
    """DeepRec retrieval in vector mode (see the module docstring)."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, config: TRMRetrievalConfig | dict | None = None, render_mode: str | None = None, **overrides) -> None:
        self.config = make_config(TRMRetrievalConfig, config, **overrides)
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode {render_mode!r} is not supported; allowed: None, {self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.world = self.config.world()
        self.episodes = RetrievalEpisodes(self.world, self.config, 1)
        self.phrases = self.world.vocabulary.phrases
        self.V = len(self.phrases)
        self.PLAIN = self.V
        self.STOP = self.V + 1
        self.action_space = gym.spaces.Discrete(self.V + 2)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (self.episodes.obs_dim,), np.float32)
        self._schedule = _StageSchedule(self.config)
        self._done = True

    @property
    def reward_stage(self) -> int:
        """The stage the next episode end is scored with."""
        return self._schedule.current()

    def set_reward_stage(self, stage: int) -> None:
        """Switch the reward stage (1: format + process, 2: format + outcome) from now on."""
        self._schedule.set(stage)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        user = _user_option(options)
        self.episodes.start([0], [self.np_random], [user])
        self._done = False
        return self.episodes.obs[0].copy(), self._info()

    def step(self, action):
        if self._done:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        a = _check_discrete(action, self.action_space.n)
        reward, terminated = 0.0, False
        if a != self.STOP:
            pref = self.world.phrase_embeddings[a] if a < self.V else np.zeros(self.world.encoder.dim, np.float32)
            self.episodes.call([0], pref[None], [a])
        info = self._info()  # before an end moves the stage schedule on: the stage this step is scored with
        if a == self.STOP or self.episodes.n_calls(0) >= self.config.max_calls:
            reward, end_info = self._finish()
            info.update(end_info)
            terminated = True
        reward = self.episodes.step_reward(0, reward if terminated else None, info["reward_stage"])
        return self.episodes.obs[0].copy(), float(reward), terminated, False, info

    def _finish(self) -> tuple[float, dict]:
        reward, info = self.episodes.end(0, self.reward_stage)
        self._schedule.finished += 1
        self._done = True
        return reward, info

    def _info(self) -> dict:
        return {
            "n_calls": self.episodes.n_calls(0),
            "pool_size": len(self.episodes.pool[0]),
            "reward_stage": self.reward_stage,
        }

    def action_masks(self) -> np.ndarray:
        """bool[V + 2] for MaskablePPO: repeating a call only re-retrieves the same items, and STOP
        before any call is a format violation, so both are masked (the env still accepts them)."""
        return self.episodes.action_masks()[0]

    def phrase_feature_layout(self) -> dict:
        """The per-phrase observation blocks (first column of each V-wide block: history share, pool
        share, used, hinted), for :class:`agents.phrase_policy.PhraseScoringPolicy`."""
        blocks = [self.episodes._o(part).start for part in ("hist_profile", "pool_profile", "used", "hint")]
        return {"n_phrases": self.V, "phrase_blocks": blocks}

    def hint(self) -> int | None:
        """The planner's hint phrase index of this episode, or None (``planner_knowledge`` = 0)."""
        h = int(self.episodes.hint[0])
        return None if h < 0 else h

    def history_profile(self) -> np.ndarray:
        """float32[V]: share of the current user's history items each phrase describes."""
        return self.episodes.obs[0, self.episodes._o("hist_profile")].copy()

    def render(self):
        if self.render_mode == "rgb_array":
            # The observation as an image strip: red = negative, green = positive, 8 px per feature.
            obs = self.episodes.obs[0]
            strip = np.zeros((16, obs.size, 3), dtype=np.uint8)
            strip[:, :, 0] = (255 * np.clip(-obs, 0, 1)).astype(np.uint8)
            strip[:, :, 1] = (255 * np.clip(obs, 0, 1)).astype(np.uint8)
            return np.repeat(strip, 8, axis=1)
        if self.render_mode != "ansi":
            return None
        ep = self.episodes
        titles = self.world.dataset.item_titles
        hist = ", ".join(titles[i] for i in ep.history[0][-5:])
        return (
            f"user {ep.user[0]} (last items: {hist}) target {titles[ep.target[0]]!r}; "
            f"calls {ep.n_calls(0)}, pool {len(ep.pool[0])}, stage {self.reward_stage}"
        )


def _user_index(value, where: str) -> int:
    if not is_int(value):
        raise ValueError(f"{where} must be an int user index, got {value!r}")
    return int(value)


def _user_option(options: dict | None) -> int | None:
    user = check_options(options, {"user"}).get("user")
    return None if user is None else _user_index(user, "options['user']")


def _vector_user_options(options: dict | None, num_envs: int) -> list[int | None]:
    """Per sub-env pinned users: ``{"users": [...]}`` one each (as LatentReasoning's vector env), ``{"user": u}``
    the same for all, else none."""
    options = check_options(options, {"user", "users"})
    if "users" not in options:
        return [_user_option(options)] * num_envs
    if "user" in options:
        raise ValueError("options 'user' and 'users' exclude each other; give one")
    users = options["users"]
    if not isinstance(users, (list, tuple, np.ndarray)) or len(users) != num_envs:
        raise ValueError(f"options['users'] must be {num_envs} int user indices (one per sub-env), got {users!r}")
    return [_user_index(u, "options['users'] entries") for u in users]


def _check_discrete(action, n: int) -> int:
    a = np.asarray(action)
    if a.shape != () or a.dtype.kind not in "iu":  # as Discrete.contains: a float 3.0 is not an action
        raise ValueError(f"action {action!r} is not an integer; allowed: 0..{n - 1}")
    if not 0 <= int(a) < n:
        raise ValueError(f"action {action!r} is outside Discrete({n}); allowed: 0..{n - 1}")
    return int(a)


class TRMRetrievalVectorEnv(gym.vector.VectorEnv):
    """N DeepRec episodes with one batched TRM call per step; next-step autoreset.

    Sub-env i seeded with ``seed + i`` reproduces the scalar env reset with that seed; ``options={"users": [...]}``
    pins each sub-env's first episode to a user, ``{"user": u}`` all of them to one. ``infos`` hold the
    scalar env's ``n_calls``, ``pool_size`` and ``reward_stage`` as arrays over sub-envs, and at an
    episode's end its ``kpis`` and ``reward_terms`` (valid where ``infos["_kpis"]`` is True).
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 4, config: TRMRetrievalConfig | dict | None = None, render_mode: str | None = None, **overrides) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if render_mode is not None:
            raise ValueError(f"render_mode {render_mode!r} is not supported by the vector env; allowed: None")
        self.config = make_config(TRMRetrievalConfig, config, **overrides)
        self.num_envs = num_envs
        self.world = self.config.world()
        self.episodes = RetrievalEpisodes(self.world, self.config, num_envs)
        self.V = len(self.world.vocabulary)
        self.PLAIN, self.STOP = self.V, self.V + 1
        self.single_action_space = gym.spaces.Discrete(self.V + 2)
        self.single_observation_space = gym.spaces.Box(-1.0, 1.0, (self.episodes.obs_dim,), np.float32)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self._rngs = [seeding.np_random(None)[0] for _ in range(num_envs)]
        self._schedules = [_StageSchedule(self.config) for _ in range(num_envs)]
        self._needs_reset = np.ones(num_envs, dtype=bool)
        self._reset_called = False

    def action_masks(self) -> np.ndarray:
        """bool[num_envs, V + 2]: each sub-env's mask (see :meth:`TRMRetrievalEnv.action_masks`)."""
        return self.episodes.action_masks()

    def set_reward_stage(self, stage: int) -> None:
        """Switch every sub-env's reward stage."""
        for s in self._schedules:
            s.set(stage)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"{len(seeds)} seeds for {self.num_envs} envs")
        for i, s in enumerate(seeds):
            if s is not None or self._rngs[i] is None:
                self._rngs[i] = seeding.np_random(s)[0]
        slots = list(range(self.num_envs))
        self.episodes.start(slots, [self._rngs[i] for i in slots], _vector_user_options(options, self.num_envs))
        self._needs_reset[:] = False
        self._reset_called = True
        return self.episodes.obs.copy(), self._episode_infos({}, [self._schedules[i].current() for i in slots])

    def step(self, actions):
        if not self._reset_called:
            raise RuntimeError("step() called before reset()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {actions.shape}")
        acts = [_check_discrete(a, self.V + 2) for a in actions.tolist()]
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        infos: dict = {}
        stages = [s.current() for s in self._schedules]  # the stage each sub-env's step is scored with
        resetting = [i for i in range(self.num_envs) if self._needs_reset[i]]
        if resetting:
            self.episodes.start(resetting, [self._rngs[i] for i in resetting], [None] * len(resetting))
            self._needs_reset[resetting] = False
        calling = [i for i in range(self.num_envs) if i not in resetting and acts[i] != self.STOP]
        prefs = np.stack([
            self.world.phrase_embeddings[acts[i]] if acts[i] < self.V else np.zeros(self.world.encoder.dim, np.float32)
            for i in calling
        ]) if calling else np.zeros((0, self.world.encoder.dim), np.float32)
        self.episodes.call(calling, prefs, [acts[i] for i in calling])
        for i in range(self.num_envs):
            if i in resetting:
                continue
            stage = stages[i]
            if acts[i] == self.STOP or self.episodes.n_calls(i) >= self.config.max_calls:
                reward, info = self.episodes.end(i, stage)
                self._schedules[i].finished += 1
                rewards[i], terminated[i] = self.episodes.step_reward(i, reward, stage), True
                self._needs_reset[i] = True
                infos = self._add_info(infos, info, i)
            else:
                rewards[i] = self.episodes.step_reward(i, None, stage)
        infos = self._episode_infos(infos, stages)
        return self.episodes.obs.copy(), rewards, terminated, np.zeros(self.num_envs, dtype=bool), infos

    def _episode_infos(self, infos: dict, stages: list[int]) -> dict:
        """``infos`` plus the scalar env's per-step entries (``n_calls``, ``pool_size``, ``reward_stage``) of
        every sub-env: arrays of ``num_envs`` values."""
        infos["n_calls"] = np.array([self.episodes.n_calls(i) for i in range(self.num_envs)])
        infos["pool_size"] = np.array([len(self.episodes.pool[i]) for i in range(self.num_envs)])
        infos["reward_stage"] = np.array(stages)
        for key in ("n_calls", "pool_size", "reward_stage"):
            infos[f"_{key}"] = np.ones(self.num_envs, dtype=bool)
        return infos
