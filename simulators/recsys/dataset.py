"""The one in-memory dataset type every loader produces.

Items have internal ids ``1..n_items``; id 0 is padding everywhere (sequences, embeddings, masks).
Each user has one time-ordered sequence of internal item ids. Side information per item is a
readable title and a tuple of attribute names (genres, categories, attribute ids as strings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PAD = 0
PAD_TOKEN = "<pad>"


@dataclass
class InteractionDataset:
    """Users, items and per-user time-ordered interaction sequences.

    Attributes:
        name: a short label (file stem, "synthetic", ...).
        n_items: number of real items; internal ids are ``1..n_items``.
        user_ids: original user ids, one per sequence.
        item_ids: original item ids indexed by internal id; ``item_ids[0] == "<pad>"``.
        sequences: per user, an int64 array of internal item ids in time order (no zeros).
        item_titles: readable title per internal id; ``item_titles[0] == ""``.
        item_attributes: attribute names per internal id; ``item_attributes[0] == ()``.
        meta: free-form provenance (loader options, generator parameters).
    """

    name: str
    n_items: int
    user_ids: list[str]
    item_ids: list[str]
    sequences: list[np.ndarray]
    item_titles: list[str]
    item_attributes: list[tuple[str, ...]]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {self.n_items}")
        n = self.n_items + 1
        for fname in ("item_ids", "item_titles", "item_attributes"):
            got = len(getattr(self, fname))
            if got != n:
                raise ValueError(f"{fname} must have n_items + 1 = {n} entries (index 0 = padding), got {got}")
        if self.item_ids[0] != PAD_TOKEN:
            raise ValueError(f"item_ids[0] must be {PAD_TOKEN!r}, got {self.item_ids[0]!r}")
        if len(self.user_ids) != len(self.sequences):
            raise ValueError(
                f"user_ids ({len(self.user_ids)}) and sequences ({len(self.sequences)}) differ in length"
            )
        for i, seq in enumerate(self.sequences):
            seq = np.asarray(seq, dtype=np.int64)
            if seq.ndim != 1:
                raise ValueError(f"sequence of user {self.user_ids[i]!r} must be 1-D, got shape {seq.shape}")
            if seq.size and (seq.min() < 1 or seq.max() > self.n_items):
                raise ValueError(
                    f"sequence of user {self.user_ids[i]!r} has item ids outside 1..{self.n_items} "
                    f"(min {seq.min()}, max {seq.max()})"
                )
            self.sequences[i] = seq

    @property
    def n_users(self) -> int:
        """Number of users (sequences)."""
        return len(self.sequences)

    @property
    def n_interactions(self) -> int:
        """Total number of interactions over all users."""
        return int(sum(len(s) for s in self.sequences))

    def item_counts(self) -> np.ndarray:
        """Interaction count per internal item id (index 0 = padding, always 0)."""
        counts = np.zeros(self.n_items + 1, dtype=np.int64)
        if self.sequences:
            np.add.at(counts, np.concatenate(self.sequences), 1)
        return counts

    def summary(self) -> dict[str, float]:
        """Size statistics: users, items, interactions, mean length, density."""
        n_int = self.n_interactions
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n_int,
            "mean_seq_len": n_int / max(self.n_users, 1),
            "density": n_int / max(self.n_users * self.n_items, 1),
        }
