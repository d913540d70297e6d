"""User response model: how a simulated user reacts to a recommended slate.

Choice model (a multinomial logit over the slate plus an outside option, built on the trained
sequence model's next-item distribution):

- ``p(i | h) = softmax(score(h) / temperature)`` over items 1..n_items, with the items of the
  user's input history ``h`` removed when ``exclude_history`` (items are not consumed twice);
  this is what the user would consume next without recommendations.
- Being shown in the slate at 0-based position k multiplies an item's attraction by
  ``exposure_boost * e_k`` with examination ``e_k = 1 / log2(k + 2) ** position_decay``.
- The user consumes slate item ``i_k`` with probability
  ``boost_k p(i_k) / (1 - sum_S p + sum_S boost_j p(i_j))`` and consumes nothing from the slate
  (the outside option: something else) with probability ``(1 - sum_S p) / (same denominator)``.
With ``exposure_boost = 1`` and ``position_decay = 0`` the slate does not change behaviour: a
slate item is consumed exactly when the logged-data model would pick it anyway. Slot id 0 means
an empty slot (probability 0); an item twice in one slate is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from simulators.checks import check_field, check_finite

from .world import RecWorld


@dataclass(frozen=True)
class UserModelConfig:
    """Parameters of the choice model (see the module docstring)."""

    temperature: float = 1.0
    exposure_boost: float = 5.0
    position_decay: float = 1.0
    exclude_history: bool = True

    def __post_init__(self) -> None:
        check_finite(self, "temperature", "exposure_boost", "position_decay")
        check_field(self, "exclude_history", isinstance(self.exclude_history, bool), "True or False")
        if self.temperature <= 0:
            raise ValueError(f"UserModelConfig.temperature = {self.temperature}; allowed: a float > 0")
        if self.exposure_boost < 1:
            raise ValueError(f"UserModelConfig.exposure_boost = {self.exposure_boost}; allowed: a float >= 1")
        if self.position_decay < 0:
            raise ValueError(f"UserModelConfig.position_decay = {self.position_decay}; allowed: a float >= 0")


class UserResponseModel:
    """Simulated user responses to slates, driven by ``world.sasrec`` (see the module docstring)."""

    def __init__(self, world: RecWorld, config: UserModelConfig | None = None) -> None:
        self.world = world
        self.config = config or UserModelConfig()

    @torch.no_grad()
    def next_item_probs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """FloatTensor[B, n_items + 1]: ``p(i | h)`` without recommendations (column 0 = 0)."""
        logits = self.world.sasrec.score(input_ids) / self.config.temperature
        if self.config.exclude_history:
            logits = logits.scatter(1, input_ids.long(), float("-inf"))
        return torch.softmax(logits, dim=-1)

    def choice_probs(self, input_ids: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
        """FloatTensor[B, K + 1]: probability of consuming each slate item; last column = none of them."""
        slates = self._check(slates, input_ids.shape[0])
        p = self.next_item_probs(input_ids).gather(1, slates) * (slates > 0)
        k = torch.arange(slates.shape[1], dtype=p.dtype)
        boost = self.config.exposure_boost / torch.log2(k + 2.0) ** self.config.position_decay
        attraction = boost * p
        outside = (1.0 - p.sum(dim=1, keepdim=True)).clamp_min(0.0)
        weights = torch.cat([attraction, outside], dim=1)
        return weights / weights.sum(dim=1, keepdim=True)

    def consume_probs(self, input_ids: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
        """FloatTensor[B, K]: probability that the user consumes each slate item (at most one)."""
        return self.choice_probs(input_ids, slates)[:, :-1]

    def sample(self, input_ids: torch.Tensor, slates: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """LongTensor[B]: the consumed slate position per user, or -1 when nothing is consumed."""
        probs = self.choice_probs(input_ids, slates)
        pick = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return torch.where(pick == slates.shape[1], torch.full_like(pick, -1), pick)

    def _check(self, slates: torch.Tensor, batch: int) -> torch.Tensor:
        if slates.ndim != 2 or slates.shape[0] != batch:
            raise ValueError(f"slates must be LongTensor[{batch}, K], got shape {tuple(slates.shape)}")
        if slates.is_floating_point() or slates.dtype == torch.bool:  # 1.7 would silently become item 1
            raise ValueError(f"slates must be LongTensor[{batch}, K] of item ids, got dtype {slates.dtype}")
        slates = slates.long()
        n = self.world.n_items
        if slates.numel() and (int(slates.min()) < 0 or int(slates.max()) > n):
            raise ValueError(f"slate item ids must be in 1..{n} (0 = empty slot)")
        ordered = slates.sort(dim=1).values
        if bool(((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] > 0)).any()):
            raise ValueError("a slate contains the same item twice")
        return slates
