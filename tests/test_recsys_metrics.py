"""Full-ranking metric math against hand-computed rankings (ties, masking) and the batched evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from simulators.recsys.dataset import InteractionDataset
from simulators.recsys.metrics import (
    evaluate_full_ranking,
    ndcg_at_k,
    rank_metric,
    ranking_metrics,
    recall_at_k,
    target_ranks,
)
from simulators.recsys.split import leave_one_out


def _mask(rows: int, cols: int, masked: dict[int, list[int]] | None = None) -> torch.Tensor:
    m = torch.zeros(rows, cols, dtype=torch.bool)
    m[:, 0] = True
    for r, items in (masked or {}).items():
        m[r, items] = True
    return m


def test_rank_by_hand_with_ties_and_masking() -> None:
    # items 1..5; user 0: target 3 (score 0.5) beaten by item 1 (0.9) and tied with item 4 (0.5)
    scores = torch.tensor([[9.0, 0.9, 0.1, 0.5, 0.5, 0.2],
                           [9.0, 0.9, 0.1, 0.5, 0.5, 0.2]])
    targets = torch.tensor([3, 3])
    # user 1 has item 1 and 4 in its history: only the remaining items compete
    ranks = target_ranks(scores, targets, _mask(2, 6, {1: [1, 4]}))
    assert ranks.tolist() == [2, 0]  # pessimistic tie: item 4 counts above; padding col 0 never counts


def test_target_in_history_is_still_ranked() -> None:
    scores = torch.tensor([[0.0, 3.0, 2.0, 1.0]])
    ranks = target_ranks(scores, torch.tensor([2]), _mask(1, 4, {0: [1, 2]}))
    assert ranks.tolist() == [0]


def test_recall_ndcg_by_hand() -> None:
    ranks = torch.tensor([0, 1, 4, 9, 10, 25])
    assert recall_at_k(ranks, 5).tolist() == [1, 1, 1, 0, 0, 0]
    expected = [1.0, 1 / math.log2(3), 1 / math.log2(6), 0, 0, 0]
    assert ndcg_at_k(ranks, 5).tolist() == pytest.approx(expected)
    m = ranking_metrics(ranks, ks=(5, 10))
    assert m["Recall@5"] == pytest.approx(0.5)
    assert m["Recall@10"] == pytest.approx(4 / 6)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 6)
    assert m["MRR"] == pytest.approx(np.mean([1, 1 / 2, 1 / 5, 1 / 10, 1 / 11, 1 / 26]))
    assert rank_metric(ranks, "recall", 5).tolist() == [1, 1, 1, 0, 0, 0]
    assert rank_metric(ranks, "ndcg", 5).tolist() == pytest.approx(expected)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(torch.tensor([0]), 0)
    with pytest.raises(ValueError, match="targets must be item ids"):
        target_ranks(torch.zeros(1, 3), torch.tensor([0]), _mask(1, 3))
    with pytest.raises(ValueError, match=r"metric = 'mrr' is invalid; allowed: one of \('recall', 'ndcg'\)"):
        rank_metric(torch.tensor([0]), "mrr", 10)
    with pytest.raises(ValueError, match="scores contain NaN"):  # it would rank -1, above every item
        target_ranks(torch.tensor([[0.0, float("nan"), 1.0, 2.0]]), torch.tensor([1]), _mask(1, 4))
    with pytest.raises(ValueError, match="at least one rank"):
        ranking_metrics(torch.tensor([], dtype=torch.long))


@given(st.lists(st.integers(0, 4), min_size=6, max_size=6), st.integers(1, 5),
       st.lists(st.booleans(), min_size=5, max_size=5))
def test_rank_matches_sorting(int_scores: list[int], target: int, hidden: list[bool]) -> None:
    scores = torch.tensor([int_scores], dtype=torch.float)
    exclude = torch.tensor([[True] + hidden])
    rank = int(target_ranks(scores, torch.tensor([target]), exclude)[0])
    competitors = [i for i in range(1, 6) if i != target and not hidden[i - 1]]
    assert rank == sum(int_scores[i] >= int_scores[target] for i in competitors)


def test_evaluate_full_ranking_batches_equal_one_batch() -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.choice(np.arange(1, 31), size=int(rng.integers(3, 9)), replace=False) for _ in range(40)]
    ds = InteractionDataset("t", 30, [str(i) for i in range(40)], ["<pad>"] + [str(i) for i in range(1, 31)],
                            seqs, [""] * 31, [()] * 31)
    split = leave_one_out(ds)
    weights = torch.randn(31)

    def score(x: torch.Tensor) -> torch.Tensor:  # depends on the last item, so inputs matter
        return weights.expand(x.shape[0], -1) + (x[:, -1:] == torch.arange(31)).float()

    a = evaluate_full_ranking(score, split, "test", max_len=5, batch_size=7)
    b = evaluate_full_ranking(score, split, "test", max_len=5, batch_size=1000)
    assert a == pytest.approx(b)
    assert a["users"] == 40
    oracle = evaluate_full_ranking(lambda x: torch.zeros(x.shape[0], 31), split, "valid")
    assert oracle["Recall@20"] == 0.0  # all ties: >= 23 unmasked items tie, pessimistic rank >= 22
