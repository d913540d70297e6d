"""The LARES benchmark's checkpoint builder: what it trains from a recipe, what it leaves alone, bad recipes."""

from __future__ import annotations

import dataclasses

import pytest

from agents.lares_post_training import RPTConfig, SPTConfig
from benchmarks.lares_checkpoints import RECIPES, Checkpoints, Recipe, build_checkpoints
from simulators.recsys.lares import load_lares
from simulators.recsys.sasrec import TrainConfig, load_checkpoint
from simulators.recsys.split import leave_one_out
from simulators.recsys.synthetic import SyntheticConfig, make_synthetic

TINY = Recipe(sasrec_arch={"hidden": 16, "n_heads": 2, "inner": 32, "dropout": 0.5, "attn_dropout": 0.5},
              sasrec_train={"epochs": 1, "batch_size": 32},
              lares={"hidden": 16, "n_heads": 2, "ffn": 32, "alpha_tla": 0.0},
              spt=SPTConfig(epochs=1, batch_size=32, windows="prefix", eval_users=None),
              control=TrainConfig(instances="prefix", epochs=1, batch_size=32),
              rpt=RPTConfig(epochs=1, batch_size=16, eval_users=None, filter_top=30, max_instances=32),
              max_len=8, control_dropout=0.1)


@pytest.fixture(scope="module")
def split():
    return leave_one_out(make_synthetic(SyntheticConfig(n_users=40, n_items=30, mean_len=8, max_len=12), seed=2))


def test_builds_all_four_from_the_recipe_then_only_what_is_missing(split, tmp_path):
    paths = build_checkpoints("tiny", split, tmp_path, TINY, progress=False)
    assert paths == Checkpoints.under(tmp_path, "tiny")
    sasrec, control = load_checkpoint(paths.sasrec), load_checkpoint(paths.control)
    assert (sasrec.config.hidden, sasrec.config.max_len, sasrec.config.dropout) == (16, 8, 0.5)
    # the control is the SASRec architecture with the recipe's dropout, fine-tuned on prefix instances
    assert control.config == dataclasses.replace(sasrec.config, dropout=0.1, attn_dropout=0.1)
    assert control.meta["train_config"]["instances"] == "prefix"
    spt, rpt = load_lares(paths.spt), load_lares(paths.rpt)
    assert (spt.config.alpha_tla, spt.meta["phase"], rpt.meta["phase"]) == (0.0, "spt", "rpt")
    assert spt.meta["history"][0]["epoch"] == -1  # the warm start from the SASRec was evaluated
    stamps = {p: p.stat().st_mtime_ns for p in (paths.sasrec, paths.spt, paths.rpt)}
    paths.control.unlink()
    build_checkpoints("tiny", split, tmp_path, TINY, progress=False)
    assert paths.control.is_file()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the existing files were used as they are


def test_spt_only_builds_the_spt_model_and_its_sasrec_and_nothing_else(split, tmp_path):
    paths = build_checkpoints("tiny", split, tmp_path, TINY, progress=False, spt_only=True)
    assert paths.sasrec.is_file() and paths.spt.is_file()
    assert not paths.control.exists() and not paths.rpt.exists()


@pytest.mark.parametrize("change, message", [
    ({"control": TrainConfig(instances="windows")}, "instances = 'windows'"),
    ({"spt": SPTConfig(out="x.pt")}, "init_from and .out must be None"),
    ({"control_dropout": 1.0}, "control_dropout = 1.0"),
    ({"lares": {"dropout": 2.0}}, "dropout"),
])
def test_a_bad_recipe_names_the_bad_value(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **change)


def test_an_unknown_dataset_names_the_known_recipes(split, tmp_path):
    with pytest.raises(KeyError, match="known: \\['beauty', 'ml-100k'\\]"):
        build_checkpoints("ml-1m", split, tmp_path)
    assert set(RECIPES) == {"beauty", "ml-100k"}


def test_the_measured_spt_recipes_stop_on_epochs_not_on_the_clock():
    # a wall-clock budget rebuilt ML-100K's 3-epoch SPT as a 7-epoch one on a faster box
    assert {key: (r.spt.epochs, r.spt.time_budget_s) for key, r in RECIPES.items()} == {
        "ml-100k": (15, None), "beauty": (10, None)}
    # Beauty's SPT and its control both get the low-lr phase (a fair control); ML-100K's neither
    assert {key: (r.spt.anneal_epochs, r.spt.anneal_lr, r.control.anneal_epochs, r.control.anneal_lr)
            for key, r in RECIPES.items()} == {"ml-100k": (0, None, 0, None), "beauty": (2, 1e-4, 2, 1e-4)}
