"""Synthetic generator, the shipped default world, load_world, and the user response model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from simulators.recsys.sasrec import save_checkpoint
from simulators.recsys.synthetic import SyntheticConfig, make_synthetic
from simulators.recsys.user_model import UserModelConfig, UserResponseModel
from simulators.recsys.world import DEFAULT_WEIGHTS, RecWorld, default_world, load_world

SMALL = SyntheticConfig(n_users=60, n_items=50, max_len=20, mean_len=10.0)


@pytest.fixture(scope="module")
def world() -> RecWorld:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is faster
    yield default_world()
    torch.set_num_threads(before)


def test_synthetic_is_deterministic_and_readable() -> None:
    a, b, c = make_synthetic(SMALL, seed=3), make_synthetic(SMALL, seed=3), make_synthetic(SMALL, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))
    assert not all(np.array_equal(x, y) for x, y in zip(a.sequences, c.sequences))
    assert a.n_users == 60 and a.n_items == 50
    assert all(len(set(s.tolist())) == len(s) and SMALL.min_len <= len(s) <= SMALL.max_len for s in a.sequences)
    assert len(set(a.item_titles[1:])) == 50 and all(t.startswith("The ") for t in a.item_titles[1:])
    assert all(1 <= len(attrs) <= 3 and attrs[-1].startswith("era:") for attrs in a.item_attributes[1:])
    counts = make_synthetic(seed=0).item_counts()[1:]
    assert np.sort(counts)[-10:].sum() > 5 * np.sort(counts)[:10].sum()  # power-law popularity


def test_synthetic_config_validation() -> None:
    with pytest.raises(ValueError, match="SyntheticConfig.drift = 2"):
        SyntheticConfig(drift=2)
    with pytest.raises(ValueError, match="max_len"):
        SyntheticConfig(n_items=10, max_len=20, mean_len=10.0)
    with pytest.raises(ValueError, match="SyntheticConfig.n_users = 10.5 is invalid; allowed: an integer"):
        SyntheticConfig(n_users=10.5)
    with pytest.raises(ValueError, match="SyntheticConfig.interest_sharpness = inf is invalid"):
        SyntheticConfig(interest_sharpness=float("inf"))


def test_synthetic_titles_stay_distinct_beyond_the_named_ones() -> None:
    from simulators.recsys.synthetic import _titles

    titles = _titles(8000, np.random.default_rng(0))  # 900 pairs x 8 numerals name 7,200
    assert len(set(titles)) == 8000
    assert titles[:7200] == _titles(7200, np.random.default_rng(0))  # smaller worlds keep their titles


def test_the_synthetic_world_is_not_filtered_like_a_file() -> None:
    from simulators.recsys.loaders import load_dataset

    with pytest.raises(ValueError, match=r"options \['k_core', 'max_seq_len'\] apply to dataset files"):
        load_dataset("synthetic", k_core=50, max_seq_len=5)


def test_default_world_loads_and_scores(world: RecWorld) -> None:
    assert DEFAULT_WEIGHTS.stat().st_size < 1024 * 1024
    assert world.n_items == SyntheticConfig().n_items and world.dataset.n_users == SyntheticConfig().n_users
    users = world.split.users("test")[:64]
    x, y = world.split.batch("test", users, world.max_len)
    scores = world.sasrec.score(x)
    assert scores.shape == (64, world.n_items + 1) and torch.isfinite(scores[:, 1:]).all()
    # the shipped model beats popularity on its own world (the sequel signal is learnable)
    assert world.sasrec.meta["test"]["NDCG@10"] > 0.2


def test_default_world_rejects_foreign_weights(tmp_path: Path, world: RecWorld) -> None:
    save_checkpoint(world.sasrec, tmp_path / "w.pt", dict(world.sasrec.meta, seed=99))
    with pytest.raises(ValueError, match="another synthetic world"):
        default_world(tmp_path / "w.pt")


def test_load_world_checks_item_count(tmp_path: Path, world: RecWorld) -> None:
    data = tmp_path / "Toy.txt"
    data.write_text("1 1 2 3\n2 2 3 4\n")
    save_checkpoint(world.sasrec, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="trained on another dataset"):
        load_world(data, tmp_path / "w.pt")


def test_user_model_probabilities(world: RecWorld) -> None:
    users = world.split.users("test")[:32]
    x, _ = world.split.batch("test", users, world.max_len)
    slates = torch.stack([torch.randperm(world.n_items, generator=torch.Generator().manual_seed(i))[:5] + 1
                          for i in range(32)])
    model = UserResponseModel(world)
    probs = model.choice_probs(x, slates)
    assert probs.shape == (32, 6) and torch.allclose(probs.sum(1), torch.ones(32))
    assert (probs >= 0).all()
    # neutral choice model: consuming a slate item = the logged-data model picking it anyway
    neutral = UserResponseModel(world, UserModelConfig(exposure_boost=1.0, position_decay=0.0))
    p = neutral.next_item_probs(x)
    assert torch.allclose(neutral.consume_probs(x, slates), p.gather(1, slates), atol=1e-6)
    assert (p.gather(1, x) == 0).all()  # history items are not consumed again
    # position bias: the same items shown in reverse order lose attraction at the back
    flipped = model.consume_probs(x, slates.flip(1)).flip(1)
    assert (model.consume_probs(x, slates)[:, 0] >= flipped[:, 0] - 1e-7).all()
    picks = model.sample(x, slates, torch.Generator().manual_seed(0))
    assert ((picks >= -1) & (picks < 5)).all()


def test_user_model_rejects_bad_slates(world: RecWorld) -> None:
    x, _ = world.split.batch("test", world.split.users("test")[:2], world.max_len)
    model = UserResponseModel(world)
    with pytest.raises(ValueError, match="same item twice"):
        model.consume_probs(x, torch.tensor([[1, 2, 1], [3, 4, 5]]))
    with pytest.raises(ValueError, match="slate item ids"):
        model.consume_probs(x, torch.tensor([[1, 2, 999], [3, 4, 5]]))
    with pytest.raises(ValueError, match="exposure_boost"):
        replace(UserModelConfig(), exposure_boost=0.5)
    with pytest.raises(ValueError, match="UserModelConfig.temperature = nan is invalid"):
        UserModelConfig(temperature=float("nan"))
    with pytest.raises(ValueError, match="exclude_history = 'no' is invalid; allowed: True or False"):
        UserModelConfig(exclude_history="no")
    with pytest.raises(ValueError, match="of item ids, got dtype torch.float32"):  # 1.7 would become item 1
        model.consume_probs(x, torch.tensor([[1.7, 2.2, 3.9], [3.0, 4.0, 5.0]]))
