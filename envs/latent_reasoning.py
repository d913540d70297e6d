"""``recrail/LatentReasoning-v0``: decide how a LARES recommender reasons, one latent step at a time.

World: a frozen LARES model (:mod:`simulators.recsys.lares`) and a leave-one-out split. Default: the
synthetic default world (``SyntheticConfig()``, seed 0) with the shipped SPT weights
``simulators/recsys/weights/lares_default.pt``; real data via ``data_path`` + ``checkpoint``.

Episode: one user of the configured split ("valid" by default: inputs = training sequence, target =
validation item; "test": inputs also include the validation item). ``reset`` picks a user uniformly
with ``self.np_random``, skipping the held-out fold ``u % n_folds == holdout_fold`` if one is set
(or ``options={"user": u}``, a user index with a target in the split; ``options={"split": s}``
switches the split for that episode), runs the pre-block once, draws the initial reasoning state
``T_0 = 3 z`` (``z`` truncated normal, from ``self.np_random``) and applies the **first** reasoning
step, so every episode has depth >= 1.

Actions (``action_mode``):
- ``"halt"``: ``Discrete(2)``; 0 = continue (apply one more reasoning step, reward ``-step_cost``),
  1 = stop (the current ranking is final). Reaching ``max_depth`` is a forced stop: the ranking at
  ``max_depth`` is final and rewarded, and the episode is **terminated**. It is not a truncation
  because nothing follows the final ranking: a value-bootstrapping agent (SB3, RLlib PPO) would add
  V(last state) on top of the final reward paid there, which made PPO always run to ``max_depth``.
- ``"residual"``: ``Box(-1, 1, (residual_dim,))``; the refinement ``residual_scale * a @ P``
  (``P``: a fixed random ``[residual_dim, hidden]`` matrix with orthonormal rows, from
  ``projection_seed``) is added to the last position's state, then one reasoning step is applied.
  The episode **terminates** at depth ``residual_depth`` (the model's evaluation depth, 4).
Actions outside the action space raise ``ValueError``.

Observation: ``Box(float32, (hidden + 4,))`` =
``[h (hidden values: the last position's latent state, a LayerNorm output),
depth (the number of reasoning steps applied so far, 1..horizon; horizon = max_depth or residual_depth),
top score (the best non-history item's dot-product score),
margin (top-1 minus top-2 score, >= 0; 0 when the history leaves a single rankable item),
entropy deficit (log(n_items) minus the softmax entropy over non-history items, in nats, in
[0, log(n_items)]: 0 = uniform, larger = more peaked)]``, and with ``observe_state_change=True`` a
fifth statistic, ``log(1 + state change)`` (``info["state_change"]`` below; logarithmic because the change shrinks
geometrically with depth: medians 17.0, 4.9, 2.2, 1.0 for steps 1-4 on ML-100K's validation users), so
``Box(float32, (hidden + 5,))``. ``observe_latent=False`` drops ``h``: the observation is then the
statistics only (``Box(float32, (4,))`` or ``(5,)``), which describe how settled the ranking is but cannot
tell one user from another, so a policy trained on the validation users' targets cannot memorize them.
The depth and the entropy deficit are on the scale of the other features (on Beauty's SPT model the
deficit is about 0.73 +- 0.23 nats), where the entropy divided by log(n_items) varied by only 0.025
(std), too little for an unnormalized MLP policy to use. Agents should still normalize observations
(the LatentReasoning experiment file turns on SB3's ``VecNormalize`` and RLlib's ``MeanStdFilter``).
The bounds of h, top score and margin are derived from the model's weights (``ReasoningBatch.spaces``).
"Non-history items" leave out a target the user consumed before (a repeat; datasets with repeats only), as any
history item: were it put back, the statistics would differ with the hidden label. The reward still ranks it.

Reward: on the final step, the final ranking's NDCG@k (``reward_metric="ndcg"``) or Recall@k of the
held-out target over all items with the user's history masked (full ranking; k = 10; the target
itself stays ranked even if it is in the history, as in ``metrics.target_ranks``). Halt mode
adds ``-step_cost`` per continue. With ``shaping=True`` every reasoning step after the first also
earns ``shaping_coef * (log p_t(target) - log p_{t-1}(target))`` (softmax over non-history items and the target);
this changes the objective (it adds ``shaping_coef * log p_final``). ``potential_shaping=True``
instead pays the terminal metric as it accrues (potential-based shaping, Ng et al. 1999, with
``Phi(s)`` = the metric of the current ranking and ``Phi = 0`` after the end): every reasoning step after
the first earns ``metric_t - metric_{t-1}``, and the stop pays nothing more. An episode's return is
then the unshaped return minus ``metric_1`` (the ranking after the first step, which no action
changes), so the optimal policy is the same, and each continue is rewarded by its own effect
instead of by a 0-or-1 outcome shared by all steps.

``info``: ``depth``, ``user`` and ``state_change`` every step (the L2 distance the last reasoning step moved
the last position's state: from ``T_0``, plus the refinement in residual mode, to ``h``). It shows
whether reasoning has settled, which the default observation does not: on Beauty's window-trained SPT model
(3,000 validation users) stopping once it falls below a threshold comes within 0.0009 NDCG@10 of fixed
depth 4 at 2.8 mean steps, where the best threshold on the margin, top score or entropy deficit is 0.0030 or more
below (the ``state_change_halting`` baseline). It is in the observation only with
``observe_state_change=True``: on Beauty's window-trained model the raw value there made SB3's PPO halting
worse in 3 of 3 seeds (by 0.0009 to 0.0015 NDCG@10 against fixed depth 4; README).
On the final step ``info["kpis"]`` =
``{"NDCG@10", "Recall@10", "MRR", "rank", "steps"}`` (``rank`` is 0-based, ``steps`` = depth used).

Speed: building the env sets torch to ``torch_threads`` (1) intra-op threads, because one user per
call runs much faster single-threaded; pass ``torch_threads=None`` to keep torch's setting.

:class:`LatentReasoningVectorEnv` steps many users in one torch call (the `vector_entry_point`);
it follows gymnasium's next-step autoreset: the step after an episode ends resets that sub-env
(its action is ignored, reward 0). Sub-env ``i`` seeded with ``seed + i`` reproduces the scalar env
seeded with ``seed + i`` under the same actions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.config import check_options, make_config
from simulators.checks import check_field, is_finite, is_int
from simulators.recsys.lares import DEFAULT_WEIGHTS, LARES, dataset_digest, load_lares, truncated_normal
from simulators.recsys.split import STAGES, LeaveOneOutSplit, leave_one_out

ACTION_MODES = ("halt", "residual")
CONTINUE, STOP = 0, 1
_NONE = np.zeros(0, dtype=np.int64)  # "no slots"
_MASKED = -1e9  # finite score of history items: exp2() underflows to 0 and 0 * fill stays 0
_BLOCK = 128  # score columns per block of the two-level top-2 search
_KPIS = ("NDCG@10", "Recall@10", "MRR", "rank", "steps")
_LN2 = float(np.log(2.0))


def _ndcg(rank: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k of 0-based ranks of a single relevant item."""
    return np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)


@dataclass(frozen=True)
class LatentReasoningConfig:
    """Settings of :class:`LatentReasoningEnv` (see the module docstring)."""

    action_mode: str = "halt"
    step_cost: float = 0.002
    max_depth: int = 12
    residual_depth: int = 4
    residual_dim: int = 8
    residual_scale: float = 0.5
    projection_seed: int = 0
    reward_metric: str = "ndcg"
    k: int = 10
    shaping: bool = False
    shaping_coef: float = 0.1
    potential_shaping: bool = False
    split: str = "valid"
    # hold out the users u with u % n_folds == holdout_fold from the random draw at reset (None: no
    # hold-out), to choose settings on users the agent did not train on; pinned users stay allowed
    holdout_fold: int | None = None
    n_folds: int = 5
    data_path: str | None = None
    data_format: str = "auto"
    checkpoint: str | None = None
    # append log(1 + info["state_change"]) to the observation (off: the four ranking statistics only)
    observe_state_change: bool = False
    # lead the observation with the last position's latent state (off: the ranking statistics only)
    observe_latent: bool = True
    # torch intra-op threads set when the env is built (None: leave torch's setting). One user per
    # call is far faster single-threaded: measured 41 ms vs 947 ms per step on the busy 2-core box.
    torch_threads: int | None = 1

    def __post_init__(self) -> None:
        check_field(self, "action_mode", self.action_mode in ACTION_MODES, f"one of {ACTION_MODES}")
        check_field(self, "step_cost", is_finite(self.step_cost) and self.step_cost >= 0, "a float >= 0")
        # reset applies step 1, so a horizon of 1 would leave nothing to decide
        check_field(self, "max_depth", is_int(self.max_depth) and 2 <= self.max_depth <= 64, "an int in 2..64")
        check_field(self, "residual_depth", is_int(self.residual_depth) and 2 <= self.residual_depth <= 64,
                    "an int in 2..64")
        check_field(self, "residual_dim", is_int(self.residual_dim) and self.residual_dim >= 1,
                    "an int in 1..the model's hidden size")
        check_field(self, "residual_scale", is_finite(self.residual_scale) and self.residual_scale >= 0, "a float >= 0")
        check_field(self, "projection_seed", is_int(self.projection_seed) and self.projection_seed >= 0, "an int >= 0")
        for flag in ("shaping", "potential_shaping", "observe_state_change", "observe_latent"):
            check_field(self, flag, isinstance(getattr(self, flag), (bool, np.bool_)), "True or False")
        check_field(self, "reward_metric", self.reward_metric in ("ndcg", "recall"), "'ndcg' or 'recall'")
        check_field(self, "k", is_int(self.k) and self.k >= 1, "an int >= 1")
        check_field(self, "shaping_coef", is_finite(self.shaping_coef) and self.shaping_coef >= 0, "a float >= 0")
        check_field(self, "split", self.split in STAGES, f"one of {STAGES}")
        check_field(self, "n_folds", is_int(self.n_folds) and self.n_folds >= 2, "an int >= 2")
        check_field(self, "holdout_fold", self.holdout_fold is None
                    or (is_int(self.holdout_fold) and 0 <= self.holdout_fold < self.n_folds),
                    f"None or an int in 0..n_folds - 1 = {self.n_folds - 1}")
        check_field(self, "torch_threads",
                    self.torch_threads is None or (is_int(self.torch_threads) and self.torch_threads >= 1),
                    "None or an int >= 1")
        check_field(self, "checkpoint", (self.data_path is None) == (self.checkpoint is None),
                    "None with data_path None (the default world), else a LARES checkpoint trained on data_path")

    def held_out(self, users: np.ndarray) -> np.ndarray:
        """Which of ``users`` the random draw at reset skips (``u % n_folds == holdout_fold``; none without one)."""
        users = np.asarray(users)
        if self.holdout_fold is None:
            return np.zeros(users.shape, dtype=bool)
        return users % self.n_folds == self.holdout_fold


@functools.lru_cache(maxsize=4)
def load_reasoning_world(data_path: str | None, data_format: str, checkpoint: str | None
                         ) -> tuple[LeaveOneOutSplit, LARES]:
    """The split and the frozen LARES model of a config (cached: vector envs and re-makes share it)."""
    if data_path is None:
        from simulators.recsys.synthetic import SyntheticConfig, make_synthetic

        dataset = make_synthetic(SyntheticConfig(), seed=0)
        model = load_lares(DEFAULT_WEIGHTS)
    else:
        from simulators.recsys.loaders import load_dataset

        dataset = load_dataset(data_path, data_format)
        model = load_lares(checkpoint)
    digest = model.meta.get("data_sha256")
    if digest is not None and digest != dataset_digest(dataset):
        raise ValueError(f"checkpoint {checkpoint or DEFAULT_WEIGHTS} was trained on other data (sha {digest}); "
                         "retrain it: python -m agents.lares_post_training --help")
    if model.config.n_items != dataset.n_items:
        raise ValueError(
            f"checkpoint has {model.config.n_items} items but dataset {dataset.name!r} has {dataset.n_items}; "
            "the checkpoint was trained on another dataset"
        )
    return leave_one_out(dataset), model.requires_grad_(False).eval()


class ReasoningBatch:
    """Batched episode state of N slots and the one-torch-call transition shared by both envs."""

    def __init__(self, config: LatentReasoningConfig, n: int) -> None:
        self.config = config
        if config.torch_threads is not None and torch.get_num_threads() != config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        self.split, self.model = load_reasoning_world(config.data_path, config.data_format, config.checkpoint)
        # the users each stage's resets draw from, outside the held-out fold (fixed: not recomputed per reset)
        staged = {stage: self.split.users(stage) for stage in STAGES}
        self._eligible = {s: u[~config.held_out(u)] for s, u in staged.items()}
        c = self.model.config
        self.n, self.L, self.d, self.n_items = n, c.max_len, c.hidden, c.n_items
        self.max_entropy = float(np.log(self.n_items))  # nats, the uniform softmax's
        self.horizon = config.max_depth if config.action_mode == "halt" else config.residual_depth
        check_field(config, "residual_dim", config.action_mode != "residual" or config.residual_dim <= c.hidden,
                    f"an int in 1..the model's hidden size {c.hidden}")
        gauss = np.random.default_rng(config.projection_seed).standard_normal((c.hidden, config.residual_dim))
        q, _ = np.linalg.qr(gauss)
        self.projection = torch.from_numpy(q.T.astype(np.float32))  # [k, d], orthonormal rows
        self.H = torch.zeros(n, self.L, self.d)
        self.mask = torch.zeros(n, 1, self.L, self.L, dtype=torch.bool)
        self.T = torch.zeros(n, self.L, self.d)
        self.targets = torch.ones(n, dtype=torch.long)
        # history items per slot as padded indices (0 = padding, itself masked): scattering into a
        # few columns is far cheaper than a dense [n, n_items] mask
        self.width = max(self.L, max(len(seq) for seq in self.split.dataset.sequences) + 1)
        self.history = torch.zeros(n, self.width, dtype=torch.long)
        self.hide_target = torch.zeros(n, dtype=torch.bool)  # see hidden_targets
        # per-step scores go to preallocated buffers (no 10 MB allocations per step), padded to whole
        # blocks; padding columns get zero embeddings and are masked after each product. The table is
        # scaled by log2(e), so the product gives scores in bits (score / ln 2) and the softmax can use
        # exp2, about twice as fast as exp on CPU (measured 1.8 vs 3.5 ms per 256 x 12,160 scores)
        self.block = max(2, min(_BLOCK, (self.n_items + 1) // 2))  # >= 2 blocks of >= 2 columns
        self.n_cols = max(2, -(-(self.n_items + 1) // self.block)) * self.block
        emb = self.model.item_embedding.weight.detach() / _LN2
        self.emb_t = torch.cat([emb, emb.new_zeros(self.n_cols - len(emb), self.d)]).T
        self.scores = torch.empty(n, self.n_cols)
        self.work = torch.empty(n, self.n_cols)
        # when n_cols * exp(bound) stays below float32's max (e^88), neither exp(score) nor its sum can
        # overflow (nor can the top score's exp underflow): then the softmax needs no max-shift pass
        self.shift = self.score_bound() + np.log(self.n_cols) > 85.0
        self.users = np.zeros(n, dtype=np.int64)
        self.depth = np.zeros(n, dtype=np.int64)
        self.rank = np.zeros(n, dtype=np.int64)
        self.logp = np.zeros(n, dtype=np.float64)
        self.phi = np.zeros(n, dtype=np.float64)  # metric of the current ranking (potential_shaping only)
        self.h_dim = self.d if config.observe_latent else 0  # observation columns of the latent state
        self.obs = np.zeros((n, self.h_dim + 4 + config.observe_state_change), dtype=np.float32)
        self.change = np.zeros(n, dtype=np.float64)  # info["state_change"]

    @torch.no_grad()
    def transition(self, cont: np.ndarray, residual: np.ndarray | None, begin: np.ndarray,
                   begin_users: np.ndarray, begin_stage: str, begin_noise: np.ndarray) -> np.ndarray:
        """One reasoning step for slots ``cont`` (plus their refinements) and the first step of new
        episodes in slots ``begin``; returns the shaping reward of the ``cont`` slots (zeros without
        shaping; see the module docstring)."""
        if len(begin):
            # the whole left-padded input sequence is both the history and (its tail) the model input
            history, targets = self.split.batch(begin_stage, begin_users, self.width)
            H, mask = self.model.prepare(history[:, -self.L:])
            self.H[begin], self.mask[begin], self.targets[begin] = H, mask, targets
            self.history[begin] = history
            self.hide_target[begin] = self.hidden_targets(history, targets)
            self.T[begin] = self.model.config.init_scale * torch.from_numpy(begin_noise)
            self.users[begin], self.depth[begin] = begin_users, 0
        slots = np.sort(np.concatenate([cont, begin]))
        if not len(slots):
            return np.zeros(len(cont))
        whole = len(slots) == self.n  # every slot moves: work on the tensors without gather copies
        sel = slice(None) if whole else torch.from_numpy(slots)
        T = self.T if whole else self.T[sel]
        if residual is not None and len(cont):
            refine = torch.zeros(self.n, self.config.residual_dim)
            refine[cont] = torch.from_numpy(residual).float()
            T[:, -1] += self.config.residual_scale * refine[sel] @ self.projection
        T_next = self.model.step(T, self.H[sel], self.mask[sel])
        change = torch.linalg.vector_norm(T_next[:, -1] - T[:, -1], dim=1).numpy()
        self.T[sel] = T = T_next
        h = T[:, -1]
        top1, margin, entropy, logp, rank = self.ranking_stats(h, sel)
        old = self.logp[cont].copy()
        self.logp[slots] = logp.double().numpy()
        self.rank[slots] = rank.numpy()
        self.depth[slots] += 1
        obs = self.obs[slots]
        d = self.h_dim
        obs[:, :d] = h[:, :d].numpy()  # all of h, or nothing without observe_latent
        obs[:, d] = self.depth[slots]
        obs[:, d + 1] = top1.numpy()
        obs[:, d + 2] = margin.numpy()
        obs[:, d + 3] = np.clip(self.max_entropy - entropy.numpy(), 0.0, self.max_entropy)  # round-off
        if self.config.observe_state_change:
            obs[:, d + 4] = np.log1p(change)
        self.obs[slots] = obs
        self.change[slots] = change
        cfg = self.config
        shaping = cfg.shaping_coef * (self.logp[cont] - old) if cfg.shaping else np.zeros(len(cont))
        if cfg.potential_shaping:
            old_phi = self.phi[cont].copy()
            self.phi[slots] = self.metric(slots)
            shaping += self.phi[cont] - old_phi
        return shaping

    def final_reward(self, slots: np.ndarray) -> np.ndarray:
        """Reward paid when ``slots`` end: the metric of the final ranking. With potential shaping it
        was all paid as it accrued (``transition`` scored every ranking, so ``rank`` is current): 0."""
        return np.zeros(len(slots)) if self.config.potential_shaping else self.metric(slots)

    def ranking_stats(self, h: torch.Tensor, sel: slice | torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top score, top-1 minus top-2 margin, softmax entropy (nats), the target's log-prob and its
        0-based rank of the history-masked scores of ``h`` ``[k, d]``, in one product and four passes
        over the scores. The rank of every step is kept because the episode may end on it (a stop, or
        potential shaping scoring each step): one pass now is cheaper than a second product then.

        Top-2 is two-level (block maxima, then the winning block), much cheaper than ``topk`` over
        all items; the entropy is ``log Z - ln 2 sum_j e_j x_j / Z`` with ``e = 2^x`` (``x`` in bits, see
        ``__init__``), computed in place in the preallocated buffers, where ``x = s - max`` only if the
        weight-derived score bound allows an overflow (``self.shift``), else ``x = s``.
        """
        k = len(h)
        s, target, hidden = self._masked_scores(h, sel)
        # counted as floats in the work buffer (exact below 2^24 columns): summing a bool tensor is ~6x slower;
        # a hidden target's column is masked, so it does not count itself
        rank = torch.ge(s, target, out=self.work[:k]).sum(1).long() - 1 + hidden.long()
        blocks = s.view(k, -1, self.block)
        best2, where = blocks.amax(2).topk(2, dim=1)
        inner2 = blocks[torch.arange(k), where[:, 0]].topk(2, dim=1).values
        top1 = best2[:, 0]
        second = torch.maximum(best2[:, 1], inner2[:, 1])
        margin = torch.where(second > _MASKED / 2, top1 - second, 0.0)  # 0 when only one item is rankable
        shift = top1 if self.shift else torch.zeros(k)
        x = s.sub_(shift[:, None]) if self.shift else s
        e = torch.exp2(x, out=self.work[:k])
        z = e.sum(1)
        log_z = z.log()
        entropy = log_z - _LN2 * e.mul_(x).sum(1) / z
        t = target.squeeze(1) - shift
        log_zt = torch.where(hidden, (z + torch.exp2(t)).log(), log_z)  # the target's softmax includes it
        return _LN2 * top1, _LN2 * margin, entropy, _LN2 * t - log_zt, rank

    def hidden_targets(self, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Which users' targets are in their history (a repeat consumption) while some other item is not: the
        ranking statistics leave such a target out (else they would differ with the hidden label); it still
        gets its rank (as in ``metrics.target_ranks``). A history of every item keeps the target in."""
        items = history.sort(1).values  # distinct items counted on [users, width], not on a dense item mask
        distinct = (items[:, :1] > 0).sum(1) + ((items[:, 1:] != items[:, :-1]) & (items[:, 1:] > 0)).sum(1)
        return (history == targets[:, None]).any(1) & (distinct < self.n_items)

    def _masked_scores(self, h: torch.Tensor, sel: slice | torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores in bits (``h . e_j / ln 2``) ``[k, n_cols]`` of ``h`` ``[k, d]`` with the history and the
        padding columns masked (a view of the reused buffer), the target's score ``[k, 1]`` and whether the
        target is hidden ``[k]`` (masked too: :meth:`hidden_targets`)."""
        s = torch.mm(h, self.emb_t, out=self.scores[:len(h)])
        s[:, self.n_items + 1:] = _MASKED
        targets, hidden = self.targets[sel, None], self.hide_target[sel]
        target = s.gather(1, targets)
        s.scatter_(1, self.history[sel], _MASKED).scatter_(1, targets, target.masked_fill(hidden[:, None], _MASKED))
        return s, target, hidden

    def _ranked_scores(self, h: torch.Tensor, sel: slice | torch.Tensor) -> torch.Tensor:
        """The evaluation's scores: history masked, the target always ranked (as in ``metrics.target_ranks``)."""
        s, target, _ = self._masked_scores(h, sel)
        return s.scatter_(1, self.targets[sel, None], target)

    @torch.no_grad()
    def top_items(self, k: int) -> np.ndarray:
        """Item ids ``[n, k]`` of every slot's current top-k ranking (history masked, best first), from one
        extra score product: for offline analyses of how rankings settle (the observation keeps the top 2)."""
        if not 1 <= k <= self.n_items:
            raise ValueError(f"k = {k!r} is invalid; allowed: an int in 1..n_items = {self.n_items}")
        scores = self._ranked_scores(self.T[:, -1], slice(None))
        return scores.topk(k, dim=1).indices.numpy()

    def metric(self, slots: np.ndarray) -> np.ndarray:
        """Terminal reward of ``slots``: NDCG@k or Recall@k of the current ranking."""
        rank, k = self.rank[slots], self.config.k
        return (rank < k).astype(np.float64) if self.config.reward_metric == "recall" else _ndcg(rank, k)

    def kpis(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """KPIs of the finished episodes of ``slots``, one array per KPI."""
        r = self.rank[slots].astype(np.float64)
        return {"NDCG@10": _ndcg(r, 10), "Recall@10": (r < 10).astype(np.float64), "MRR": 1.0 / (r + 1.0),
                "rank": r, "steps": self.depth[slots].astype(np.float64)}

    def spaces(self) -> tuple[spaces.Box, spaces.Space]:
        """Observation and action space of one episode.

        Bounds follow from the weights: the state is a LayerNorm output, so ``|h_i| <=
        |gamma_i| sqrt(d - 1) + |beta_i|`` and ``|score| <= ||h|| max_j ||e_j||`` (1% slack for
        float round-off). The state change is at most ``||h||`` plus the norm of the state it left: a
        LayerNorm output or the initial noise (``|T0_i| <= 3 init_scale``), plus a refinement
        (``residual_scale sqrt(residual_dim)``, orthonormal projection).
        """
        gamma, beta = self._output_ln()
        h_max = 1.01 * (gamma * np.sqrt(self.d - 1) + beta)
        s_max = self.score_bound()
        low = [-h_max[: self.h_dim], [0.0, -s_max, 0.0, 0.0]]
        high = [h_max[: self.h_dim], [self.horizon, s_max, 2 * s_max, self.max_entropy]]
        if self.config.observe_state_change:
            h_norm = float(np.linalg.norm(h_max))
            left = max(h_norm, 3.0 * self.model.config.init_scale * np.sqrt(self.d))
            if self.config.action_mode == "residual":
                left += self.config.residual_scale * np.sqrt(self.config.residual_dim)
            low.append([0.0])
            high.append([np.log1p(1.01 * (h_norm + left))])
        low, high = np.concatenate(low).astype(np.float32), np.concatenate(high).astype(np.float32)
        obs_space = spaces.Box(low, high, dtype=np.float32)
        if self.config.action_mode == "halt":
            return obs_space, spaces.Discrete(2)
        k = self.config.residual_dim
        return obs_space, spaces.Box(-1.0, 1.0, (k,), dtype=np.float32)

    def _output_ln(self) -> tuple[np.ndarray, np.ndarray]:
        ln = self.model.core_block[-1].ln2
        return ln.weight.detach().abs().numpy(), ln.bias.detach().abs().numpy()

    def score_bound(self) -> float:
        """Bound of ``|score|`` (see :meth:`spaces`)."""
        gamma, beta = self._output_ln()
        norm_max = float(gamma.max() * np.sqrt(self.d) + np.linalg.norm(beta))
        return 1.01 * norm_max * float(self.model.item_embedding.weight.detach().norm(dim=1).max())

    def eligible_users(self, stage: str) -> np.ndarray:
        """The users a reset draws from: the stage's users outside the held-out fold."""
        return self._eligible[stage]

    def check_user(self, stage: str, user: Any) -> int:
        users = self.split.users(stage)
        if not is_int(user) or int(user) not in set(users.tolist()):
            raise ValueError(f"options['user'] = {user!r} is not a user index with a {stage!r} target "
                             f"(ints in 0..{self.split.n_users - 1}, {len(users)} eligible)")
        return int(user)

    def check_stage(self, stage: Any) -> str:
        if stage not in STAGES:
            raise ValueError(f"options['split'] = {stage!r} is invalid; allowed: {STAGES}")
        return stage


class LatentReasoningEnv(gym.Env):
    """One user per episode; each step applies one LARES reasoning step (see the module docstring)."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, config: LatentReasoningConfig | dict | None = None, render_mode: str | None = None,
                 **overrides: Any) -> None:
        self.config = make_config(LatentReasoningConfig, config, **overrides)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode = {render_mode!r} is invalid; allowed: None or {self.metadata['render_modes']}"
            )
        self.render_mode = render_mode
        self.batch = ReasoningBatch(self.config, 1)
        self.observation_space, self.action_space = self.batch.spaces()
        self._slot = np.zeros(1, dtype=np.int64)
        self._done = True

    @property
    def world(self) -> tuple[LeaveOneOutSplit, LARES]:
        """The split and the frozen LARES model."""
        return self.batch.split, self.batch.model

    @property
    def depth(self) -> int:
        """Reasoning steps applied so far in this episode."""
        return int(self.batch.depth[0])

    @property
    def state_change(self) -> float:
        """How far the last reasoning step moved the last position's state (``info["state_change"]``)."""
        return float(self.batch.change[0])

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        options = check_options(options, {"split", "user"})
        stage = self.batch.check_stage(options.get("split", self.config.split))
        if "user" in options:
            user = self.batch.check_user(stage, options["user"])
        else:
            users = self.batch.eligible_users(stage)
            user = int(users[self.np_random.integers(len(users))])
        noise = truncated_normal(self.np_random, (1, self.batch.L, self.batch.d))
        self.batch.transition(_NONE, None, self._slot, np.array([user]), stage, noise)
        self._done = False
        return self.batch.obs[0].copy(), {"depth": 1, "user": user, "state_change": self.state_change}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._done:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        b, cfg = self.batch, self.config
        reward, terminated = 0.0, False  # nothing truncates (max_depth is a forced stop)
        if cfg.action_mode == "halt":
            a = _halt_actions(np.asarray(action).reshape(1), action)[0]
            if a == STOP:
                terminated = True
            else:
                reward += float(b.transition(self._slot, None, _NONE, _NONE, cfg.split, None)[0]) - cfg.step_cost
                terminated = b.depth[0] >= cfg.max_depth  # forced stop (module docstring)
        else:
            a = np.asarray(action, dtype=np.float64)
            if a.shape != (cfg.residual_dim,):
                raise ValueError(f"residual actions must have shape ({cfg.residual_dim},), got {a.shape}: {action!r}")
            residual = _residual_actions(a[None], cfg.residual_dim, action)
            reward += float(b.transition(self._slot, residual, _NONE, _NONE, cfg.split, None)[0])
            terminated = b.depth[0] >= cfg.residual_depth
        info: dict[str, Any] = {"depth": int(b.depth[0]), "user": int(b.users[0]), "state_change": self.state_change}
        if terminated:
            reward += float(b.final_reward(self._slot)[0])
            info["kpis"] = {key: float(v[0]) for key, v in b.kpis(self._slot).items()}
            self._done = True
        return b.obs[0].copy(), float(reward), bool(terminated), False, info

    def render(self) -> str | np.ndarray | None:
        """"ansi": one status line; "rgb_array": the softmax of the top 20 items as bars (target red)."""
        b = self.batch
        if self.render_mode == "ansi":
            rank = int(b.rank[0])
            return (f"user {int(b.users[0])} depth {int(b.depth[0])}/{b.horizon} target rank {rank} "
                    f"top score {b.obs[0, b.h_dim + 1]:.3f} margin {b.obs[0, b.h_dim + 2]:.3f} "
                    f"entropy deficit {b.obs[0, b.h_dim + 3]:.3f} state change {b.change[0]:.3f}")
        if self.render_mode != "rgb_array":
            return None
        with torch.no_grad():
            scores = b._ranked_scores(b.T[:1, -1], slice(0, 1))[0]
        top = torch.softmax(_LN2 * scores, 0).topk(20)
        img = np.full((100, 200, 3), 255, dtype=np.uint8)
        for j, (p, item) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            h = int(round(99 * p / max(top.values[0].item(), 1e-12)))
            colour = (220, 40, 40) if item == int(b.targets[0]) else (60, 90, 200)
            img[100 - h:, 10 * j + 1:10 * j + 9] = colour
        return img


def _halt_actions(a: np.ndarray, raw: Any) -> np.ndarray:
    if a.dtype.kind not in "iub" or not np.isin(a, (CONTINUE, STOP)).all():
        raise ValueError(f"halt actions must be 0 (continue) or 1 (stop), got {raw!r}")
    return a.astype(np.int64)


def _residual_actions(a: np.ndarray, k: int, raw: Any) -> np.ndarray:
    if a.shape[-1] != k or not np.isfinite(a).all() or np.abs(a).max(initial=0.0) > 1.0:
        raise ValueError(f"residual actions must be finite vectors of {k} values in [-1, 1], got {raw!r}")
    return a.astype(np.float32)


class LatentReasoningVectorEnv(VectorEnv):
    """``num_envs`` LatentReasoning-v0 episodes advanced together in one torch call per step.

    Next-step autoreset (``metadata["autoreset_mode"]``). ``reset(seed=s)`` seeds sub-env i with
    ``s + i`` (a list seeds each one); ``options={"split": s}`` applies to all sub-envs until the
    next reset, ``options={"users": [...]}`` pins the first episode of each sub-env.
    ``infos["kpis"]`` holds per-KPI arrays, valid where ``infos["_kpis"]`` is True.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1, config: LatentReasoningConfig | dict | None = None,
                 render_mode: str | None = None, **kwargs: Any) -> None:
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs = {num_envs!r} is invalid; allowed: an int >= 1")
        if render_mode is not None:
            raise ValueError(f"render_mode = {render_mode!r} is invalid; the vector env does not render")
        self.config = make_config(LatentReasoningConfig, config, **kwargs)  # make_vec passes kwargs flat
        self.num_envs = int(num_envs)
        self.render_mode = None
        self.batch = ReasoningBatch(self.config, self.num_envs)
        self.single_observation_space, self.single_action_space = self.batch.spaces()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._rngs = [seeding.np_random(None)[0] for _ in range(self.num_envs)]
        self._stage = self.config.split
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._started = False

    def _begin_args(self, slots: np.ndarray, users: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        eligible = self.batch.eligible_users(self._stage)
        chosen, noises = np.empty(len(slots), dtype=np.int64), []
        for j, i in enumerate(slots):
            rng = self._rngs[i]
            chosen[j] = eligible[rng.integers(len(eligible))] if users is None else users[j]
            noises.append(truncated_normal(rng, (1, self.batch.L, self.batch.d)))
        noise = np.concatenate(noises) if noises else np.zeros((0, self.batch.L, self.batch.d), np.float32)
        return chosen, noise

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict]:
        super().reset(seed=int(seed) if isinstance(seed, (int, np.integer)) else None)
        options = check_options(options, {"split", "users"})
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed list must have num_envs = {self.num_envs} entries, got {len(seeds)}")
        for i, s in enumerate(seeds):
            if s is not None:  # an unseeded reset continues each sub-env's generator
                self._rngs[i] = seeding.np_random(s)[0]
        self._stage = self.batch.check_stage(options.get("split", self.config.split))
        users = None
        if "users" in options:
            raw = options["users"]
            if not isinstance(raw, (list, tuple, np.ndarray)) or len(raw) != self.num_envs:
                raise ValueError(f"options['users'] = {raw!r} is invalid; allowed: a list of num_envs = {self.num_envs} "
                                 "user indices")
            users = np.array([self.batch.check_user(self._stage, u) for u in raw])
        slots = np.arange(self.num_envs)
        chosen, noise = self._begin_args(slots, users)
        self.batch.transition(_NONE, None, slots, chosen, self._stage, noise)
        self._autoreset[:] = False
        self._started = True
        return self.batch.obs.copy(), {"depth": self.batch.depth.copy(), "user": self.batch.users.copy(),
                                       "state_change": self.batch.change.copy()}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if not self._started:
            raise RuntimeError("step() called before reset()")
        b, cfg, n = self.batch, self.config, self.num_envs
        begin = np.flatnonzero(self._autoreset)
        live = ~self._autoreset
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        if cfg.action_mode == "halt":
            a = np.asarray(actions)
            if a.shape != (n,):
                raise ValueError(f"actions must have shape ({n},), got {a.shape}")
            a = _halt_actions(a, actions)
            cont = np.flatnonzero(live & (a == CONTINUE))
            terminated[live & (a == STOP)] = True
            residual = None
        else:
            a = np.asarray(actions, dtype=np.float64)
            if a.shape != (n, cfg.residual_dim):
                raise ValueError(f"actions must have shape ({n}, {cfg.residual_dim}), got {a.shape}")
            a = _residual_actions(a, cfg.residual_dim, actions)
            cont = np.flatnonzero(live)
            residual = a[cont]
        chosen, noise = self._begin_args(begin, None)
        rewards[cont] = b.transition(cont, residual, begin, chosen, self._stage, noise)
        if cfg.action_mode == "halt":
            rewards[cont] -= cfg.step_cost
            terminated[cont] = b.depth[cont] >= cfg.max_depth  # forced stop
        else:
            terminated[cont] = b.depth[cont] >= cfg.residual_depth
        ended = np.flatnonzero(terminated)
        rewards[ended] += b.final_reward(ended)
        infos: dict[str, Any] = {"depth": b.depth.copy(), "user": b.users.copy(), "state_change": b.change.copy()}
        if len(ended):
            kp = {key: np.zeros(n) for key in _KPIS}
            for key, v in b.kpis(ended).items():
                kp[key][ended] = v
            infos["kpis"] = kp
            infos["_kpis"] = terminated.copy()
        self._autoreset = terminated.copy()
        return b.obs.copy(), rewards, terminated, np.zeros(n, dtype=bool), infos
