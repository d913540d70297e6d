"""Plackett-Luce lists: probabilities against hand computation and enumeration, sampling frequencies,
exclusions, list rewards, and errors on bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from simulators.recsys.plackett_luce import list_log_prob, list_rewards, sample_lists


def _exclude(n: int, *items: int) -> torch.Tensor:
    ex = torch.zeros(1, n, dtype=torch.bool)
    ex[0, [0, *items]] = True
    return ex


def test_log_prob_hand_computed():
    """Scores log(1..4) on items 1-4 (item 0 excluded): softmax 0.1, 0.2, 0.3, 0.4; the list (4, 2) has
    probability 0.4 x 0.2 / (1 - 0.4)."""
    scores = torch.log(torch.tensor([[1.0, 1.0, 2.0, 3.0, 4.0]]))
    lp = list_log_prob(scores, _exclude(5), torch.tensor([[[4, 2]]]))
    assert lp.shape == (1, 1)
    assert lp.exp().item() == pytest.approx(0.4 * 0.2 / 0.6, rel=1e-6)
    # temperature 0.5 squares the weights: 16 / 30, then 4 / (30 - 16)
    lp = list_log_prob(scores, _exclude(5), torch.tensor([[[4, 2]]]), temperature=0.5)
    assert lp.exp().item() == pytest.approx(16 / 30 * 4 / 14, rel=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_probabilities_of_all_lists_sum_to_one(k):
    scores = torch.randn(1, 7, generator=torch.Generator().manual_seed(k)) * 2
    ex = _exclude(7, 3)
    items = [i for i in range(7) if not ex[0, i]]
    lists = torch.tensor([list(p) for p in itertools.permutations(items, k)])[None]
    assert list_log_prob(scores, ex, lists, temperature=0.7).exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_sampled_frequencies_match_the_probabilities():
    scores = torch.tensor([[0.0, 1.5, 0.2, -0.3, 0.9, 0.0]])
    ex = _exclude(6, 5)
    lists = sample_lists(scores, ex, 2, 40000, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert lists.shape == (1, 40000, 2)
    assert not ex[0, lists.flatten()].any()  # excluded items are never drawn
    assert (lists[..., 0] != lists[..., 1]).all()  # a list holds distinct items
    for pair in [(1, 4), (4, 1), (2, 3)]:
        freq = (lists[0] == torch.tensor(pair)).all(-1).float().mean().item()
        prob = list_log_prob(scores, ex, torch.tensor([[pair]])).exp().item()
        assert freq == pytest.approx(prob, abs=4 * math.sqrt(prob * (1 - prob) / 40000))


def test_one_item_list_gradient_is_onehot_minus_softmax():
    scores = torch.tensor([[0.0, 0.5, -1.0, 2.0]], requires_grad=True)
    list_log_prob(scores, _exclude(4), torch.tensor([[[2]]])).sum().backward()
    p = torch.softmax(scores.detach()[0, 1:], 0)
    expected = torch.cat([torch.zeros(1), torch.tensor([0.0, 1.0, 0.0]) - p])
    torch.testing.assert_close(scores.grad[0], expected)


def test_a_list_holding_almost_all_mass_keeps_its_precision():
    """After the first draw the remaining mass is about 1e-9 of the total: the float64 mass keeps the
    second draw's probability exact (a float32 1 - p would round it to 0 or worse)."""
    scores = torch.tensor([[0.0, 30.0, 10.0, 9.0]])
    lp = list_log_prob(scores, _exclude(4), torch.tensor([[[1, 2]]]))
    e = math.exp
    expected = math.log(e(30) / (e(30) + e(10) + e(9))) + math.log(e(10) / (e(10) + e(9)))
    assert lp.item() == pytest.approx(expected, abs=1e-4)


def test_list_rewards_hand_computed():
    lists = torch.tensor([[[3, 5, 2], [1, 2, 4], [7, 8, 9]]])
    target = torch.tensor([2])
    torch.testing.assert_close(list_rewards(lists, target, "ndcg"), torch.tensor([[0.5, 1 / math.log2(3), 0.0]]))
    torch.testing.assert_close(list_rewards(lists, target, "recall"), torch.tensor([[1.0, 1.0, 0.0]]))


def test_bad_input_is_rejected_with_the_allowed_values():
    scores, ex = torch.zeros(1, 5), _exclude(5, 1)
    with pytest.raises(ValueError, match=r"k = 4 is invalid; allowed: 1..3"):
        sample_lists(scores, ex, 4, 1)
    with pytest.raises(ValueError, match="samples = 0"):
        sample_lists(scores, ex, 2, 0)
    with pytest.raises(ValueError, match="temperature = 0.0"):
        sample_lists(scores, ex, 2, 1, temperature=0.0)
    with pytest.raises(ValueError, match="excluded item"):
        list_log_prob(scores, ex, torch.tensor([[[2, 1]]]))
    with pytest.raises(ValueError, match="must be equal"):
        list_log_prob(scores, ex[:, :4], torch.tensor([[[2]]]))
    with pytest.raises(ValueError, match="metric = 'mrr'"):
        list_rewards(torch.tensor([[[1]]]), torch.tensor([1]), "mrr")
