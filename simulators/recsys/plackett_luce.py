"""Ranked lists as a policy's actions: Plackett-Luce sampling, log-probabilities and list rewards.

A recommender that scores every item defines a Plackett-Luce (PL) distribution over ranked lists of ``k``
distinct items: the first item is drawn from ``softmax(scores / temperature)``, each next one from the
same softmax renormalised over the items not yet drawn. Excluded items (the user's history, the padding
id 0) are never drawn. Gumbel-top-k draws an exact PL sample in one ``topk`` call (Kool et al., 2019:
the top-k of ``scores / temperature + Gumbel noise``, in order). The list's log-probability is

    log P(a_1..a_k) = sum_i [ z_{a_i} - log sum_{j not excluded, j not in a_<i} exp z_j ],  z = scores / temperature,

computed from one sum over all items and the drawn items' cumulative mass, so its cost does not grow with ``k``
beyond a gather. The reward of a list is the ranking metric of the target's position in it (Recall@k / NDCG@k,
:mod:`simulators.recsys.metrics`), 0 when the target is not drawn.
"""

from __future__ import annotations

import torch

from .metrics import rank_metric


def _masked(scores: torch.Tensor, exclude: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature = {temperature!r} is invalid; allowed: a float > 0")
    if exclude.shape != scores.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and exclude {tuple(exclude.shape)} must be equal "
                         "[B, n_items+1]")
    return (scores / temperature).masked_fill(exclude, float("-inf"))


@torch.no_grad()
def sample_lists(scores: torch.Tensor, exclude: torch.Tensor, k: int, samples: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``samples`` independent PL lists of ``k`` items per row: LongTensor ``[B, samples, k]``, in drawn order.

    ``scores``: ``[B, n_items + 1]``; ``exclude``: BoolTensor of the same shape, True = never drawn. Each row
    needs at least ``k`` items that are not excluded.
    """
    z = _masked(scores, exclude, temperature)
    available = int((~exclude).sum(1).min()) if len(z) else k
    if not 1 <= k <= available:
        raise ValueError(f"k = {k!r} is invalid; allowed: 1..{available} (the fewest items a row may draw)")
    if samples < 1:
        raise ValueError(f"samples = {samples!r} is invalid; allowed: an int >= 1")
    u = torch.rand((z.shape[0], samples, z.shape[1]), generator=generator).clamp_(min=1e-12)
    gumbel = -torch.log(-torch.log(u))
    return (z[:, None, :] + gumbel).topk(k, dim=-1).indices


def list_log_prob(scores: torch.Tensor, exclude: torch.Tensor, lists: torch.Tensor, temperature: float = 1.0
                  ) -> torch.Tensor:
    """PL log-probability ``[B, S]`` of ``lists`` (``[B, S, k]`` item ids) under ``scores`` ``[B, n_items + 1]``.

    Differentiable in ``scores``. The normaliser of draw ``i`` is the total mass minus that of the items drawn
    before it, in float64 with the same ``exp`` values in both terms: the mass a list leaves is exact down to
    about 1e-15 of the total (float32 ``logsumexp`` rounding loses it below about 1e-6), and no item less than
    700 nats below the top underflows.
    """
    z = _masked(scores, exclude, temperature)
    z = (z - z.max(-1, keepdim=True).values.detach()).double()  # the top item at 0: exp never overflows
    drawn = z.gather(1, lists.flatten(1)).view(lists.shape)  # [B, S, k]
    if torch.isinf(drawn).any():
        raise ValueError("lists hold an excluded item; allowed: items that exclude leaves drawable")
    mass = torch.exp(drawn)
    before = torch.cumsum(mass, dim=-1) - mass  # the drawn items' mass before each position
    remaining = torch.exp(z).sum(-1)[:, None, None] - before
    return (drawn - torch.log(remaining)).sum(-1).to(scores.dtype)


def list_rewards(lists: torch.Tensor, targets: torch.Tensor, metric: str = "ndcg") -> torch.Tensor:
    """Ranking reward ``[B, S]`` of each list (``[B, S, k]``) for the row's target: its ``metric``
    (``"recall"`` or ``"ndcg"``) at ``k`` = the list length, 0 when the target is not in the list."""
    k = lists.shape[-1]
    hit = lists == targets[:, None, None]
    ranks = torch.where(hit.any(-1), hit.float().argmax(-1), torch.full(hit.shape[:-1], k))
    return rank_metric(ranks, metric, k)
