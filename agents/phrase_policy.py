"""A MaskablePPO policy for ``recrail/TRMRetrieval-v0`` that scores every phrase with one shared net.

In the DeepRec vector env, action ``a < V`` means "call phrase a", and the observation holds
V-wide blocks with one column per phrase (history share, pool share, used, hinted). A plain MLP
head must learn a separate output row per phrase, so a rule such as "call the hinted phrase" is V
rules, each rewarded in about 1/V of the episodes: at 100k steps MaskablePPO with ``MlpPolicy``
learned none of them (a fixed 8-call script that ignores the observation; hint used in 12% of the
episodes, chance level).

Here the logit of phrase a is a network shared by all phrases, applied to phrase a's own columns
of those blocks and to a small projection of the state latent (so how much a feature counts may
depend on the state), plus the usual per-action linear term of the state latent; the plain call
and STOP get the linear term only. This is action-feature scoring for large discrete action sets
(as in DRRN, He et al. 2016). The value head is SB3's.

Used through :mod:`agents.train_sb3` as ``policy: PhraseScoringPolicy``; its layout
(``n_phrases``, ``phrase_blocks``) comes from the env's ``phrase_feature_layout()``. The torch
parts (:func:`check_phrase_layout`, :class:`WithPhraseFeatures`, :class:`PhraseHead`) are shared
with the RLlib module :mod:`agents.phrase_rl_module`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from torch import nn


def check_phrase_layout(obs_dim: int, n_actions: int, n_phrases: int, phrase_blocks: Sequence[int]) -> None:
    """Raise a ValueError naming the bad value when the layout does not fit the spaces."""
    if not 1 <= n_phrases <= n_actions:
        raise ValueError(f"n_phrases = {n_phrases!r} is invalid; allowed: 1..{n_actions} (the action count)")
    bad = [b for b in phrase_blocks if not 0 <= b <= obs_dim - n_phrases]
    if not phrase_blocks or bad:
        raise ValueError(
            f"phrase_blocks = {list(phrase_blocks)!r} is invalid; allowed: a non-empty list of block starts "
            f"in 0..{obs_dim - n_phrases} (observation width {obs_dim}, {n_phrases} phrases)"
        )


class WithPhraseFeatures(nn.Module):
    """SB3's MLP extractor, with each phrase's observation columns appended to the actor latent."""

    def __init__(self, inner: nn.Module, n_phrases: int, phrase_blocks: Sequence[int]) -> None:
        super().__init__()
        self.inner = inner
        index = torch.tensor([[b + a for b in phrase_blocks] for a in range(n_phrases)], dtype=torch.long)
        self.register_buffer("index", index, persistent=False)  # LongTensor[V, F] of obs columns
        self.latent_dim_pi = inner.latent_dim_pi + index.numel()
        self.latent_dim_vf = inner.latent_dim_vf

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.inner.forward_actor(features), features[:, self.index].flatten(1)], dim=1)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.inner.forward_critic(features)


class PhraseHead(nn.Module):
    """Logits: a per-action linear term of the state latent + a shared score of each phrase's features."""

    def __init__(self, state_dim: int, n_phrases: int, n_features: int, n_actions: int, hidden: int, state_dims: int) -> None:
        super().__init__()
        self.state_dim, self.n_phrases, self.n_features = state_dim, n_phrases, n_features
        self.linear = nn.Linear(state_dim, n_actions)
        self.state_proj = nn.Linear(state_dim, state_dims)
        self.score = nn.Sequential(nn.Linear(n_features + state_dims, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        for layer in (self.linear, self.score[-1]):  # near-uniform initial policy, as SB3's gain 0.01
            nn.init.orthogonal_(layer.weight, gain=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        state = latent[:, : self.state_dim]
        phrases = latent[:, self.state_dim :].view(-1, self.n_phrases, self.n_features)
        z = torch.tanh(self.state_proj(state))[:, None].expand(-1, self.n_phrases, -1)
        per_phrase = self.score(torch.cat([phrases, z], dim=-1)).squeeze(-1)
        logits = self.linear(state)
        return torch.cat([logits[:, : self.n_phrases] + per_phrase, logits[:, self.n_phrases :]], dim=1)


class PhraseScoringPolicy(MaskableActorCriticPolicy):
    """MaskablePPO actor-critic whose phrase logits share one scoring network (module docstring).

    ``n_phrases``: V, the first V actions are phrases; ``phrase_blocks``: the first observation
    column of each V-wide per-phrase block (column ``block + a`` belongs to phrase a).
    """

    def __init__(self, observation_space, action_space, lr_schedule, n_phrases: int = 0,
                 phrase_blocks: Sequence[int] = (), phrase_hidden: int = 32, state_dims: int = 8, **kwargs) -> None:
        check_phrase_layout(int(observation_space.shape[0]), int(action_space.n), n_phrases, phrase_blocks)
        self.n_phrases, self.phrase_blocks = n_phrases, list(phrase_blocks)
        self.phrase_hidden, self.state_dims = phrase_hidden, state_dims
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        super()._build_mlp_extractor()
        self.mlp_extractor = WithPhraseFeatures(self.mlp_extractor, self.n_phrases, self.phrase_blocks)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        inner = self.mlp_extractor.inner.latent_dim_pi
        self.action_net = PhraseHead(inner, self.n_phrases, len(self.phrase_blocks), int(self.action_space.n),
                                     self.phrase_hidden, self.state_dims)
        # the optimizer must see the new head's parameters
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict:
        data = super()._get_constructor_parameters()
        data.update(n_phrases=self.n_phrases, phrase_blocks=self.phrase_blocks,
                    phrase_hidden=self.phrase_hidden, state_dims=self.state_dims)
        return data
