"""SASRec: causality, padding invariance, learning a predictable pattern, checkpoints, CLI."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.sasrec_cli import add_sasrec_parser
from simulators.recsys.dataset import InteractionDataset
from simulators.recsys.sasrec import (
    SASRec,
    SASRecConfig,
    TrainConfig,
    evaluate_sasrec,
    load_checkpoint,
    save_checkpoint,
    train_sasrec,
)
from simulators.recsys.split import leave_one_out

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a shared 2-core machine, two spinning threads are many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMALL = {"hidden": 32, "n_layers": 1, "n_heads": 2, "inner": 64, "max_len": 8, "dropout": 0.0, "attn_dropout": 0.0}


def _cyclic(n_items: int = 20, n_users: int = 120, length: int = 10, seed: int = 0,
            jump: float = 0.0) -> InteractionDataset:
    """Every user walks i -> i+1 (mod n) from a random start: the next item is fully predictable, unless
    ``jump`` > 0: then each step goes to a uniformly random item with that probability instead."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, size=n_users)
    seqs = [(s + np.arange(length)) % n_items + 1 for s in starts]
    if jump > 0:
        seqs = []
        for start in starts:
            walk = [int(start)]
            for _ in range(length - 1):
                walk.append(int(rng.integers(0, n_items)) if rng.random() < jump else (walk[-1] + 1) % n_items)
            seqs.append(np.array(walk) + 1)
    return InteractionDataset("cyclic", n_items, [str(u) for u in range(n_users)],
                              ["<pad>"] + [str(i) for i in range(1, n_items + 1)], seqs,
                              [""] * (n_items + 1), [()] * (n_items + 1))


def test_encode_is_causal_and_ignores_left_padding() -> None:
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=30, **SMALL)).eval()
    x = torch.tensor([[0, 0, 3, 5, 7, 9]])
    y = x.clone()
    y[0, -1] = 11  # change the future: earlier states must not move
    assert torch.allclose(model.encode(x)[0, :-1], model.encode(y)[0, :-1], atol=1e-6)
    assert not torch.allclose(model.encode(x)[0, -1], model.encode(y)[0, -1])
    short = torch.tensor([[3, 5, 7, 9]])
    assert torch.allclose(model.last_hidden(x), model.last_hidden(short), atol=1e-5)
    scores = model.score(x)
    assert scores.shape == (1, 31) and scores[0, 0] == float("-inf")
    assert torch.allclose(model.next_item_probs(x).sum(), torch.tensor(1.0))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="divisible by n_heads"):
        SASRecConfig(n_items=5, hidden=30, n_heads=4)
    with pytest.raises(ValueError, match="dropout"):
        SASRecConfig(n_items=5, dropout=1.0)
    with pytest.raises(ValueError, match="max_minutes"):
        TrainConfig(max_minutes=0)
    with pytest.raises(ValueError, match="TrainConfig.lr = nan is invalid; allowed: a finite number"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(ValueError, match="TrainConfig.epochs = 2.5 is invalid; allowed: an integer"):
        TrainConfig(epochs=2.5)
    with pytest.raises(ValueError, match="TrainConfig.seed = -1 is invalid"):
        TrainConfig(seed=-1)
    with pytest.raises(ValueError, match="SASRecConfig.hidden = 64.0 is invalid; allowed: an integer"):
        SASRecConfig(n_items=5, hidden=64.0)


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path: Path) -> None:
    (tmp_path / "log.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="log.json is not a recrail SASRec checkpoint"):
        load_checkpoint(tmp_path / "log.json")


def test_learns_cyclic_pattern_and_checkpoint_round_trip(tmp_path: Path) -> None:
    data = _cyclic()
    split = leave_one_out(data)
    config = SASRecConfig(n_items=20, **SMALL)
    torch.manual_seed(0)
    assert evaluate_sasrec(SASRec(config), split)["Recall@5"] < 0.6  # untrained: about 5/17
    model = train_sasrec(split, config, TrainConfig(epochs=8, batch_size=32, lr=5e-3, patience=8, progress=False),
                         out_dir=tmp_path)
    assert model.meta["test"]["Recall@5"] > 0.95
    log = json.loads((tmp_path / "log.json").read_text())
    assert log[0]["loss"] > log[-1]["loss"]
    loaded = load_checkpoint(tmp_path / "best.pt")
    x, _ = split.batch("test", split.users("test")[:5], 8)
    assert torch.allclose(loaded.score(x), model.score(x))
    assert evaluate_sasrec(loaded, split) == pytest.approx(model.meta["test"])
    save_checkpoint(model, tmp_path / "half.pt", half=True)
    assert (tmp_path / "half.pt").stat().st_size < (tmp_path / "best.pt").stat().st_size
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")


def test_prefix_instances_and_warm_start(tmp_path) -> None:
    split = leave_one_out(_cyclic())
    config = SASRecConfig(n_items=20, **SMALL)
    torch.manual_seed(0)
    model = train_sasrec(split, config, TrainConfig(epochs=8, batch_size=32, lr=5e-3, patience=8, progress=False,
                                                    instances="prefix"))
    assert model.meta["test"]["Recall@5"] > 0.95
    # a warm start at a vanishing learning rate keeps the weights it started from
    again = train_sasrec(split, config, TrainConfig(epochs=1, lr=1e-12, progress=False), init=model)
    assert again.meta["test"] == pytest.approx(model.meta["test"])
    # the init is a candidate: a fine-tune whose epochs all validate below it returns the init's weights
    ruined = train_sasrec(split, config, TrainConfig(epochs=2, lr=5.0, patience=2, progress=False), init=model,
                          out_dir=tmp_path / "ruined")
    init_ndcg = model.meta["valid"]["NDCG@10"]
    assert ruined.meta["init_valid_ndcg10"] == pytest.approx(init_ndcg)
    assert max(h["valid_NDCG@10"] for h in ruined.meta["history"]) < init_ndcg - 0.1  # the case under test
    assert ruined.meta["best_epoch"] == 0
    assert all(torch.equal(a, b) for a, b in zip(ruined.state_dict().values(), model.state_dict().values()))
    # the output folder (which no improving epoch created) holds every epoch's log and the returned model
    saved = load_checkpoint(tmp_path / "ruined" / "best.pt")
    assert saved.meta["best_epoch"] == 0
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), model.state_dict().values()))
    assert len(json.loads((tmp_path / "ruined" / "log.json").read_text())) == 2
    with pytest.raises(ValueError, match="init has architecture"):
        train_sasrec(split, SASRecConfig(n_items=20, **{**SMALL, "hidden": 16}), TrainConfig(epochs=1), init=model)
    with pytest.raises(ValueError, match="instances"):
        TrainConfig(instances="all")


def test_anneal_phase_continues_from_the_best_epoch() -> None:
    """The low-lr phase starts from the best epoch's weights, not the last epoch's: at a vanishing lr its epochs
    validate exactly as the best one did, and the returned model is the run without the phase."""
    split = leave_one_out(_cyclic(jump=0.3))
    config = SASRecConfig(n_items=20, **SMALL)
    main = TrainConfig(epochs=8, batch_size=32, lr=5e-2, patience=2, progress=False)
    torch.manual_seed(0)
    alone = train_sasrec(split, config, main)
    torch.manual_seed(0)
    model = train_sasrec(split, config, replace(main, anneal_epochs=2, anneal_lr=1e-12))
    history, n = model.meta["history"], alone.meta["epochs_run"]
    assert [h["epoch"] for h in history] == list(range(1, n + 3))
    best = max(h["valid_NDCG@10"] for h in history[:n])
    assert history[n - 1]["valid_NDCG@10"] < best  # the main phase ended below its best: the case under test
    assert [h["valid_NDCG@10"] for h in history[n:]] == pytest.approx([best, best], abs=1e-6)
    assert model.meta["test"] == pytest.approx(alone.meta["test"])
    assert model.meta["train_config"]["anneal_lr"] == 1e-12
    for epochs, lr in ((-1, None), (2, None), (0, 1e-4), (2, 0.0)):
        with pytest.raises(ValueError, match="TrainConfig.anneal_"):
            TrainConfig(anneal_epochs=epochs, anneal_lr=lr)


def test_cli_train_then_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "Cyc.txt"
    ds = _cyclic(n_users=40)
    data.write_text("".join(f"{u} {' '.join(map(str, s.tolist()))}\n" for u, s in zip(ds.user_ids, ds.sequences)))
    parser = argparse.ArgumentParser(prog="recrail")
    add_sasrec_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sasrec", "train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "2",
                              "--max-len", "8", "--hidden", "16", "--layers", "1", "--no-progress",
                              "--anneal-epochs", "1", "--anneal-lr", "1e-4"])
    assert args.func(args) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and 0 <= metrics["test"]["NDCG@10"] <= 1
    assert metrics["init_valid_ndcg10"] is None
    args = parser.parse_args(["sasrec", "train", "--data", str(data), "--out", str(tmp_path / "tuned"), "--epochs", "1",
                              "--max-len", "8", "--hidden", "16", "--layers", "1", "--no-progress",
                              "--init-from", str(tmp_path / "run" / "best.pt")])
    assert args.func(args) == 0
    tuned = json.loads((tmp_path / "tuned" / "metrics.json").read_text())
    assert tuned["init_valid_ndcg10"] == pytest.approx(metrics["valid"]["NDCG@10"])
    args = parser.parse_args(["sasrec", "evaluate", "--data", str(data), "--checkpoint", str(tmp_path / "run" / "best.pt")])
    assert args.func(args) == 0
    assert '"NDCG@10"' in capsys.readouterr().out
