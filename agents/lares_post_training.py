"""Training LARES: self-supervised pre-training (SPT) and GRPO-style reinforcement post-training (RPT).

SPT (:func:`train_spt`): by default the training sequences are cut into next-item windows of
``max_len`` (:func:`training_windows`; CE at every position, the cheap SASRec-style pass);
``windows="prefix"`` uses the authors' instances instead: every (prefix, next item) pair, right-aligned,
CE at its last position (:func:`spt_instances`; on Beauty 5.9x the rows per epoch, and validation
NDCG@10 0.0691 against 0.0630 with ``windows="last"``; README). Each batch draws one step count from
the Poisson-lognormal sampler and pairs every row with a random other row with the same last
target item (its TLA positive); loss = CE + alpha TLA + gamma SLA
(:func:`simulators.recsys.lares.spt_loss`). Model selection: NDCG@10 on the validation users at
``eval_steps``; the best epoch is kept (early stopping with ``patience``). Options beyond the
authors' recipe (all default off): ``init_from`` warm-starts from a trained SASRec checkpoint
(:func:`init_from_sasrec`), ``windows="last"`` trains on each user's most recent window only, and
``--alpha-tla 0`` (``LARESConfig.alpha_tla``) drops the TLA term (on Beauty, validation NDCG@10 0.0580
with it, 0.0630 without; README). ``resume_from`` (``--resume``) continues SPT from a saved SPT model
for more epochs, e.g. to compare with a baseline at the same number of passes over the data; Adam
continues from the moments saved with the checkpoint's best epoch (files saved without them restart it).
``anneal_epochs`` (``--anneal-epochs``, ``--anneal-lr``) adds that continuation in the same run: after early
stopping, up to that many epochs from the best epoch at a lower lr (Beauty's recipe: 2 at a tenth of its lr).

RPT (:func:`train_rpt`): starts from the SPT model, which also stays frozen as the reference.
RPT instances are (prefix, next item) pairs (``LeaveOneOutSplit.prefix_instances``, subsampled to
``max_instances``; ``instances="held-out"``: each user's last pair only, which an SPT trained with
``hold_out_last`` never fitted, so RPT's reward is earned on targets SPT has not memorised), kept only if
their target enters the SPT model's top-``filter_top`` at least once in ``filter_tries`` stochastic scorings
(noise + sampled step count). For each batch, G rollouts are run (rollout g: its own step count, initial
noise and core-block dropout mask, shared across the batch; the embedding and pre-block run once per batch, so
their dropout is shared by the group); the per-step action log-prob is ``log p_t(target)``, the reward is
Recall@10 (or NDCG@10) of the last step's full ranking with the instance's whole history masked (as the
evaluation masks it, not only the model's ``max_len`` input window; on ML-100K 60% of prefix instances are
longer than 50), the advantage
is group-normalised (``advantage`` selects it or the variants of
:func:`simulators.recsys.lares.rollout_advantages`: its positive part, or 1 for every rollout as the
control), and the loss is :func:`simulators.recsys.lares.grpo_loss` with the reference run at the same step
count and noise. ``action="list"`` replaces the authors' action (the target, which every rollout shares, so the
reward can only re-weight pushes on the ground truth): each rollout draws ``list_samples`` ranked lists of ``k``
items from its last step's Plackett-Luce distribution (:mod:`simulators.recsys.plackett_luce`); a list's reward
is the metric of the target's place in it, its per-step log-prob the list's PL log-prob under that step's scores,
and the advantage is normalised over the G x ``list_samples`` lists, so lists that miss the target push their
items down (with ``dropout`` "shared" or "off": against an eval-mode reference the KL of a list explodes).
``dropout`` sets where dropout acts: ``"policy"`` (default, the behaviour before the option) in the policy's
rollouts only, with the reference in eval mode, so the KL term is nonzero before any update; ``"shared"`` in
both, the reference redrawing each rollout's masks from the policy's RNG state (the KL then measures weight
change only); ``"off"`` in neither. The history logs per batch the mean reward, the KL and ``mixed``: the share
of groups whose G rewards differ (the others get no policy gradient). Validation after every epoch (and every
``eval_every`` batches); the best model is kept, the SPT model itself included (so RPT never reports a
validation loss as a gain).

Command line (checkpoints go outside the repo except the small default weights)::

    python -m agents.lares_post_training --default-world --phase spt \
        --out simulators/recsys/weights/lares_default.pt --half      # the shipped default weights
    python -m agents.lares_post_training --data ../shared/data/ml-100k --phase both \
        --out runs/lares_ml100k.pt --time-budget 1200
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from simulators.recsys.lares import (
    ADVANTAGES,
    LARES,
    LOSS_FIELDS,
    LARESConfig,
    dataset_digest,
    evaluate_ranks,
    grpo_loss,
    kl_k3,
    load_lares,
    load_lares_and_optimizer,
    mixed_share,
    rank_metrics,
    rollout_advantages,
    sample_steps,
    save_lares,
    spt_loss,
    trim_padding,
)
from simulators.recsys.metrics import RANK_METRICS, rank_metric, target_ranks
from simulators.recsys.plackett_luce import list_log_prob, list_rewards, sample_lists
from simulators.recsys.best_epoch import check_anneal_phase, restart_at_lr, snapshot
from simulators.recsys.sasrec import load_checkpoint
from simulators.recsys.split import LeaveOneOutSplit, leave_one_out


def _check_eval_users(owner: str, n: int | None) -> None:
    if n is not None and n < 1:
        raise ValueError(f"{owner}.eval_users = {n!r} is invalid; allowed: None (all validation users) or an int >= 1")


def _check_budget(owner: str, seconds: float | None) -> None:
    if seconds is not None and not seconds > 0:  # 0 used to mean "no budget" and a negative one a single epoch
        raise ValueError(f"{owner}.time_budget_s = {seconds!r} is invalid; allowed: None (no budget) or seconds > 0")


@dataclass(frozen=True)
class SPTConfig:
    """SPT loop settings."""

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5
    eval_users: int | None = 2000  # validation users per epoch (a fixed random subset), None = all
    time_budget_s: float | None = None  # stop after the first epoch that ends past this budget
    seed: int = 0
    progress: bool = True
    out: Path | None = None  # best checkpoint is written here
    # SASRec checkpoint to warm-start from (:func:`init_from_sasrec`); None = the authors' random init
    init_from: Path | None = None
    init_layers: bool = True  # with init_from: also copy SASRec's blocks into the pre- and core block
    # "all" training windows, "last": each user's most recent one (as SASRec), or "prefix": one instance
    # per (prefix, next item) pair with CE at its last position only (the authors' instances)
    windows: str = "all"
    # with windows="prefix": leave out each user's last training pair (the split's "train" stage), so that RPT
    # with RPTConfig.instances="held-out" trains on pairs this SPT never fitted
    hold_out_last: bool = False
    # a LARES SPT checkpoint to continue: its weights are the first candidate for the best model, its
    # history is kept, epochs are numbered after its last and Adam continues from its saved moments (if
    # any) with this config's lr and weight decay
    resume_from: Path | None = None
    # after early stopping (or the epoch cap): continue from the best epoch's weights and Adam moments at
    # anneal_lr for up to anneal_epochs more (same patience), exactly as resume_from on that epoch's
    # checkpoint with lr=anneal_lr would; the best epoch of both phases is kept. 0 = no such phase
    anneal_epochs: int = 0
    anneal_lr: float | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"SPTConfig.{name} = {getattr(self, name)!r} is invalid; allowed: an int >= 1")
        if self.lr <= 0:
            raise ValueError(f"SPTConfig.lr = {self.lr!r} is invalid; allowed: a float > 0")
        check_anneal_phase("SPTConfig", self.anneal_epochs, self.anneal_lr)
        if self.windows not in ("all", "last", "prefix"):
            raise ValueError(f"SPTConfig.windows = {self.windows!r} is invalid; allowed: 'all', 'last' or 'prefix'")
        if self.hold_out_last and self.windows != "prefix":
            raise ValueError(f"SPTConfig.hold_out_last = True needs windows='prefix', got windows={self.windows!r}")
        _check_eval_users("SPTConfig", self.eval_users)
        _check_budget("SPTConfig", self.time_budget_s)
        if self.init_from is not None and self.resume_from is not None:
            raise ValueError(f"SPTConfig.init_from = {str(self.init_from)!r} and resume_from = "
                             f"{str(self.resume_from)!r}; allowed: at most one of them")


@dataclass(frozen=True)
class RPTConfig:
    """RPT (GRPO) loop settings."""

    group_size: int = 4
    beta: float = 1.0
    reward: str = "recall"  # one of REWARDS (at k)
    k: int = 10
    lr: float = 1e-4
    batch_size: int = 128
    epochs: int = 2
    filter_top: int = 100
    filter_tries: int = 3
    max_instances: int | None = 20000
    eval_users: int | None = 2000
    eval_every: int | None = None  # also validate every this many batches (None: once per epoch)
    time_budget_s: float | None = None
    seed: int = 0
    progress: bool = True
    out: Path | None = None
    dropout: str = "policy"  # one of DROPOUT: where dropout acts (module docstring)
    advantage: str = "grpo"  # one of ADVANTAGES (simulators.recsys.lares.rollout_advantages)
    # one of INSTANCES: every training (prefix, next item) pair, or only each user's last one (the pairs an
    # SPT with SPTConfig.hold_out_last never fitted)
    instances: str = "prefix"
    # one of ACTIONS: "target", the authors' (the per-step action is the target, its log-prob log p_t(target),
    # the reward the last step's deterministic ranking), or "list": each rollout draws list_samples ranked lists
    # of k items from the last step's Plackett-Luce distribution at list_temperature (simulators.recsys.plackett_luce),
    # each list is an action with its own reward (the metric of the target's place in it) and per-step log-prob
    # (the list's PL log-prob under step t's scores); the advantage is normalised over the G x list_samples lists
    action: str = "target"
    list_samples: int = 4
    list_temperature: float = 1.0

    REWARDS = tuple(RANK_METRICS)  # the rollout rewards: Recall@k or NDCG@k of the last step
    DROPOUT = ("policy", "shared", "off")
    ADVANTAGES = ADVANTAGES
    INSTANCES = ("prefix", "held-out")
    ACTIONS = ("target", "list")

    def __post_init__(self) -> None:
        _check_eval_users("RPTConfig", self.eval_users)
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"RPTConfig.eval_every = {self.eval_every!r} is invalid; allowed: None or an int >= 1")
        if not 2 <= self.group_size <= 64:
            raise ValueError(f"RPTConfig.group_size = {self.group_size!r} is invalid; allowed: an int in 2..64")
        if self.reward not in self.REWARDS:
            raise ValueError(f"RPTConfig.reward = {self.reward!r} is invalid; allowed: one of {self.REWARDS}")
        if self.dropout not in self.DROPOUT:
            raise ValueError(f"RPTConfig.dropout = {self.dropout!r} is invalid; allowed: one of {self.DROPOUT}")
        if self.advantage not in self.ADVANTAGES:
            raise ValueError(f"RPTConfig.advantage = {self.advantage!r} is invalid; allowed: one of {self.ADVANTAGES}")
        if self.instances not in self.INSTANCES:
            raise ValueError(f"RPTConfig.instances = {self.instances!r} is invalid; allowed: one of {self.INSTANCES}")
        if self.action not in self.ACTIONS:
            raise ValueError(f"RPTConfig.action = {self.action!r} is invalid; allowed: one of {self.ACTIONS}")
        if self.action == "list" and self.dropout == "policy":
            # k3 = exp(ref - lp) - (ref - lp) - 1 on a 10-item list's log-prob: with dropout in the policy only, the
            # log-ratio is tens of nats and the KL term explodes (measured on Beauty: 8.5e13 in the first epoch)
            raise ValueError("RPTConfig.action = 'list' with dropout = 'policy' is invalid; allowed: dropout 'shared' "
                             "or 'off' (the KL of a list's log-prob to an eval-mode reference explodes)")
        if self.list_temperature <= 0:
            raise ValueError(f"RPTConfig.list_temperature = {self.list_temperature!r} is invalid; allowed: a float > 0")
        for name in ("k", "batch_size", "epochs", "filter_top", "filter_tries", "list_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"RPTConfig.{name} = {getattr(self, name)!r} is invalid; allowed: an int >= 1")
        if self.max_instances is not None and self.max_instances < 1:
            raise ValueError(f"RPTConfig.max_instances = {self.max_instances!r} is invalid; allowed: None or an int >= 1")
        _check_budget("RPTConfig", self.time_budget_s)
        if self.beta < 0 or self.lr <= 0:
            raise ValueError(f"RPTConfig beta = {self.beta!r} must be >= 0 and lr = {self.lr!r} > 0")


def training_windows(split: LeaveOneOutSplit, max_len: int, last_only: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Next-item windows over the training sequences: inputs and targets ``[N, max_len]``, left-padded.

    Each training sequence is cut from its end into chunks of ``max_len + 1`` items overlapping by
    one (inputs = chunk[:-1], targets = chunk[1:], target 0 = padding), so every training
    transition is a target exactly once per epoch. ``last_only`` keeps only each user's most recent
    chunk (SASRec's training data: one window per user).
    """
    rows = []
    for u in range(split.n_users):
        seq = split.train_sequence(u)
        end = len(seq)
        while end >= 2:
            rows.append(seq[max(0, end - max_len - 1):end])
            if last_only:
                break
            end -= max_len
    inputs = np.zeros((len(rows), max_len), dtype=np.int64)
    targets = np.zeros((len(rows), max_len), dtype=np.int64)
    for i, w in enumerate(rows):
        inputs[i, max_len - len(w) + 1:] = w[:-1]
        targets[i, max_len - len(w) + 1:] = w[1:]
    return inputs, targets


def spt_instances(split: LeaveOneOutSplit, max_len: int, windows: str, hold_out_last: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """SPT inputs and targets ``[N, max_len]`` (target 0 = no loss) for ``SPTConfig.windows`` and
    ``SPTConfig.hold_out_last``."""
    if windows == "prefix":
        return split.prefix_windows(max_len, hold_out_last)
    return training_windows(split, max_len, last_only=windows == "last")


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                            pool: int = 50) -> list[np.ndarray]:
    """Shuffled batches of similar lengths (sorted inside pools of ``pool`` batches), in random order.

    Batches are then cut to their longest row, which saves most of the padding compute on short-
    sequence data (Beauty) without changing any output (positions are right-aligned).
    """
    order = rng.permutation(len(lengths))
    batches = []
    for i in range(0, len(order), batch_size * pool):
        chunk = order[i:i + batch_size * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def same_target_partners(targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each instance, a random other instance with the same target (itself when it is alone)."""
    order = np.argsort(targets, kind="stable")
    sorted_t = targets[order]
    starts = np.searchsorted(sorted_t, sorted_t, side="left")
    sizes = np.searchsorted(sorted_t, sorted_t, side="right") - starts
    own = np.arange(len(targets)) - starts  # position of each sorted instance inside its group
    pick = (rng.random(len(targets)) * np.maximum(sizes - 1, 1)).astype(np.int64)
    pick = np.where(sizes > 1, pick + (pick >= own), 0)
    partners = np.empty_like(order)
    partners[order] = order[starts + pick]
    return partners


@torch.no_grad()
def init_from_sasrec(model: LARES, sasrec: torch.nn.Module, layers: bool = True) -> LARES:
    """Warm-start LARES from a trained :class:`simulators.recsys.sasrec.SASRec` (a deviation from the
    authors' random init, used because our CPU budget cannot train LARES to convergence from scratch).

    - Item embeddings are copied as they are (both models score with ``h @ E.T``).
    - Positions: SASRec embeds ``sqrt(d) E + P`` and LARES ``LN(E + P')``; LayerNorm is scale
      invariant, so ``P' = P / sqrt(d)`` gives the same normalised input (exact up to LN's eps and
      affine parameters). Both count positions from the right, so the last ``min`` rows are mapped.
    - ``layers``: SASRec's pre-LN blocks' linear maps (qkv, output, FFN) are copied into the pre-block
      layers and, cycling, into the core block layers. LARES layers are post-LN, so this is only an
      initialisation close to SASRec's features, not an equivalent network; LayerNorms keep their init.
    """
    c, s = model.config, sasrec.config
    if (c.n_items, c.hidden) != (s.n_items, s.hidden):
        raise ValueError(f"SASRec (n_items {s.n_items}, hidden {s.hidden}) does not match LARES "
                         f"(n_items {c.n_items}, hidden {c.hidden})")
    model.item_embedding.weight.copy_(sasrec.item_embedding.weight)
    n = min(c.max_len, s.max_len)
    model.position_embedding.weight[-n:] = sasrec.position_embedding.weight[-n:] / math.sqrt(c.hidden)
    if layers and len(sasrec.blocks):
        if c.n_heads != s.n_heads:
            raise ValueError(f"layers=True needs the same n_heads (LARES {c.n_heads}, SASRec {s.n_heads})")
        nb = len(sasrec.blocks)
        pairs = [(layer, sasrec.blocks[j % nb]) for group in (model.pre_block, model.core_block)
                 for j, layer in enumerate(group)]
        for layer, block in pairs:
            for mine, theirs in ((layer.qkv, block.qkv), (layer.out, block.proj),
                                 (layer.ff[0], block.ffn[0]), (layer.ff[2], block.ffn[3])):
                if mine.weight.shape != theirs.weight.shape:
                    raise ValueError(f"layer shapes differ: LARES {tuple(mine.weight.shape)} vs SASRec "
                                     f"{tuple(theirs.weight.shape)} (ffn must equal SASRec's inner)")
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias)
    return model


def _valid_metric(model: LARES, split: LeaveOneOutSplit, users: np.ndarray, seed: int) -> dict[str, float]:
    return rank_metrics(evaluate_ranks(model, split, "valid", model.config.eval_steps, seed=seed, users=users))


def _eval_users(split: LeaveOneOutSplit, n: int | None, rng: np.random.Generator) -> np.ndarray:
    users = split.users("valid")
    return users if n is None or n >= len(users) else np.sort(rng.choice(users, n, replace=False))


class SPTResult(NamedTuple):
    model: LARES  # the best epoch's (validation NDCG@10), eval mode
    history: list[dict[str, float]]  # per-epoch logs
    optimizer_state: dict  # Adam's state_dict at the best epoch, for save_lares(optimizer=) and resume_from


def train_spt(split: LeaveOneOutSplit, model_config: LARESConfig, config: SPTConfig = SPTConfig()) -> SPTResult:
    """Train LARES with the SPT loss; returns the best model, the per-epoch logs and the best epoch's Adam state."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = LARES(model_config)
    history: list[dict[str, float]] = []
    if config.init_from is not None:
        init_from_sasrec(model, load_checkpoint(config.init_from), config.init_layers)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.resume_from is not None:
        history = _resumed(model, opt, config.resume_from)
    inputs, targets = spt_instances(split, model_config.max_len, config.windows, config.hold_out_last)
    lengths = (inputs > 0).sum(1)
    val_users = _eval_users(split, config.eval_users, rng)
    best, best_state, best_opt, start = -1.0, None, None, time.time()
    next_epoch = 1 + max((int(h["epoch"]) for h in history), default=-1)
    elapsed_before = history[-1]["elapsed_s"] if history else 0.0
    if config.init_from is not None:  # the warm start's own quality, for the log only
        history.append({"epoch": -1, **_valid_metric(model, split, val_users, config.seed), "elapsed_s": 0.0})
    if config.resume_from is not None:  # the resumed model competes; fresh draws, not a replay of epoch 0's
        best = _valid_metric(model, split, val_users, config.seed)["NDCG@10"]
        best_state, best_opt = snapshot(model, opt)
        rng, gen = _reseeded(config.seed, next_epoch)
    phases = [(config.epochs, config.time_budget_s)]
    if config.anneal_epochs:
        phases.append((config.anneal_epochs, None))
    for phase, (epochs, budget) in enumerate(phases):
        if phase:  # the annealing phase: what resume_from on the best epoch's checkpoint at anneal_lr does
            restart_at_lr(model, opt, best_state, best_opt, config.anneal_lr)
            rng, gen = _reseeded(config.seed, next_epoch)
        bad = 0
        for epoch in range(next_epoch, next_epoch + epochs):
            losses = _spt_epoch(model, opt, inputs, targets, lengths, config, rng, gen, f"SPT epoch {epoch}")
            log = {"epoch": epoch, **losses, **_valid_metric(model, split, val_users, config.seed),
                   "elapsed_s": elapsed_before + time.time() - start}
            history.append(log)
            next_epoch = epoch + 1
            if config.progress:
                tqdm.write(str({k: round(v, 4) for k, v in log.items()}))
            if log["NDCG@10"] > best:
                best, bad = log["NDCG@10"], 0
                best_state, best_opt = snapshot(model, opt)
                if config.out is not None:
                    save_lares(model, config.out, meta={"phase": "spt", "epoch": epoch, "valid": log},
                               optimizer=best_opt)
            else:
                bad += 1
            if bad >= config.patience or (budget is not None and time.time() - start > budget):
                break
    model.load_state_dict(best_state)
    return SPTResult(model.eval(), history, best_opt)


def _spt_epoch(model: LARES, opt: torch.optim.Optimizer, inputs: np.ndarray, targets: np.ndarray,
               lengths: np.ndarray, config: SPTConfig, rng: np.random.Generator, gen: torch.Generator,
               desc: str) -> dict[str, float]:
    """One SPT pass over the instances (one step count per batch, TLA partners redrawn); returns the mean
    loss and its parts per instance."""
    model.train()
    c = model.config
    partners = same_target_partners(targets[:, -1], rng)
    bar = tqdm(length_bucketed_batches(lengths, config.batch_size, rng), desc=desc, disable=not config.progress)
    sums = {"loss": 0.0, "ce": 0.0, "tla": 0.0, "sla": 0.0, "mid_ce": 0.0}
    for idx in bar:
        steps = sample_steps(rng, c.train_mean_steps, c.train_steps_sigma, c.max_steps)
        loss, parts = spt_loss(model, torch.from_numpy(inputs[idx]), torch.from_numpy(targets[idx]),
                               torch.from_numpy(inputs[partners[idx]]), steps, rng, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for key in sums:
            sums[key] += parts[key] * len(idx)
        bar.set_postfix(loss=f"{parts['loss']:.3f}", steps=steps)
    return {k: v / len(targets) for k, v in sums.items()}


def _reseeded(seed: int, epoch: int) -> tuple[np.random.Generator, torch.Generator]:
    """Fresh draws for a run continued at ``epoch`` (a resume or the annealing phase): numpy's generator, the
    dropout generator (torch's global one, reseeded here) and the noise generator, all derived from (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    torch.manual_seed(int(rng.integers(2**62)))
    return rng, torch.Generator().manual_seed(int(rng.integers(2**62)))


def _resumed(model: LARES, opt: torch.optim.Optimizer, path: Path) -> list[dict[str, float]]:
    """Load the SPT checkpoint ``path`` into ``model`` (same config required) and its Adam moments, if saved,
    into ``opt`` (keeping ``opt``'s learning rate and weight decay); returns the checkpoint's epoch history."""
    prior, saved = load_lares_and_optimizer(path)
    diff = {k: (getattr(prior.config, k), getattr(model.config, k)) for k in vars(model.config)
            if k not in LOSS_FIELDS and getattr(prior.config, k) != getattr(model.config, k)}
    if diff:
        raise ValueError(f"SPTConfig.resume_from = {str(path)!r} was trained with another LARESConfig: "
                         f"(checkpoint, requested) {diff}; allowed: the checkpoint's own config (the loss "
                         f"settings {LOSS_FIELDS} may differ)")
    if prior.meta.get("phase") != "spt" or "history" not in prior.meta:
        raise ValueError(f"SPTConfig.resume_from = {str(path)!r} is not a finished SPT checkpoint (meta phase "
                         f"{prior.meta.get('phase')!r}, history {'present' if 'history' in prior.meta else 'absent'}); "
                         "allowed: a file train_spt's caller saved with meta phase 'spt' and its history")
    model.load_state_dict(prior.state_dict())
    if saved is not None:
        settings = [{k: g[k] for k in ("lr", "weight_decay")} for g in opt.param_groups]
        opt.load_state_dict(saved)  # this also loads the saved run's lr: the new config's is put back
        for group, kept in zip(opt.param_groups, settings):
            group.update(kept)
    return list(prior.meta["history"])


@torch.no_grad()
def filter_instances(model: LARES, inputs: np.ndarray, targets: np.ndarray,
                     history: Callable[[np.ndarray], torch.Tensor], top: int, tries: int,
                     seed: int, batch_size: int = 512) -> np.ndarray:
    """Indices of instances whose target reaches the top-``top`` at least once in ``tries`` stochastic scorings,
    ``history(indices)`` masked (the instances' whole histories, as the evaluation masks them)."""
    model.eval()
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    keep = np.zeros(len(targets), dtype=bool)
    c = model.config
    for i in range(0, len(targets), batch_size):
        x, y = torch.from_numpy(inputs[i:i + batch_size]), torch.from_numpy(targets[i:i + batch_size])
        exclude = history(np.arange(i, min(i + batch_size, len(targets))))
        for _ in range(tries):
            steps = sample_steps(rng, c.train_mean_steps, c.train_steps_sigma, c.max_steps)
            ranks = target_ranks(model(x, steps, generator=gen), y, exclude)
            keep[i:i + batch_size] |= (ranks < top).numpy()
    return np.flatnonzero(keep)


def _rollout_scores(model: LARES, H: torch.Tensor, mask: torch.Tensor, T0: torch.Tensor, steps: int
                    ) -> list[torch.Tensor]:
    """Each reasoning step's scores ``[B, n_items + 1]``."""
    return [model.score(T) for T in model.reason(H, mask, steps, T0)]


def _target_logps(scores: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Per-step ``log p_t(target)`` ``[B, steps]``."""
    return torch.stack([F.log_softmax(s, dim=-1).gather(1, targets[:, None]).squeeze(1) for s in scores], dim=1)


def _list_logps(scores: list[torch.Tensor], exclude: torch.Tensor, lists: torch.Tensor, temperature: float
                ) -> torch.Tensor:
    """Per-step PL log-probability of each list ``[B, S, steps]``."""
    return torch.stack([list_log_prob(s, exclude, lists, temperature) for s in scores], dim=-1)


def rpt_kept_spt(history: list[dict[str, float]]) -> bool:
    """Whether a :func:`train_rpt` history's best validation entry is its first (epoch -1: the SPT model
    itself), i.e. RPT returned the SPT weights unchanged."""
    return bool(history) and max(history, key=lambda h: h["NDCG@10"])["epoch"] == -1


_Out = TypeVar("_Out")


def _reference_run(policy_rng: torch.Tensor | None, fn: Callable[..., _Out], *args) -> _Out:
    """``fn(*args)`` without gradients. With ``policy_rng`` (the torch RNG state taken just before the
    policy's same call) it draws the policy's dropout masks; the RNG state is restored afterwards, so the
    reference does not shift later draws."""
    with torch.no_grad(), torch.random.fork_rng(devices=[], enabled=policy_rng is not None):
        if policy_rng is not None:
            torch.set_rng_state(policy_rng)
        return fn(*args)


def rpt_batch_loss(policy: LARES, reference: LARES, inputs: torch.Tensor, targets: torch.Tensor,
                   exclude: torch.Tensor, config: RPTConfig, rng: np.random.Generator, gen: torch.Generator
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO loss of one batch: G rollouts (each with ``list_samples`` drawn lists if ``action="list"``),
    group-normalised terminal ranking reward with ``exclude`` (the histories, padding) not ranked, k3 KL to the
    reference."""
    c = policy.config
    # the items a list may draw: the target too, even if it was an input (as target_ranks ranks it)
    drawable = exclude.scatter(1, targets[:, None], False) if config.action == "list" else None

    def rng_state() -> torch.Tensor | None:
        return torch.get_rng_state() if config.dropout == "shared" else None

    state = rng_state()
    H, mask = policy.prepare(inputs)
    H_ref, mask_ref = _reference_run(state, reference.prepare, inputs)
    losses, rewards, kls = [], [], []
    per_rollout = []
    for _ in range(config.group_size):
        steps = sample_steps(rng, c.train_mean_steps, c.train_steps_sigma, c.max_steps)
        noise = torch.nn.init.trunc_normal_(torch.empty_like(H), 0.0, 1.0, -3.0, 3.0, generator=gen)
        state = rng_state()
        scores = _rollout_scores(policy, H, mask, policy.initial_state(H, noise), steps)
        ref_scores = _reference_run(state, _rollout_scores, reference, H_ref, mask_ref,
                                    reference.initial_state(H_ref, noise), steps)
        if config.action == "target":
            logp, ref_logp = _target_logps(scores, targets), _target_logps(ref_scores, targets)
            with torch.no_grad():
                ranks = target_ranks(scores[-1].detach(), targets, exclude)
                r = rank_metric(ranks, config.reward, config.k)
        else:
            lists = sample_lists(scores[-1].detach(), drawable, config.k, config.list_samples,
                                 config.list_temperature, gen)
            logp = _list_logps(scores, drawable, lists, config.list_temperature)
            ref_logp = _list_logps(ref_scores, drawable, lists, config.list_temperature)
            r = list_rewards(lists, targets, config.reward)
        per_rollout.append((logp, ref_logp))
        rewards.append(r)
    R = torch.stack(rewards, dim=1)  # [B, G] or, with lists, [B, G, list_samples]
    A = rollout_advantages(R.flatten(1), config.advantage).view(R.shape)
    for g, (logp, ref_logp) in enumerate(per_rollout):
        losses.append(grpo_loss(logp, ref_logp, A[:, g], config.beta))
        kls.append(kl_k3(ref_logp, logp.detach()).mean().item())
    loss = torch.stack(losses).mean()
    return loss, {"loss": loss.item(), "reward": R.mean().item(), "kl": float(np.mean(kls)),
                  "mixed": mixed_share(R.flatten(1))}


def train_rpt(spt_model: LARES, split: LeaveOneOutSplit, config: RPTConfig = RPTConfig()
              ) -> tuple[LARES, list[dict[str, float]]]:
    """GRPO post-training from ``spt_model`` (kept frozen as the reference); best validation model returned."""
    if config.k >= spt_model.config.n_items:  # every rollout would earn the full reward: no signal
        raise ValueError(f"RPTConfig.k = {config.k} is invalid; allowed: an int below the item count {spt_model.config.n_items}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    reference = copy.deepcopy(spt_model).eval().requires_grad_(False)
    policy = copy.deepcopy(spt_model)
    if config.instances == "held-out":  # each user's last training pair: the "train" stage's
        users = split.users("train")
        inputs, targets = (t.numpy() for t in split.batch("train", users, spt_model.config.max_len))
        ends = np.array([len(split.train_sequence(u)) - 1 for u in users.tolist()], dtype=np.int64)
    else:
        inputs, targets = split.prefix_instances(spt_model.config.max_len)
        users, ends = split.prefix_pairs()
    if config.max_instances is not None and len(targets) > config.max_instances:
        sub = np.sort(rng.choice(len(targets), config.max_instances, replace=False))
        inputs, targets, users, ends = inputs[sub], targets[sub], users[sub], ends[sub]
    kept = filter_instances(reference, inputs, targets, lambda i: split.prefix_history_mask(users[i], ends[i]),
                            config.filter_top, config.filter_tries, config.seed)
    inputs, targets, users, ends = inputs[kept], targets[kept], users[kept], ends[kept]
    reference.train(config.dropout == "shared")  # after filter_instances, which scores in eval mode
    lengths = (inputs > 0).sum(1)
    val_users = _eval_users(split, config.eval_users, rng)
    start = time.time()
    base = _valid_metric(policy, split, val_users, config.seed)
    history = [{"epoch": -1, "instances": float(len(kept)), **base, "elapsed_s": 0.0}]
    best, best_state = base["NDCG@10"], snapshot(policy)[0]
    opt = torch.optim.Adam(policy.parameters(), lr=config.lr)

    def validate(epoch: int, batch: int, sums: dict[str, float], n: int) -> None:
        nonlocal best, best_state
        log = {"epoch": epoch, "batch": batch, **{k: v / max(n, 1) for k, v in sums.items()},
               **_valid_metric(policy, split, val_users, config.seed), "elapsed_s": time.time() - start}
        history.append(log)
        policy.train(config.dropout != "off")
        if config.progress:
            tqdm.write(str({k: round(v, 4) for k, v in log.items()}))
        if log["NDCG@10"] > best:
            best, best_state = log["NDCG@10"], snapshot(policy)[0]
            if config.out is not None:
                save_lares(policy, config.out, meta={"phase": "rpt", "epoch": epoch, "valid": log})

    for epoch in range(config.epochs):
        policy.train(config.dropout != "off")
        batches = length_bucketed_batches(lengths, config.batch_size, rng)
        bar = tqdm(batches, desc=f"RPT epoch {epoch}", disable=not config.progress)
        sums, n, ran = {"loss": 0.0, "reward": 0.0, "kl": 0.0, "mixed": 0.0}, 0, 0
        for b, idx in enumerate(bar):
            ran = b + 1
            loss, parts = rpt_batch_loss(policy, reference, trim_padding(torch.from_numpy(inputs[idx])),
                                         torch.from_numpy(targets[idx]), split.prefix_history_mask(users[idx], ends[idx]),
                                         config, rng, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            for key in sums:
                sums[key] += parts[key] * len(idx)
            n += len(idx)
            bar.set_postfix(reward=f"{parts['reward']:.3f}", kl=f"{parts['kl']:.4f}",
                            mixed=f"{parts['mixed']:.2f}")
            if config.time_budget_s is not None and time.time() - start > config.time_budget_s:
                break
            if config.eval_every and (b + 1) % config.eval_every == 0 and b + 1 < len(batches):
                validate(epoch, b + 1, sums, n)
        validate(epoch, ran, sums, n)  # the batches run: fewer than len(batches) when the budget ended the epoch
        if config.time_budget_s is not None and time.time() - start > config.time_budget_s:
            break
    policy.load_state_dict(best_state)
    return policy.eval(), history


def _load_split(args: argparse.Namespace) -> LeaveOneOutSplit:
    if args.default_world:
        from simulators.recsys.synthetic import make_synthetic

        return leave_one_out(make_synthetic())
    from simulators.recsys.loaders import load_dataset

    return leave_one_out(load_dataset(args.data, format=args.format))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--default-world", action="store_true", help="the default synthetic world")
    src.add_argument("--data", type=Path, help="dataset path (any format simulators.recsys.loaders reads)")
    p.add_argument("--format", default="auto")
    p.add_argument("--phase", choices=("spt", "rpt", "both"), default="spt")
    p.add_argument("--out", type=Path, required=True, help="checkpoint path (SPT; RPT adds the suffix _rpt)")
    p.add_argument("--init", type=Path, help="SPT checkpoint to start RPT from (phase rpt)")
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--epochs", type=int, default=SPTConfig.epochs)
    p.add_argument("--rpt-epochs", type=int, default=RPTConfig.epochs)
    p.add_argument("--time-budget", type=float, default=None, help="seconds of SPT (ends after that epoch)")
    p.add_argument("--rpt-time-budget", type=float, default=None, help="seconds of RPT")
    p.add_argument("--eval-users", type=int, default=2000,
                   help="validation users per evaluation, a fixed random subset; 0 = all (a subset can mislead: "
                        "2,000 of Beauty's read 0.0511 NDCG@10 where all 22,363 gave 0.0433)")
    p.add_argument("--half", action="store_true", help="store float16 weights (small shipped files)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=SPTConfig.patience)
    p.add_argument("--lr", type=float, default=SPTConfig.lr, help="SPT learning rate")
    p.add_argument("--windows", choices=("all", "last", "prefix"), default="all", help="SPT training instances")
    p.add_argument("--hold-out-last", action="store_true",
                   help="with --windows prefix: SPT leaves out each user's last training pair (for --rpt-instances "
                        "held-out)")
    p.add_argument("--tau", type=float, default=1.0, help="InfoNCE temperature of TLA/SLA (LARESConfig.tau)")
    p.add_argument("--dropout", type=float, default=LARESConfig.dropout, help="LARESConfig.dropout (SPT)")
    p.add_argument("--alpha-tla", type=float, default=LARESConfig.alpha_tla, help="TLA weight in the SPT loss")
    p.add_argument("--gamma-sla", type=float, default=LARESConfig.gamma_sla, help="SLA weight in the SPT loss")
    p.add_argument("--mid-ce", type=float, default=LARESConfig.mid_ce,
                   help="weight of CE at SLA's intermediate step (LARESConfig.mid_ce; deep supervision)")
    p.add_argument("--init-from", type=Path, help="SASRec checkpoint to warm-start SPT from (init_from_sasrec)")
    p.add_argument("--no-init-layers", action="store_true", help="with --init-from: embeddings only")
    p.add_argument("--resume", type=Path, help="SPT checkpoint to continue SPT from (--epochs more; Adam continues "
                                                "if the file holds its moments)")
    p.add_argument("--anneal-epochs", type=int, default=SPTConfig.anneal_epochs,
                   help="after SPT stops, this many more epochs from its best one at --anneal-lr (0 = none)")
    p.add_argument("--anneal-lr", type=float, default=SPTConfig.anneal_lr,
                   help="learning rate of the --anneal-epochs phase")
    p.add_argument("--rpt-lr", type=float, default=RPTConfig.lr)
    p.add_argument("--group-size", type=int, default=RPTConfig.group_size)
    p.add_argument("--rpt-eval-every", type=int, default=None, help="validate RPT every this many batches")
    p.add_argument("--rpt-max-instances", type=int, default=RPTConfig.max_instances)
    p.add_argument("--rpt-reward", choices=RPTConfig.REWARDS, default=RPTConfig.reward,
                   help="the rollout reward: Recall@k or NDCG@k of the last step")
    p.add_argument("--rpt-k", type=int, default=RPTConfig.k, help="the reward's cutoff k")
    p.add_argument("--rpt-beta", type=float, default=RPTConfig.beta,
                   help="weight of the k3 KL term to the frozen reference")
    p.add_argument("--rpt-dropout", choices=RPTConfig.DROPOUT, default=RPTConfig.dropout,
                   help="where dropout acts in RPT: the policy's rollouts only, both (the reference replays the "
                        "policy's masks) or neither")
    p.add_argument("--rpt-advantage", choices=RPTConfig.ADVANTAGES, default=RPTConfig.advantage,
                   help="per-rollout advantage: GRPO's group-normalised reward, its positive part only, or 1 "
                        "(CE on the rollouts, the control)")
    p.add_argument("--rpt-instances", choices=RPTConfig.INSTANCES, default=RPTConfig.instances,
                   help="RPT's training pairs: every (prefix, next item) pair, or each user's last one only")
    p.add_argument("--rpt-action", choices=RPTConfig.ACTIONS, default=RPTConfig.action,
                   help="RPT's action: the target (the authors') or ranked lists of --rpt-k items drawn from the last "
                        "step's Plackett-Luce distribution")
    p.add_argument("--rpt-list-samples", type=int, default=RPTConfig.list_samples,
                   help="with --rpt-action list: lists drawn per rollout")
    p.add_argument("--rpt-list-temperature", type=float, default=RPTConfig.list_temperature,
                   help="with --rpt-action list: the PL distribution's temperature (1 = the model's softmax)")
    args = p.parse_args(argv)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    if args.init is not None and args.phase != "rpt":
        p.error(f"--init applies to --phase rpt only (got --phase {args.phase}); SPT starts from --resume (a LARES "
                "checkpoint) or --init-from (a SASRec checkpoint)")
    split = _load_split(args)
    if args.phase in ("spt", "both"):
        spt_cfg = SPTConfig(epochs=args.epochs, time_budget_s=args.time_budget, eval_users=args.eval_users or None,
                            seed=args.seed, patience=args.patience, out=args.out, lr=args.lr,
                            init_from=args.init_from, init_layers=not args.no_init_layers,
                            windows=args.windows, hold_out_last=args.hold_out_last, resume_from=args.resume,
                            anneal_epochs=args.anneal_epochs, anneal_lr=args.anneal_lr)  # saves each best epoch
        model, hist, adam = train_spt(split, LARESConfig(n_items=split.n_items, max_len=args.max_len, tau=args.tau,
                                                         dropout=args.dropout, alpha_tla=args.alpha_tla,
                                                         gamma_sla=args.gamma_sla, mid_ce=args.mid_ce), spt_cfg)
        # Adam's moments (twice the weights' size) make the file resumable; a --half file is for shipping
        save_lares(model, args.out, half=args.half, optimizer=None if args.half else adam,
                   meta={"phase": "spt", "history": hist, "data_sha256": dataset_digest(split.dataset)})
    else:
        if args.init is None:
            p.error("--phase rpt needs --init <SPT checkpoint>")
        model = load_lares(args.init)
    if args.phase in ("rpt", "both"):
        rpt_cfg = RPTConfig(epochs=args.rpt_epochs, time_budget_s=args.rpt_time_budget,
                            eval_users=args.eval_users or None,
                            seed=args.seed, lr=args.rpt_lr, group_size=args.group_size,
                            eval_every=args.rpt_eval_every, max_instances=args.rpt_max_instances,
                            reward=args.rpt_reward, k=args.rpt_k, beta=args.rpt_beta,
                            dropout=args.rpt_dropout, advantage=args.rpt_advantage,
                            instances=args.rpt_instances, action=args.rpt_action,
                            list_samples=args.rpt_list_samples, list_temperature=args.rpt_list_temperature)
        rpt_model, hist = train_rpt(model, split, rpt_cfg)
        out = args.out.with_name(args.out.stem + "_rpt" + args.out.suffix)
        save_lares(rpt_model, out, half=args.half,
                   meta={"phase": "rpt", "history": hist, "data_sha256": dataset_digest(split.dataset)})


if __name__ == "__main__":
    main()
