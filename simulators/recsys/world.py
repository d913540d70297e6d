"""A recommendation world = dataset + leave-one-out split + trained SASRec (the TRM / user model).

``default_world()`` is the offline default: the synthetic world of ``SyntheticConfig()`` with seed
0 and the small pretrained SASRec shipped in ``weights/synthetic_default.pt`` (float16, < 1 MiB),
so environments start in well under 2 s. The weights record the generator config, the seed and a
hash of the generated sequences they were trained on; a mismatch raises instead of silently pairing
a model with another world. Regenerate them after changing the synthetic generator with

    .venv/bin/python -m simulators.recsys.world --regenerate

For real data, ``load_world(data_path, checkpoint)`` pairs a dataset with a checkpoint trained on it
(e.g. by ``recrail sasrec train``).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from .dataset import InteractionDataset
from .loaders import load_dataset
from .sasrec import SASRec, SASRecConfig, TrainConfig, load_checkpoint, save_checkpoint, train_sasrec
from .split import LeaveOneOutSplit, leave_one_out
from .synthetic import SyntheticConfig, make_synthetic

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "synthetic_default.pt"
DEFAULT_WEIGHTS_VERSION = 1
DEFAULT_SEED = 0
# the shipped model: the usual SASRec shape, lighter dropout for the small dense synthetic world
DEFAULT_SASREC = {"hidden": 64, "n_layers": 2, "n_heads": 2, "inner": 128, "max_len": 50,
                  "dropout": 0.2, "attn_dropout": 0.2}
DEFAULT_TRAIN = TrainConfig(epochs=60, patience=5, seed=0)


@dataclass
class RecWorld:
    """Everything an environment needs: the data, its split and the trained sequence model."""

    dataset: InteractionDataset
    split: LeaveOneOutSplit
    sasrec: SASRec

    def __post_init__(self) -> None:
        if self.sasrec.config.n_items != self.dataset.n_items:
            raise ValueError(
                f"checkpoint has {self.sasrec.config.n_items} items but dataset {self.dataset.name!r} "
                f"has {self.dataset.n_items}; the checkpoint was trained on another dataset"
            )
        self.sasrec.eval()

    @property
    def n_items(self) -> int:
        """Number of real items (ids 1..n_items)."""
        return self.dataset.n_items

    @property
    def max_len(self) -> int:
        """The model's input length."""
        return self.sasrec.config.max_len


def _default_fingerprint(dataset: InteractionDataset) -> dict:
    """What the shipped weights must match: versions, generator config, seed and the data itself."""
    digest = hashlib.sha256(b"".join(s.astype("<i8").tobytes() + b"|" for s in dataset.sequences)).hexdigest()
    return {"weights_version": DEFAULT_WEIGHTS_VERSION, "seed": DEFAULT_SEED, "synthetic": asdict(SyntheticConfig()),
            "data_sha256": digest[:16]}


def default_world(weights: str | Path = DEFAULT_WEIGHTS) -> RecWorld:
    """The synthetic default world with the shipped pretrained SASRec (fast; no training).

    The dataset and split are generated once per process and shared by every world returned
    (treat them as read-only); each call loads its own copy of the model.
    """
    model = load_checkpoint(weights)
    dataset, split = _default_data()
    expected = _default_fingerprint(dataset)
    got = {k: model.meta.get(k) for k in expected}
    if got != expected:
        raise ValueError(
            f"{weights} was trained for another synthetic world ({got}); expected {expected}. "
            "Regenerate with: python -m simulators.recsys.world --regenerate"
        )
    return RecWorld(dataset, split, model)


@functools.cache
def _default_data() -> tuple[InteractionDataset, LeaveOneOutSplit]:
    """The default synthetic data, generated once per process (read-only; shared between worlds)."""
    dataset = make_synthetic(SyntheticConfig(), seed=DEFAULT_SEED)
    return dataset, leave_one_out(dataset)


def load_world(data_path: str | Path, checkpoint: str | Path, format: str = "auto", **options) -> RecWorld:
    """A world from a dataset (see :func:`loaders.load_dataset` for ``format``/``options``) and a
    SASRec checkpoint trained on the same dataset with the same options."""
    dataset = load_dataset(data_path, format, **options)
    return RecWorld(dataset, leave_one_out(dataset), load_checkpoint(checkpoint))


def regenerate_default_weights(path: str | Path = DEFAULT_WEIGHTS, progress: bool = True) -> SASRec:
    """Train SASRec on the default synthetic world and write the shipped float16 weights."""
    dataset = make_synthetic(SyntheticConfig(), seed=DEFAULT_SEED)
    model = train_sasrec(dataset, SASRecConfig(n_items=dataset.n_items, **DEFAULT_SASREC),
                         TrainConfig(**dict(asdict(DEFAULT_TRAIN), progress=progress)))
    meta = dict(_default_fingerprint(dataset), valid=model.meta["valid"], test=model.meta["test"],
                best_epoch=model.meta["best_epoch"], dataset=dataset.name)
    save_checkpoint(model, path, meta, half=True)
    return model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Manage the shipped default-world SASRec weights.")
    parser.add_argument("--regenerate", action="store_true", help=f"retrain and overwrite {DEFAULT_WEIGHTS.name}")
    args = parser.parse_args()
    if args.regenerate:
        trained = regenerate_default_weights()
        print(f"wrote {DEFAULT_WEIGHTS} ({DEFAULT_WEIGHTS.stat().st_size / 1024:.0f} KiB); test {trained.meta['test']}")
    else:
        parser.print_help()
