"""Full-ranking evaluation: the target's rank among all items, Recall@K and NDCG@K.

Every item is ranked (no sampled negatives); items flagged in ``exclude`` (the user's own history
and the padding id 0) are removed from the ranking. Ties are counted pessimistically: an excluded
item never counts, any other item scoring >= the target ranks above it. With one held-out target
per user (leave-one-out), Recall@K = 1[rank < K] and NDCG@K = 1[rank < K] / log2(rank + 2).
Everything is batched in torch: one call ranks a whole batch of users against all items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .split import LeaveOneOutSplit

DEFAULT_KS = (5, 10, 20)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among the non-excluded items.

    Args:
        scores: FloatTensor[B, n_items + 1], higher = better.
        targets: LongTensor[B] of internal item ids in ``1..n_items``.
        exclude: BoolTensor[B, n_items + 1], True = not ranked (history, padding). The target
            itself is always ranked even if flagged (a repeated consumption stays evaluable).

    Returns:
        LongTensor[B]: number of non-excluded items (target included) with score >= the
        target's score, minus 1.

    Raises:
        ValueError: on malformed shapes, targets outside ``1..n_items`` or NaN scores.
    """
    if scores.ndim != 2 or exclude.shape != scores.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and exclude {tuple(exclude.shape)} must be equal [B, n_items+1]")
    if targets.shape != (scores.shape[0],):
        raise ValueError(f"targets must have shape [{scores.shape[0]}], got {tuple(targets.shape)}")
    if targets.numel() and (int(targets.min()) < 1 or int(targets.max()) >= scores.shape[1]):
        raise ValueError(f"targets must be item ids in 1..{scores.shape[1] - 1}")
    if bool(torch.isnan(scores).any()):  # a NaN target would rank -1, better than first: a diverged model
        raise ValueError("scores contain NaN (a diverged model?); a rank is defined for real-valued scores only")
    target_scores = scores.gather(1, targets.view(-1, 1))
    keep = ~exclude
    keep = keep.scatter(1, targets.view(-1, 1), True)
    above = (scores >= target_scores) & keep
    return above.sum(dim=1) - 1


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def recall_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user Recall@K for one target: 1.0 if rank < k else 0.0."""
    _check_k(k)
    return (ranks < k).float()


def ndcg_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user NDCG@K for one target: 1/log2(rank + 2) if rank < k else 0.0 (ideal DCG = 1)."""
    _check_k(k)
    gain = 1.0 / torch.log2(ranks.double() + 2.0)
    return torch.where(ranks < k, gain, torch.zeros_like(gain)).float()


RANK_METRICS = {"recall": recall_at_k, "ndcg": ndcg_at_k}  # a ranking reward's name -> its per-user metric


def rank_metric(ranks: torch.Tensor, metric: str, k: int) -> torch.Tensor:
    """Per-user ``metric`` (a key of :data:`RANK_METRICS`) at ``k`` of 0-based ranks, for rewards named in configs."""
    if metric not in RANK_METRICS:
        raise ValueError(f"metric = {metric!r} is invalid; allowed: one of {tuple(RANK_METRICS)}")
    return RANK_METRICS[metric](ranks, k)


def ranking_metrics(ranks: torch.Tensor, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """Means over users: keys "Recall@K" and "NDCG@K" for each K, plus "MRR"."""
    if ranks.numel() == 0:
        raise ValueError("ranking_metrics needs at least one rank")
    out: dict[str, float] = {}
    for k in ks:
        out[f"Recall@{k}"] = float(recall_at_k(ranks, k).mean())
        out[f"NDCG@{k}"] = float(ndcg_at_k(ranks, k).mean())
    out["MRR"] = float((1.0 / (ranks.double() + 1.0)).mean())
    return out



def evaluate_full_ranking(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    split: LeaveOneOutSplit,
    stage: str = "test",
    max_len: int = 50,
    ks: Iterable[int] = DEFAULT_KS,
    batch_size: int = 1024,
    users: np.ndarray | None = None,
) -> dict[str, float]:
    """Rank all items for every user with a ``stage`` target and average the metrics.

    ``score_fn(input_ids LongTensor[B, max_len]) -> FloatTensor[B, n_items + 1]`` is called on
    batches of users (no per-user loop); the user's whole input history and padding are excluded.
    ``users`` defaults to ``split.users(stage)``. Adds "users" (the count) to the result.
    """
    users = split.users(stage) if users is None else np.asarray(users)
    ranks = []
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            chunk = users[start:start + batch_size]
            inputs, targets = split.batch(stage, chunk, max_len)
            scores = score_fn(inputs).float()
            ranks.append(target_ranks(scores, targets, split.history_mask(stage, chunk)))
    out = ranking_metrics(torch.cat(ranks), ks)
    out["users"] = float(len(users))
    return out
