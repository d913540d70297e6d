"""Leave-one-out split: targets, left padding, history masks, training windows, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simulators.recsys.dataset import InteractionDataset
from simulators.recsys.split import leave_one_out


def _dataset(seqs: list[list[int]], n_items: int = 9) -> InteractionDataset:
    return InteractionDataset("t", n_items, [f"u{i}" for i in range(len(seqs))],
                              ["<pad>"] + [str(i) for i in range(1, n_items + 1)],
                              [np.array(s) for s in seqs], [""] * (n_items + 1), [()] * (n_items + 1))


def test_stages_and_padding() -> None:
    split = leave_one_out(_dataset([[1, 2, 3, 4, 5], [6, 7], [8, 9, 1]]))
    assert split.users("test").tolist() == [0, 1, 2]
    assert split.users("valid").tolist() == [0, 2]
    assert split.users("train").tolist() == [0]
    x, y = split.batch("test", np.array([0, 1]), max_len=3)
    assert x.tolist() == [[2, 3, 4], [0, 0, 6]] and y.tolist() == [5, 7]
    x, y = split.batch("valid", np.array([0, 2]), max_len=4)
    assert x.tolist() == [[0, 1, 2, 3], [0, 0, 0, 8]] and y.tolist() == [4, 9]
    x, y = split.batch("train", np.array([0]), max_len=6)
    assert x.tolist() == [[0, 0, 0, 0, 1, 2]] and y.tolist() == [3]
    assert x.dtype == torch.long


def test_history_mask_covers_whole_input_not_only_window() -> None:
    split = leave_one_out(_dataset([[1, 2, 3, 4, 5]]))
    x, _ = split.batch("test", np.array([0]), max_len=2)
    assert x.tolist() == [[3, 4]]
    mask = split.history_mask("test", np.array([0]))
    assert mask.shape == (1, 10)
    assert mask[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]  # padding + all 4 input items


def test_train_windows_shift_by_one() -> None:
    split = leave_one_out(_dataset([[1, 2, 3, 4, 5, 6, 7], [5, 6, 7, 8]]))
    x, y = split.train_windows(np.array([0, 1]), max_len=3)
    assert x.tolist() == [[2, 3, 4], [0, 0, 5]]  # training seqs [1..5] and [5, 6]
    assert y.tolist() == [[3, 4, 5], [0, 0, 6]]
    assert split.train_sequence(0).tolist() == [1, 2, 3, 4, 5]


def test_errors_name_the_problem() -> None:
    split = leave_one_out(_dataset([[1, 2, 3, 4], [5, 6]]))
    with pytest.raises(ValueError, match="stage must be one of"):
        split.users("dev")
    with pytest.raises(ValueError, match=r"users \[1\] have no valid target"):
        split.batch("valid", np.array([0, 1]), 5)
    with pytest.raises(ValueError, match="user indices"):
        split.batch("test", np.array([7]), 5)
    with pytest.raises(ValueError, match="max_len"):
        split.batch("test", np.array([0]), 0)


def test_dataset_validation() -> None:
    with pytest.raises(ValueError, match="outside 1..9"):
        _dataset([[0, 1]])
    with pytest.raises(ValueError, match="item_titles"):
        InteractionDataset("t", 2, ["a"], ["<pad>", "1", "2"], [np.array([1])], [""], [(), (), ()])


@pytest.mark.parametrize("hold_out_last", [False, True])
def test_prefix_pairs_name_each_prefix_instance_and_mask_its_whole_history(hold_out_last: bool) -> None:
    split = leave_one_out(_dataset([[1, 2, 3, 4, 5, 6, 7], [8, 9, 1, 2], [3, 4]]))
    inputs, targets = split.prefix_instances(max_len=2, hold_out_last=hold_out_last)
    users, ends = split.prefix_pairs(hold_out_last)
    assert len(users) == len(ends) == len(targets)
    assert targets.tolist() == [int(split.train_sequence(u)[e]) for u, e in zip(users, ends)]
    mask = split.prefix_history_mask(users, ends)
    for row, (u, e) in enumerate(zip(users, ends)):
        seen = set(split.train_sequence(u)[:e].tolist()) | {0}
        assert set(torch.nonzero(mask[row]).flatten().tolist()) == seen  # older items than the 2-item window too
        assert set(inputs[row].tolist()) <= seen
    # user 0 trains on 1..5: its pair (prefix 1 2 3, target 4) masks 1 although its window is 2 3
    row = next(i for i, (u, e) in enumerate(zip(users, ends)) if u == 0 and e == 3)
    assert inputs[row].tolist() == [2, 3] and mask[row, 1]
