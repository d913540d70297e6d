"""The embedded synthetic recommendation world (offline default; no files needed).

Model (all draws from one seeded ``numpy.random.Generator``):
- Items: each has a main genre and, with probability ``p_second_genre``, a second draw from all genres
  (the same as the main one 1 time in ``n_genres``: a distinct second genre with probability
  ``p_second_genre * (1 - 1 / n_genres)``, 0.275 by default), an era
  attribute and a readable generated title ("The Silent Harbor", ...). Popularity weights follow a
  power law ``w_i = rank_i ** -popularity_exponent`` over a random item order.
- Series: items of a genre are chained into short series (``series_len`` items); after consuming
  an item, a user continues with its sequel with probability ``p_sequel`` (a sequential signal
  that a sequence model can learn and a popularity model cannot).
- Users: an interest distribution over genres ``theta ~ Dirichlet(interest_concentration)``. At
  every step the interest drifts: ``theta <- (1 - drift) * theta + drift * Dirichlet(...)``.
- Choice: otherwise the next item is drawn with probability proportional to
  ``w_i ** popularity_weight * (theta . genres_i) ** interest_sharpness`` over items not yet consumed.
- Sequence lengths: ``min_len + Geometric(1 / (mean_len - min_len + 1)) - 1``, capped at ``max_len``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from simulators.checks import check_field, check_finite, check_ints

from .dataset import PAD_TOKEN, InteractionDataset

GENRES = (
    "Sci-Fi", "Mystery", "Romance", "Comedy", "Horror", "Documentary",
    "Fantasy", "Thriller", "Drama", "Animation", "Western", "Musical",
)
ERAS = ("era:classic", "era:1980s", "era:1990s", "era:2000s", "era:recent")
_ADJECTIVES = (
    "Silent", "Crimson", "Hidden", "Last", "Golden", "Broken", "Midnight", "Electric", "Frozen",
    "Lost", "Wild", "Secret", "Burning", "Distant", "Hollow", "Velvet", "Iron", "Quiet", "Savage",
    "Bright", "Forgotten", "Endless", "Scarlet", "Northern", "Painted", "Restless", "Wandering",
    "Glass", "Sleeping", "Falling",
)
_NOUNS = (
    "Harbor", "Empire", "Garden", "Signal", "Orchard", "Voyage", "Mirror", "Kingdom", "Frontier",
    "Circus", "Lantern", "Engine", "River", "Station", "Carnival", "Tower", "Island", "Letter",
    "Symphony", "Horizon", "Machine", "Castle", "Desert", "Forest", "Parade", "Cipher", "Canyon",
    "Meadow", "Comet", "Ballad",
)
_ROMAN = ("", " II", " III", " IV", " V", " VI", " VII", " VIII")


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic world (defaults: the shipped default world)."""

    n_users: int = 1500
    n_items: int = 400
    n_genres: int = 12
    mean_len: float = 20.0
    min_len: int = 5
    max_len: int = 60
    popularity_exponent: float = 0.9
    popularity_weight: float = 1.0
    interest_concentration: float = 0.3
    interest_sharpness: float = 2.0
    drift: float = 0.05
    p_second_genre: float = 0.3
    series_len: int = 4
    p_sequel: float = 0.5

    def __post_init__(self) -> None:
        check_ints(self, "n_users", "n_items", "n_genres", "min_len", "max_len", "series_len")
        check_finite(self, "mean_len", "popularity_exponent", "popularity_weight", "interest_concentration",
                     "interest_sharpness", "drift", "p_second_genre", "p_sequel")
        check_field(self, "n_users", self.n_users >= 1, "an int >= 1")
        check_field(self, "n_items", self.n_items >= 2, "an int >= 2")
        check_field(self, "n_genres", 1 <= self.n_genres <= len(GENRES), f"an int in 1..{len(GENRES)}")
        check_field(self, "min_len", self.min_len >= 1, "an int >= 1")
        check_field(self, "max_len", self.max_len >= self.min_len, f"an int >= min_len ({self.min_len})")
        check_field(self, "max_len", self.max_len <= self.n_items,
                    f"an int <= n_items ({self.n_items}); items never repeat")
        check_field(self, "mean_len", self.min_len <= self.mean_len <= self.max_len, "a float in [min_len, max_len]")
        check_field(self, "popularity_exponent", self.popularity_exponent >= 0, "a float >= 0")
        check_field(self, "popularity_weight", self.popularity_weight >= 0, "a float >= 0")
        check_field(self, "interest_concentration", self.interest_concentration > 0, "a float > 0")
        check_field(self, "interest_sharpness", self.interest_sharpness >= 0, "a float >= 0")
        check_field(self, "drift", 0 <= self.drift <= 1, "a float in [0, 1]")
        check_field(self, "p_second_genre", 0 <= self.p_second_genre <= 1, "a float in [0, 1]")
        check_field(self, "series_len", self.series_len >= 1, "an int >= 1")
        check_field(self, "p_sequel", 0 <= self.p_sequel <= 1, "a float in [0, 1]")


def _titles(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct readable titles: adjective + noun pairs, with sequel numerals beyond that, then a number."""
    pairs = [f"The {a} {b}" for a in _ADJECTIVES for b in _NOUNS]
    order = rng.permutation(len(pairs))
    named = len(pairs) * len(_ROMAN)  # beyond this the numerals repeat: a volume number keeps titles distinct
    return [pairs[order[i % len(pairs)]] + _ROMAN[(i // len(pairs)) % len(_ROMAN)]
            + (f" Vol. {i // named + 1}" if i >= named else "") for i in range(n)]


def make_synthetic(config: SyntheticConfig = SyntheticConfig(), seed: int = 0) -> InteractionDataset:
    """Generate the synthetic world's users, items and sequences (see the module docstring)."""
    cfg = config
    rng = np.random.default_rng(seed)
    n, g = cfg.n_items, cfg.n_genres

    # Items (0-based here, internal id = index + 1).
    main = rng.integers(0, g, size=n)
    second = np.where(rng.random(n) < cfg.p_second_genre, rng.integers(0, g, size=n), main)
    era = rng.integers(0, len(ERAS), size=n)
    popularity = (1.0 + rng.permutation(n)) ** -cfg.popularity_exponent
    base_titles = _titles(n, rng)

    # Series: consecutive items of the same main genre; sequel[i] = next item or -1.
    sequel = np.full(n, -1)
    titles = list(base_titles)
    for genre in range(g):
        members = np.flatnonzero(main == genre)
        for start in range(0, len(members), cfg.series_len):
            chain = members[start:start + cfg.series_len]
            sequel[chain[:-1]] = chain[1:]
            for k, item in enumerate(chain[1:], start=1):  # sequels share the first title and era
                titles[item] = f"{base_titles[chain[0]]}: Part {k + 1}"
                era[item] = era[chain[0]]

    # Users, simulated in lockstep (vectorised over users). Users are processed longest first so
    # that the still-active users at step t are a prefix [:m]; a final permutation mixes them.
    u = cfg.n_users
    extra = rng.geometric(1.0 / (cfg.mean_len - cfg.min_len + 1.0), size=u) - 1
    lengths = -np.sort(-np.minimum(cfg.min_len + extra, cfg.max_len))
    alpha = np.full(g, cfg.interest_concentration)
    theta = rng.dirichlet(alpha, size=u)
    consumed = np.zeros((u, n), dtype=bool)
    seqs = np.zeros((u, cfg.max_len), dtype=np.int64)
    last = np.full(u, -1)
    pop_term = popularity ** cfg.popularity_weight
    for t in range(int(lengths[0])):
        m = int((lengths > t).sum())
        rows = np.arange(m)
        # theta . genres_i by indexing (items have <= 2 genres of weight 1/2): bit-identical to the
        # matrix product and free of BLAS threads, which thrash on a busy machine
        affinity = (theta[:m, main] + theta[:m, second]) * 0.5
        weights = pop_term * affinity ** cfg.interest_sharpness + 1e-12
        weights[consumed[:m]] = 0.0
        cum = np.cumsum(weights, axis=1)
        pick = np.minimum((cum < rng.random((m, 1)) * cum[:, -1:]).sum(axis=1), n - 1)
        nxt = np.where(last[:m] >= 0, sequel[np.maximum(last[:m], 0)], -1)
        follow = (nxt >= 0) & (rng.random(m) < cfg.p_sequel)
        follow &= ~consumed[rows, np.maximum(nxt, 0)]
        pick = np.where(follow, nxt, pick)
        seqs[:m, t] = pick + 1
        consumed[rows, pick] = True
        last[:m] = pick
        theta[:m] = (1 - cfg.drift) * theta[:m] + cfg.drift * rng.dirichlet(alpha, size=m)
    order = rng.permutation(u)
    seqs, lengths = seqs[order], lengths[order]

    attributes = [()] + [
        tuple(dict.fromkeys((GENRES[main[i]], GENRES[second[i]]))) + (ERAS[era[i]],) for i in range(n)
    ]
    return InteractionDataset(
        name="synthetic",
        n_items=n,
        user_ids=[f"u{i}" for i in range(u)],
        item_ids=[PAD_TOKEN] + [f"i{i + 1}" for i in range(n)],
        sequences=[seqs[i, : lengths[i]].copy() for i in range(u)],
        item_titles=[""] + titles,
        item_attributes=attributes,
        meta={"generator": "make_synthetic", "seed": seed, "config": asdict(cfg)},
    )
