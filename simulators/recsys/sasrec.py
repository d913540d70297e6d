"""SASRec (Kang & McAuley, ICDM'18): a causal self-attention next-item model, trained with full
softmax cross-entropy over all items.

Model: item embedding (shared with the output layer, ``padding_idx=0``) scaled by sqrt(d) plus a
learned position embedding over the last ``max_len`` items (left-padded input), dropout, then
``n_layers`` pre-LayerNorm blocks (causal multi-head attention + position-wise GELU feed-forward,
residuals, padding positions zeroed after each block), a final LayerNorm. The hidden state at
position t scores every item by a dot product with its embedding; the next-item distribution is
the softmax over items 1..n_items (the padding column scores -inf).

Training: every non-padding position of a user's training sequence predicts the next item (cross-
entropy over all items, computed only where the target is not padding), AdamW, one window of the
last ``max_len + 1`` training items per user per epoch; early stopping on validation NDCG@10
(full ranking, history masked) with the best weights restored; optional wall-clock cap and an optional
low-lr phase after it (``TrainConfig.anneal_epochs``: from the best epoch at ``anneal_lr``).
``TrainConfig.instances="prefix"`` trains instead on every (prefix, next item) pair of the training
sequences, each right-aligned with its loss at the last position only (LARES's SPT instances), and
``train_sasrec(init=...)`` starts from a trained model's weights: together, the control that tells
what LARES's SPT recipe gains without its reasoning steps (README, LARES section).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from simulators.checks import check_field, check_finite, check_ints

from .best_epoch import check_anneal_phase, restart_at_lr, snapshot
from .checkpoint import read_checkpoint
from .dataset import InteractionDataset
from .metrics import evaluate_full_ranking
from .split import LeaveOneOutSplit, leave_one_out

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class SASRecConfig:
    """Architecture. ``n_items`` excludes padding (embedding table has n_items + 1 rows)."""

    n_items: int
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 2
    inner: int = 256
    max_len: int = 50
    dropout: float = 0.5
    attn_dropout: float = 0.5

    def __post_init__(self) -> None:
        check_ints(self, "n_items", "hidden", "n_layers", "n_heads", "inner", "max_len")
        check_finite(self, "dropout", "attn_dropout")
        for name in ("n_items", "hidden", "n_layers", "n_heads", "inner", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"SASRecConfig.{name} = {getattr(self, name)!r}; allowed: an int >= 1")
        if self.hidden % self.n_heads:
            raise ValueError(f"SASRecConfig.hidden = {self.hidden} must be divisible by n_heads = {self.n_heads}")
        for name in ("dropout", "attn_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"SASRecConfig.{name} = {getattr(self, name)!r}; allowed: a float in [0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and early stopping. ``max_minutes`` caps wall-clock time (None = no cap)."""

    epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10
    eval_every: int = 1
    eval_batch_size: int = 1024
    max_minutes: float | None = None
    seed: int = 0
    progress: bool = True
    instances: str = "windows"  # "windows": one per user, loss at every position; or "prefix" (module docstring)
    # after early stopping (or the epoch cap or max_minutes): continue from the best epoch's weights and AdamW
    # moments at anneal_lr for up to anneal_epochs more (same patience, no time cap); the best of both is kept
    anneal_epochs: int = 0
    anneal_lr: float | None = None

    def __post_init__(self) -> None:
        check_ints(self, "epochs", "batch_size", "patience", "eval_every", "eval_batch_size", "anneal_epochs", "seed")
        check_finite(self, "lr", "weight_decay", *(["max_minutes"] if self.max_minutes is not None else []))
        check_field(self, "seed", self.seed >= 0, "an int >= 0")
        check_anneal_phase("TrainConfig", self.anneal_epochs, self.anneal_lr)
        if self.instances not in ("windows", "prefix"):
            raise ValueError(f"TrainConfig.instances = {self.instances!r}; allowed: 'windows' or 'prefix'")
        for name in ("epochs", "batch_size", "patience", "eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} = {getattr(self, name)!r}; allowed: an int >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"TrainConfig.lr = {self.lr} must be > 0 and weight_decay = {self.weight_decay} >= 0")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"TrainConfig.max_minutes = {self.max_minutes}; allowed: None or a float > 0")


def trim_padding(input_ids: torch.Tensor) -> torch.Tensor:
    """Drop leading columns that are padding in every row (positions are counted from the right,
    so the result encodes identically and much faster for short sequences)."""
    filled = (input_ids > 0).any(dim=0)
    first = int(filled.int().argmax()) if bool(filled.any()) else input_ids.shape[1] - 1
    return input_ids[:, first:]


class _Block(nn.Module):
    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.attn_dropout = cfg.attn_dropout
        self.norm1 = nn.LayerNorm(cfg.hidden)
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.norm2 = nn.LayerNorm(cfg.hidden)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.hidden, cfg.inner), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.inner, cfg.hidden)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.n_heads, d // self.n_heads).unbind(2)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
            attn_mask=attn_mask, dropout_p=self.attn_dropout if self.training else 0.0,
        )
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, length, d)))
        return x + self.drop(self.ffn(self.norm2(x)))


class SASRec(nn.Module):
    """Self-attentive sequential recommender (see the module docstring)."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.n_items + 1, config.hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, config.hidden)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(config.hidden)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _check(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be LongTensor[B, L], got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_len:  # keep the most recent items
            input_ids = input_ids[:, -self.config.max_len:]
        return input_ids.long()

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Hidden states FloatTensor[B, L, hidden] for left-padded ``input_ids`` LongTensor[B, L]."""
        input_ids = self._check(input_ids)
        b, length = input_ids.shape
        keep = (input_ids > 0).unsqueeze(-1)
        pos = torch.arange(self.config.max_len - length, self.config.max_len, device=input_ids.device)
        x = self.item_embedding(input_ids) * math.sqrt(self.config.hidden) + self.position_embedding(pos)
        x = self.emb_dropout(x) * keep
        # causal, and padding keys hidden; each position may always see itself (no empty rows)
        causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
        mask = (causal & keep.transpose(1, 2)) | torch.eye(length, dtype=torch.bool, device=input_ids.device)
        mask = mask.unsqueeze(1)
        for block in self.blocks:
            x = block(x, mask) * keep
        return self.final_norm(x)

    def last_hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """FloatTensor[B, hidden]: the state after the most recent item (inputs are left-padded)."""
        return self.encode(trim_padding(self._check(input_ids)))[:, -1]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores [..., n_items + 1] of hidden states against all items; padding column = -inf."""
        scores = hidden @ self.item_embedding.weight.T
        scores[..., 0] = float("-inf")
        return scores

    def score(self, input_ids: torch.Tensor) -> torch.Tensor:
        """FloatTensor[B, n_items + 1]: next-item scores (logits) for each sequence."""
        return self.logits(self.last_hidden(input_ids))

    def next_item_probs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """FloatTensor[B, n_items + 1]: softmax next-item distribution (column 0 = 0)."""
        return torch.softmax(self.score(input_ids), dim=-1)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean full-softmax cross-entropy over the positions whose target is not padding."""
        hidden = self.encode(inputs)
        sel = targets > 0
        # score against items 1..n only: avoids an in-place -inf on a graph tensor (a full copy)
        logits = hidden[sel] @ self.item_embedding.weight[1:].T
        return F.cross_entropy(logits, targets[sel] - 1)


def save_checkpoint(model: SASRec, path: str | Path, meta: dict | None = None, half: bool = False) -> Path:
    """Write config, weights and ``meta`` (e.g. dataset name, metrics) to ``path`` (a ``.pt`` file).

    ``half`` stores the weights as float16 (half the size; loaded back as float32).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if half and v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(
        {"version": CHECKPOINT_VERSION, "config": asdict(model.config), "state_dict": state, "meta": meta or {}},
        path,
    )
    return path


def load_checkpoint(path: str | Path) -> SASRec:
    """Rebuild a :class:`SASRec` from :func:`save_checkpoint` output; ``model.meta`` holds its meta."""
    blob = read_checkpoint(path, "SASRec")
    if blob.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} is not a recrail SASRec checkpoint (version {CHECKPOINT_VERSION})")
    model = SASRec(SASRecConfig(**blob["config"]))
    model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    model.meta = blob["meta"]
    model.eval()
    return model


def evaluate_sasrec(model: SASRec, split: LeaveOneOutSplit, stage: str = "test", batch_size: int = 1024,
                    users: np.ndarray | None = None) -> dict[str, float]:
    """Full-ranking Recall/NDCG@{5,10,20} and MRR of ``model`` on ``stage`` (history masked)."""
    was_training = model.training
    model.eval()
    try:
        return evaluate_full_ranking(model.score, split, stage, model.config.max_len, batch_size=batch_size,
                                     users=users)
    finally:
        model.train(was_training)


def _length_batches(rows: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator):
    """Batches of training rows with similar lengths (random tie order, random batch order), so
    that trimming padding saves most of the work on short-sequence data."""
    order = np.lexsort((rng.random(len(rows)), lengths))
    batches = [rows[order[s:s + batch_size]] for s in range(0, len(order), batch_size)]
    for b in rng.permutation(len(batches)):
        yield batches[b]


def _train_epoch(model: SASRec, opt: torch.optim.Optimizer, inputs_all: np.ndarray, targets_all: np.ndarray,
                 lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> tuple[float, int]:
    """One pass over the training instances in length-sorted batches; returns the mean batch loss and the
    number of target positions trained on."""
    model.train()
    total, n_batches, items = 0.0, 0, 0
    for batch in _length_batches(np.arange(len(lengths)), lengths, batch_size, rng):
        inputs = trim_padding(torch.from_numpy(inputs_all[batch]))
        targets = torch.from_numpy(targets_all[batch, -inputs.shape[1]:])
        loss = model.loss(inputs, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item()
        n_batches += 1
        items += int((targets > 0).sum())
    return total / n_batches, items


def train_sasrec(
    data: InteractionDataset | LeaveOneOutSplit,
    config: SASRecConfig | None = None,
    train: TrainConfig = TrainConfig(),
    out_dir: str | Path | None = None,
    log: Callable[[dict], None] | None = None,
    init: SASRec | None = None,
) -> SASRec:
    """Train SASRec on the training sequences of a leave-one-out split, early-stopping on valid NDCG@10.

    ``config`` defaults to ``SASRecConfig(n_items=dataset.n_items)``. With ``out_dir``, the best
    model is saved to ``out_dir/best.pt`` whenever validation improves and the per-epoch log to
    ``out_dir/log.json``. ``log`` receives each epoch's record. ``init``: start from a copy of this
    model's weights (its architecture must equal ``config``, dropout rates aside); the init is itself a
    candidate (epoch 0, its validation NDCG@10 in ``meta["init_valid_ndcg10"]``), so a fine-tune whose epochs
    all validate below it returns the init's weights. Returns the best model (eval mode) with ``model.meta`` =
    training summary (best epoch, valid and test metrics, speed).
    """
    split = data if isinstance(data, LeaveOneOutSplit) else leave_one_out(data)
    config = config or SASRecConfig(n_items=split.n_items)
    if config.n_items != split.n_items:
        raise ValueError(f"SASRecConfig.n_items = {config.n_items} but the dataset has {split.n_items} items")
    torch.manual_seed(train.seed)
    rng = np.random.default_rng(train.seed)
    model = SASRec(config)
    if init is not None:
        if replace(init.config, dropout=config.dropout, attn_dropout=config.attn_dropout) != config:
            raise ValueError(f"init has architecture {init.config}, the training config is {config} "
                             "(only the dropout rates may differ)")
        model.load_state_dict(init.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    users = split.users("train")
    if len(users) == 0:
        raise ValueError("no user has a training sequence of length >= 2 (sequences need >= 4 items)")
    if train.instances == "prefix":
        inputs_all, targets_all = split.prefix_windows(config.max_len)
    else:
        inputs_all, targets_all = (t.numpy() for t in split.train_windows(users, config.max_len))
    lengths = (inputs_all > 0).sum(1)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:  # log.json is written every epoch, before any validation gain may have saved best.pt
        out.mkdir(parents=True, exist_ok=True)
    best_ndcg, best_epoch, best_state, best_opt, bad = -1.0, 0, None, None, 0
    init_ndcg = None
    if init is not None:  # the epoch to beat: without it, a fine-tune that only hurts returns a worse model
        best_ndcg = init_ndcg = evaluate_sasrec(model, split, "valid", train.eval_batch_size)["NDCG@10"]
        best_state, best_opt = snapshot(model, opt if train.anneal_epochs > 0 else None)
    history: list[dict] = []
    train_seconds, train_items = 0.0, 0
    start = time.perf_counter()
    phases = [(train.epochs, train.max_minutes)]
    if train.anneal_epochs:
        phases.append((train.anneal_epochs, None))
    last = 0  # the last epoch run
    for phase, (epochs, max_minutes) in enumerate(phases):
        if phase:  # the low-lr phase continues from the best epoch, AdamW's moments included
            restart_at_lr(model, opt, best_state, best_opt, train.anneal_lr)
            bad = 0
        first, final = last + 1, last + epochs
        bar = tqdm(range(first, final + 1), desc="SASRec" if phase == 0 else "SASRec, low lr",
                   disable=not train.progress, unit="epoch")
        for epoch in bar:
            t0 = time.perf_counter()
            loss, items = _train_epoch(model, opt, inputs_all, targets_all, lengths, train.batch_size, rng)
            train_seconds += time.perf_counter() - t0
            train_items += items
            last = epoch
            record = {"epoch": epoch, "loss": loss, "epoch_seconds": time.perf_counter() - t0}
            timed_out = max_minutes is not None and time.perf_counter() - start > 60 * max_minutes
            if (epoch - first + 1) % train.eval_every == 0 or epoch == final or timed_out:
                valid = evaluate_sasrec(model, split, "valid", train.eval_batch_size)
                record.update({f"valid_{k}": v for k, v in valid.items() if k != "users"})
                if valid["NDCG@10"] > best_ndcg:
                    best_ndcg, best_epoch, bad = valid["NDCG@10"], epoch, 0
                    best_state, best_opt = snapshot(model, opt if train.anneal_epochs > 0 else None)
                    if out is not None:
                        save_checkpoint(model, out / "best.pt",
                                        {"epoch": epoch, "valid": valid, "dataset": split.dataset.name})
                else:
                    bad += 1
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", ndcg10=f"{best_ndcg:.4f}", best=best_epoch)
            if log is not None:
                log(record)
            if out is not None:
                (out / "log.json").write_text(json.dumps(history, indent=1))
            if bad >= train.patience or timed_out:
                break
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    valid = evaluate_sasrec(model, split, "valid", train.eval_batch_size)
    test = evaluate_sasrec(model, split, "test", train.eval_batch_size)
    model.meta = {
        "dataset": split.dataset.name,
        "best_epoch": best_epoch,
        "init_valid_ndcg10": init_ndcg,
        "epochs_run": len(history),
        "valid": valid,
        "test": test,
        "train_seconds": train_seconds,
        "epochs_per_second": len(history) / train_seconds,
        "items_per_second": train_items / train_seconds,
        "train_config": asdict(train),
        "history": history,
    }
    if out is not None:
        save_checkpoint(model, out / "best.pt", model.meta)
    return model
