"""Leave-one-out split: last item = test target, second last = validation target, rest = training.

Per user with sequence ``s`` (time order):
- "train" stage: inputs ``s[:-3]``, target ``s[-3]`` (the last training item; for convenience),
- "valid" stage: inputs ``s[:-2]`` (the training sequence), target ``s[-2]``,
- "test"  stage: inputs ``s[:-1]`` (training sequence + validation item), target ``s[-1]``.
A user has a target in a stage only if that stage's input is non-empty (lengths >= 4, 3, 2).
Inputs are left-padded with 0 and cut to their last ``max_len`` items; the history mask covers the
user's whole input (not only the last ``max_len`` items) plus the padding id 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .dataset import InteractionDataset

STAGES = ("train", "valid", "test")
_CUT = {"train": 3, "valid": 2, "test": 1}  # stage target = s[-cut], inputs = s[:-cut]


def _left_pad(seqs: list[np.ndarray], width: int) -> np.ndarray:
    out = np.zeros((len(seqs), width), dtype=np.int32)  # int32 halves memory on long datasets
    for i, s in enumerate(seqs):
        s = s[-width:] if width else s[:0]
        if len(s):
            out[i, width - len(s):] = s
    return out


@dataclass
class LeaveOneOutSplit:
    """The leave-one-out split of an :class:`InteractionDataset` (build with :func:`leave_one_out`)."""

    dataset: InteractionDataset

    def __post_init__(self) -> None:
        seqs = self.dataset.sequences
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        self._users: dict[str, np.ndarray] = {}
        self._inputs: dict[str, np.ndarray] = {}  # stage -> [n_users, widest input] left-padded
        self._targets: dict[str, np.ndarray] = {}
        for stage, cut in _CUT.items():
            self._users[stage] = np.flatnonzero(lengths > cut)
            width = max(int(lengths.max(initial=0)) - cut, 1)
            self._inputs[stage] = _left_pad([s[:-cut] if len(s) > cut else s[:0] for s in seqs], width)
            self._targets[stage] = np.array([s[-cut] if len(s) > cut else 0 for s in seqs], dtype=np.int64)
        self._has = {st: np.isin(np.arange(len(seqs)), u) for st, u in self._users.items()}

    @property
    def n_items(self) -> int:
        """Number of real items (ids 1..n_items)."""
        return self.dataset.n_items

    @property
    def n_users(self) -> int:
        """Number of users of the dataset (user indices 0..n_users-1)."""
        return self.dataset.n_users

    def train_sequence(self, user: int) -> np.ndarray:
        """The training sequence of one user: all items but the last two."""
        return self.dataset.sequences[user][:-2]

    def users(self, stage: str) -> np.ndarray:
        """Indices of the users with a target in ``stage`` ("train", "valid" or "test")."""
        return self._users[self._stage(stage)]

    def batch(self, stage: str, users: np.ndarray, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs LongTensor[B, max_len] (left-padded with 0, last max_len items) and targets LongTensor[B]."""
        stage = self._stage(stage)
        users = self._check_users(stage, users)
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        mat = self._inputs[stage]
        if max_len <= mat.shape[1]:
            inputs = mat[users, mat.shape[1] - max_len:]
        else:
            inputs = np.pad(mat[users], ((0, 0), (max_len - mat.shape[1], 0)))
        return torch.from_numpy(np.ascontiguousarray(inputs)).long(), torch.from_numpy(self._targets[stage][users])

    def history_mask(self, stage: str, users: np.ndarray) -> torch.Tensor:
        """BoolTensor[B, n_items + 1]: True for the user's whole input history and for padding id 0."""
        stage = self._stage(stage)
        users = self._check_users(stage, users)
        hist = torch.from_numpy(self._inputs[stage][users]).long()
        mask = torch.zeros(len(users), self.n_items + 1, dtype=torch.bool)
        mask.scatter_(1, hist, True)
        mask[:, 0] = True
        return mask

    def train_windows(self, users: np.ndarray, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-item training pairs over the training sequence: inputs and targets LongTensor[B, max_len].

        ``inputs = t[:-1]``, ``targets = t[1:]`` for the last ``max_len + 1`` training items ``t``,
        left-padded with 0 (target 0 = no loss at that position).
        """
        users = self._check_users("train", users)
        windows = [self.train_sequence(int(u))[-(max_len + 1):] for u in users]
        inputs = _left_pad([w[:-1] for w in windows], max_len)
        targets = _left_pad([w[1:] for w in windows], max_len)
        return torch.from_numpy(inputs).long(), torch.from_numpy(targets).long()

    def prefix_instances(self, max_len: int, hold_out_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Every (prefix, next item) pair of the training sequences: inputs ``[N, max_len]`` (the prefix's
        last ``max_len`` items, left-padded) and targets ``[N]``, users in order, shortest prefix first.
        ``hold_out_last`` leaves out each user's last pair, which is the "train" stage's (:meth:`batch`)."""
        users, ends = self.prefix_pairs(hold_out_last)
        seqs = [self.train_sequence(u) for u in users.tolist()]
        rows = [seq[max(0, t - max_len):t] for seq, t in zip(seqs, ends.tolist())]
        targets = [seq[t] for seq, t in zip(seqs, ends.tolist())]
        return _left_pad(rows, max_len).astype(np.int64), np.asarray(targets, dtype=np.int64)

    def prefix_pairs(self, hold_out_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The (user, prefix length) of every :meth:`prefix_instances` pair, in the same order."""
        users, ends = [], []
        for u in range(self.n_users):
            n = len(self.train_sequence(u)) - (1 if hold_out_last else 0)
            users += [u] * max(0, n - 1)
            ends += range(1, n)
        return np.asarray(users, dtype=np.int64), np.asarray(ends, dtype=np.int64)

    def prefix_history_mask(self, users: np.ndarray, ends: np.ndarray) -> torch.Tensor:
        """BoolTensor[B, n_items + 1]: True for each pair's whole prefix ``train_sequence(user)[:end]`` (not only
        its last max_len items, as :meth:`history_mask` for the stages) and for padding id 0."""
        mask = torch.zeros(len(users), self.n_items + 1, dtype=torch.bool)
        for row, (u, end) in enumerate(zip(np.asarray(users).tolist(), np.asarray(ends).tolist())):
            mask[row, torch.from_numpy(self.train_sequence(u)[:end])] = True
        mask[:, 0] = True
        return mask

    def prefix_windows(self, max_len: int, hold_out_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`prefix_instances` in the window format: inputs and targets ``[N, max_len]``, each row's
        target at its last position only (target 0 = no loss)."""
        inputs, last = self.prefix_instances(max_len, hold_out_last)
        targets = np.zeros_like(inputs)
        targets[:, -1] = last
        return inputs, targets

    def _stage(self, stage: str) -> str:
        if stage not in _CUT:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        return stage

    def _check_users(self, stage: str, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        if users.size and (users.min() < 0 or users.max() >= self.n_users):
            raise ValueError(f"user indices must be in 0..{self.n_users - 1}")
        missing = users[~self._has[stage][users]]
        if missing.size:
            raise ValueError(
                f"users {missing[:5].tolist()} have no {stage} target (sequence too short); "
                f"use split.users({stage!r})"
            )
        return users


def leave_one_out(dataset: InteractionDataset) -> LeaveOneOutSplit:
    """Split ``dataset`` leave-one-out (see the module docstring)."""
    return LeaveOneOutSplit(dataset)
