"""LARES: a sequential recommender that reasons in latent space with a recurrent core block.

Model (Liu, Zheng, Wang, Zhao et al., 2025; one implementation shared by training and the env):

- Input: item ids ``LongTensor[B, L]`` (``L <= max_len``), left-padded with 0, so the last position
  is always the most recent item; positions are counted from the right, so dropping all-padding
  leading columns (length-bucketed training batches) leaves every output unchanged.
- Embedding: item + learned position embedding, LayerNorm, dropout. The **pre-block**
  (``n_pre_layers`` causal Transformer layers) maps it to ``H: [B, L, d]``.
- Reasoning: ``T_0 = init_scale * z`` with ``z`` a standard normal truncated at +-3 (one draw per
  position and channel), then ``T_k = CoreBlock(adapter(T_{k-1}, H))`` where the adapter is
  ``LN((T + H) / 2)`` ("add", the default), ``LN(W [T; H])`` ("concat") or a sigmoid-gated mix
  ("gated"). The core block (``n_core_layers`` causal Transformer layers) refines **every**
  position at every step; the causal mask keeps position i blind to items after i.
- Scores: the last position's state dotted with the item embedding table: ``[B, n_items + 1]``.
- Depth: ``eval_steps`` (4) at evaluation. In training the step count is drawn per batch from a
  Poisson-lognormal: ``lambda ~ LogNormal(log(mean) - sigma^2 / 2, sigma)`` (so E[lambda] = mean),
  ``steps = min(1 + Poisson(lambda), max_steps)``: support 1..12, mean about 5 by default.
- SPT loss = CE + alpha * TLA + gamma * SLA. CE is the full softmax cross-entropy of the next item
  at every position of a training window (every position is a prefix instance under the causal
  mask; SASRec-style, 20x cheaper than one instance per prefix on 2 CPU cores).
  TLA (trajectory-level alignment) is a symmetric in-batch InfoNCE between the final output of a
  sequence and the final output of another training sequence with the same target item, run with
  the same step count (other rows with the same target are not used as negatives). SLA
  (step-level alignment) is a symmetric InfoNCE between the final output and the output of one
  randomly chosen intermediate step.
- RPT helpers (GRPO): :func:`group_advantages`, :func:`rollout_advantages`, :func:`kl_k3`, :func:`grpo_loss`.

Checkpoints (:func:`save_lares` / :func:`load_lares`) store the config inside; ``half=True``
stores float16 weights (the shipped default weights) that load back as float32.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simulators.checks import check_field

from .checkpoint import read_checkpoint
from .dataset import InteractionDataset
from .metrics import ndcg_at_k, recall_at_k, target_ranks
from .split import LeaveOneOutSplit

ADAPTERS = ("add", "concat", "gated")
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "lares_default.pt"


@dataclass(frozen=True)
class LARESConfig:
    """Architecture and SPT hyperparameters (defaults: the authors' settings)."""

    n_items: int
    max_len: int = 20
    hidden: int = 64
    n_heads: int = 2
    ffn: int = 256
    n_pre_layers: int = 2
    n_core_layers: int = 2
    dropout: float = 0.2
    adapter: str = "add"
    init_scale: float = 3.0
    eval_steps: int = 4
    train_mean_steps: float = 4.0
    train_steps_sigma: float = 0.5
    max_steps: int = 12
    alpha_tla: float = 0.1
    gamma_sla: float = 0.5
    tau: float = 1.0
    # weight of a second CE term on the intermediate step SLA draws (deep supervision, not the authors' loss):
    # training every depth to rank, not only the last of each batch's step count, so that halting earlier
    # costs less. 0 = the authors' loss
    mid_ce: float = 0.0

    def __post_init__(self) -> None:
        check_field(self, "n_items", self.n_items >= 1, "an int >= 1")
        check_field(self, "max_len", self.max_len >= 1, "an int >= 1")
        check_field(self, "hidden", self.hidden >= 1, "an int >= 1")
        check_field(self, "n_heads", self.n_heads >= 1 and self.hidden % self.n_heads == 0,
                    "an int >= 1 dividing hidden")
        check_field(self, "ffn", self.ffn >= 1, "an int >= 1")
        check_field(self, "n_pre_layers", self.n_pre_layers >= 0, "an int >= 0")
        check_field(self, "n_core_layers", self.n_core_layers >= 1, "an int >= 1")
        check_field(self, "dropout", 0.0 <= self.dropout < 1.0, "a float in [0, 1)")
        check_field(self, "adapter", self.adapter in ADAPTERS, f"one of {ADAPTERS}")
        check_field(self, "init_scale", self.init_scale >= 0, "a float >= 0")
        check_field(self, "max_steps", self.max_steps >= 1, "an int >= 1")
        check_field(self, "eval_steps", 1 <= self.eval_steps <= self.max_steps,
                    f"an int in 1..max_steps ({self.max_steps})")
        check_field(self, "train_mean_steps", self.train_mean_steps > 0, "a float > 0")
        check_field(self, "train_steps_sigma", self.train_steps_sigma >= 0, "a float >= 0")
        check_field(self, "alpha_tla", self.alpha_tla >= 0, "a float >= 0")
        check_field(self, "gamma_sla", self.gamma_sla >= 0, "a float >= 0")
        check_field(self, "tau", self.tau > 0, "a float > 0")
        check_field(self, "mid_ce", self.mid_ce >= 0, "a float >= 0")


# the SPT loss's settings: they shape training only, so a run may continue a checkpoint with other values
LOSS_FIELDS = ("alpha_tla", "gamma_sla", "tau", "mid_ce")


def sample_steps(
    rng: np.random.Generator, mean: float = 4.0, sigma: float = 0.5, max_steps: int = 12, size: int | None = None
) -> int | np.ndarray:
    """Training step count: ``min(1 + Poisson(lambda), max_steps)``, ``lambda`` lognormal with mean ``mean``."""
    lam = rng.lognormal(math.log(mean) - sigma**2 / 2, sigma, size=size)
    steps = np.minimum(1 + rng.poisson(lam), max_steps)
    return int(steps) if size is None else steps.astype(np.int64)


def truncated_normal(rng: np.random.Generator, shape: tuple[int, ...], bound: float = 3.0) -> np.ndarray:
    """Standard normal draws resampled until inside [-bound, bound] (float32)."""
    z = rng.standard_normal(shape)
    bad = np.abs(z) > bound
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > bound
    return z.astype(np.float32)


def attention_mask(input_ids: torch.Tensor) -> torch.Tensor:
    """BoolTensor[B, 1, L, L], True = may attend: causal, real keys only, and always the own position."""
    L = input_ids.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=input_ids.device).tril()
    real = (input_ids > 0)[:, None, None, :]
    eye = torch.eye(L, dtype=torch.bool, device=input_ids.device)
    return (causal & real) | eye


class _Layer(nn.Module):
    """Post-LN Transformer layer (SASRec style) with a boolean attention mask."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), nn.Linear(ffn, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        x = self.ln1(x + self.drop(self.out(a.transpose(1, 2).reshape(B, L, d))))
        return self.ln2(x + self.drop(self.ff(x)))


class LARES(nn.Module):
    """Pre-block + recurrent core block; see the module docstring."""

    def __init__(self, config: LARESConfig) -> None:
        super().__init__()
        c = self.config = config
        self.item_embedding = nn.Embedding(c.n_items + 1, c.hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(c.max_len, c.hidden)
        self.emb_ln = nn.LayerNorm(c.hidden)
        self.emb_drop = nn.Dropout(c.dropout)
        self.pre_block = nn.ModuleList(_Layer(c.hidden, c.n_heads, c.ffn, c.dropout) for _ in range(c.n_pre_layers))
        self.core_block = nn.ModuleList(_Layer(c.hidden, c.n_heads, c.ffn, c.dropout) for _ in range(c.n_core_layers))
        self.adapter_ln = nn.LayerNorm(c.hidden)
        if c.adapter != "add":
            self.adapter_proj = nn.Linear(2 * c.hidden, c.hidden)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # --- the pieces the env steps one at a time -------------------------------------------------
    def prepare(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding + pre-block: ``H [B, L, d]`` and the attention mask ``[B, 1, L, L]``."""
        B, L = input_ids.shape
        if not 1 <= L <= self.config.max_len:
            raise ValueError(f"input length must be in 1..max_len = {self.config.max_len}, got {L}")
        # right-aligned positions: trimming leading padding columns changes nothing
        pos = torch.arange(self.config.max_len - L, self.config.max_len, device=input_ids.device)
        x = self.emb_drop(self.emb_ln(self.item_embedding(input_ids) + self.position_embedding(pos)))
        mask = attention_mask(input_ids)
        for layer in self.pre_block:
            x = layer(x, mask)
        return x, mask

    def initial_state(self, H: torch.Tensor, noise: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """``T_0 = init_scale * z``; ``noise`` (shape of H, truncated standard normal) or drawn with ``generator``."""
        if noise is None:
            noise = torch.nn.init.trunc_normal_(torch.empty_like(H), 0.0, 1.0, -3.0, 3.0, generator=generator)
        elif noise.shape != H.shape:
            raise ValueError(f"noise must have the shape of H {tuple(H.shape)}, got {tuple(noise.shape)}")
        return self.config.init_scale * noise

    def step(self, T: torch.Tensor, H: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One reasoning step: ``CoreBlock(adapter(T, H))`` over all positions."""
        if self.config.adapter == "add":
            x = self.adapter_ln((T + H) / 2)
        elif self.config.adapter == "concat":
            x = self.adapter_ln(self.adapter_proj(torch.cat([T, H], dim=-1)))
        else:
            g = torch.sigmoid(self.adapter_proj(torch.cat([T, H], dim=-1)))
            x = self.adapter_ln(g * T + (1 - g) * H)
        for layer in self.core_block:
            x = layer(x, mask)
        return x

    def reason(self, H: torch.Tensor, mask: torch.Tensor, steps: int, T0: torch.Tensor) -> list[torch.Tensor]:
        """States ``[T_1, ..., T_steps]`` (each ``[B, L, d]``) starting from ``T0``."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        states, T = [], T0
        for _ in range(steps):
            T = self.step(T, H, mask)
            states.append(T)
        return states

    def score(self, T: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, n_items + 1]`` of a state ``[B, L, d]`` (last position) or ``[B, d]``."""
        h = T[:, -1] if T.ndim == 3 else T
        return h @ self.item_embedding.weight.T

    def forward(self, input_ids: torch.Tensor, steps: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Scores after ``steps`` reasoning steps (default ``eval_steps``)."""
        H, mask = self.prepare(input_ids)
        T = self.initial_state(H, generator=generator)
        return self.score(self.reason(H, mask, steps or self.config.eval_steps, T)[-1])


# --- SPT ------------------------------------------------------------------------------------------
def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float, same: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric in-batch InfoNCE: row i of ``a`` matches row i of ``b``; ``same[i, j]`` drops j as a negative."""
    logits = a @ b.T / tau
    if same is not None:
        logits = logits.masked_fill(same & ~torch.eye(len(a), dtype=torch.bool, device=a.device), float("-inf"))
    labels = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def trim_padding(input_ids: torch.Tensor) -> torch.Tensor:
    """``input_ids [B, L]`` without its leading all-padding columns (outputs unchanged: positions are right-aligned)."""
    first = int((input_ids != 0).any(0).int().argmax())
    return input_ids[:, first:]


def last_outputs(model: LARES, input_ids: torch.Tensor, steps: int, generator: torch.Generator | None = None,
                 chunk: int = 64) -> torch.Tensor:
    """Final last-position output ``[B, d]`` of each row after ``steps`` steps; rows run in chunks of similar
    length, each cut to its longest row, so a few long rows do not make every row pay for their padding."""
    order = torch.argsort((input_ids != 0).sum(1), stable=True)
    outs = []
    for idx in order.split(chunk):
        H, mask = model.prepare(trim_padding(input_ids[idx]))
        outs.append(model.reason(H, mask, steps, model.initial_state(H, generator=generator))[-1][:, -1])
    return torch.cat(outs)[torch.argsort(order)]


def spt_loss(model: LARES, inputs: torch.Tensor, targets: torch.Tensor, positives: torch.Tensor,
             steps: int, rng: np.random.Generator, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """CE + alpha TLA + gamma SLA (+ ``mid_ce`` x CE at SLA's intermediate step) on one batch of windows.

    ``inputs``/``targets``: ``[B, L]`` next-item pairs (target 0 = no loss), CE at every position
    (the causal mask makes every position a prefix instance); ``positives``: ``[B, L]`` inputs of
    windows whose last target equals this window's last target. TLA and SLA use the last position.
    Leading padding is cut (the batch to its longest row, the positives in length chunks) and
    only positions with a target are scored: the loss is the same, the padding costs nothing.
    """
    c = model.config
    inputs = trim_padding(inputs)
    targets = targets[:, -inputs.shape[1]:]
    H, mask = model.prepare(inputs)
    states = model.reason(H, mask, steps, model.initial_state(H, generator=generator))
    T = states[-1]
    scored = targets != 0
    ce = F.cross_entropy(model.score(T[scored]), targets[scored])
    z = T[:, -1]
    if c.alpha_tla > 0:
        last = targets[:, -1]
        tla = info_nce(z, last_outputs(model, positives, steps, generator), c.tau, last[:, None] == last[None, :])
    else:
        tla = z.new_zeros(())
    sla = mid_ce = z.new_zeros(())
    if steps > 1 and (c.gamma_sla > 0 or c.mid_ce > 0):
        mid = states[int(rng.integers(steps - 1))]
        if c.gamma_sla > 0:
            sla = info_nce(z, mid[:, -1], c.tau)
        if c.mid_ce > 0:
            mid_ce = F.cross_entropy(model.score(mid[scored]), targets[scored])
    loss = ce + c.alpha_tla * tla + c.gamma_sla * sla + c.mid_ce * mid_ce
    return loss, {"loss": loss.item(), "ce": ce.item(), "tla": tla.item(), "sla": sla.item(), "mid_ce": mid_ce.item()}


# --- RPT (GRPO) -----------------------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``(r - mean_G) / (std_G + eps)`` over the last axis (G rollouts; unbiased std as in GRPO)."""
    return (rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, keepdim=True) + eps)


ADVANTAGES = ("grpo", "positive", "uniform")


def rollout_advantages(rewards: torch.Tensor, mode: str = "grpo") -> torch.Tensor:
    """Per-rollout advantages of ``[B, G]`` rewards.

    ``"grpo"``: :func:`group_advantages`. The per-step action is the target itself, so a negative advantage
    pushes the ground truth's log-probability down in the rollouts that ranked it worse.
    ``"positive"``: ``max(grpo, 0)``, only the rollouts above their group's mean are reinforced.
    ``"uniform"``: 1 for every rollout (CE on the rollouts): the control that separates the reward's
    signal from more training on the same instances at the same learning rate.
    """
    if mode == "grpo":
        return group_advantages(rewards)
    if mode == "positive":
        return group_advantages(rewards).clamp(min=0.0)
    if mode == "uniform":
        return torch.ones_like(rewards)
    raise ValueError(f"advantage mode {mode!r} is invalid; allowed: one of {ADVANTAGES}")


def mixed_share(rewards: torch.Tensor) -> float:
    """Share of groups (rows of ``[B, G]`` rewards) whose G rewards are not all equal: the others have
    zero advantage, so only these carry a policy-gradient signal."""
    return float((rewards != rewards[:, :1]).any(dim=1).float().mean())


def kl_k3(ref_logp: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 term per sample: ``exp(ref - lp) - (ref - lp) - 1`` (>= 0), an estimator of KL(pi || ref) when
    the action is drawn from pi (the GRPO papers write it KL(ref || pi)); with the target as the action it is a
    penalty on the log-ratio, not an estimate of either KL."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def grpo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """``-mean[exp(lp - sg(lp)) A - beta KL_k3]`` over steps and rollouts.

    ``logp`` / ``ref_logp``: ``[..., steps]`` log-probabilities of the target at each step under the
    policy and the frozen reference; ``advantages``: ``[...]`` one per rollout.
    """
    ratio = torch.exp(logp - logp.detach())
    per_step = ratio * advantages[..., None] - beta * kl_k3(ref_logp, logp)
    return -per_step.mean()


# --- evaluation and checkpoints -------------------------------------------------------------------
@torch.no_grad()
def evaluate_ranks(model: LARES, split: LeaveOneOutSplit, stage: str, steps: int, seed: int = 0,
                   users: np.ndarray | None = None, batch_size: int = 512) -> np.ndarray:
    """0-based full-ranking rank of each user's ``stage`` target (history masked) after ``steps`` steps.

    The initial states are one stream of draws from ``seed`` in batch order: the same ``(seed, users,
    batch_size)`` give the same ranks, and models evaluated alike share every user's draw (paired
    comparisons); another batch size or user subset is another draw of the same distribution (on
    the synthetic world's 1,500 test users, NDCG@10 0.1380 / 0.1383 / 0.1366 at batch sizes 512 / 100 /
    1,500), not the same per-user ranks."""
    model.eval()
    users = split.users(stage) if users is None else np.asarray(users)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(users), batch_size):
        u = users[i:i + batch_size]
        inputs, targets = split.batch(stage, u, model.config.max_len)
        scores = model(inputs, steps, generator=gen)
        out.append(target_ranks(scores, targets, split.history_mask(stage, u)))
    return torch.cat(out).numpy()


def rank_metrics(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    """Mean NDCG@k and Recall@k of 0-based ranks."""
    r = torch.as_tensor(ranks)
    return {f"NDCG@{k}": float(ndcg_at_k(r, k).mean()), f"Recall@{k}": float(recall_at_k(r, k).mean())}


def dataset_digest(dataset: InteractionDataset) -> str:
    """Short sha256 of the sequences: ties a checkpoint to the exact data it was trained on."""
    return hashlib.sha256(b"".join(s.astype("<i8").tobytes() + b"|" for s in dataset.sequences)).hexdigest()[:16]


def save_lares(model: LARES, path: str | Path, half: bool = False, meta: dict | None = None,
               optimizer: dict | None = None) -> None:
    """Write config + weights (float16 when ``half``) + free-form ``meta`` to ``path``, and the training
    optimizer's ``state_dict`` if given (so that training can resume where it stopped)."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    extra = {} if optimizer is None else {"optimizer": optimizer}
    torch.save({"config": asdict(model.config), "state_dict": state, "meta": meta or {}, **extra}, path)


def load_lares_and_optimizer(path: str | Path) -> tuple[LARES, dict | None]:
    """A :func:`save_lares` file's model (weights as float32, eval mode) and the optimizer ``state_dict``
    it holds, or None (saved without one); the file is read once."""
    ckpt = read_checkpoint(path, "LARES")
    known = {f.name for f in fields(LARESConfig)}
    if not isinstance(ckpt.get("config"), dict) or "state_dict" not in ckpt or not set(ckpt["config"]) <= known:
        raise ValueError(f"{path} is not a recrail LARES checkpoint (written by save_lares: a LARESConfig and weights)")
    model = LARES(LARESConfig(**ckpt["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    model.meta = ckpt.get("meta", {})
    return model.eval(), ckpt.get("optimizer")


def load_lares(path: str | Path) -> LARES:
    """Load a checkpoint written by :func:`save_lares` (weights as float32, eval mode)."""
    return load_lares_and_optimizer(path)[0]
