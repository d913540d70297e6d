"""``recrail sasrec``: train and evaluate the SASRec sequential recommender on any supported dataset.

    recrail sasrec train --data ../shared/data/amazon-beauty --out runs/sasrec-beauty --epochs 200
    recrail sasrec evaluate --data ../shared/data/amazon-beauty --checkpoint runs/sasrec-beauty/best.pt

``--data synthetic`` uses the embedded synthetic world. Training writes ``<out>/best.pt`` (best
validation NDCG@10), ``<out>/log.json`` (per epoch) and ``<out>/metrics.json`` (valid/test, speed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from simulators.recsys.loaders import FORMATS, load_dataset
from simulators.recsys.sasrec import SASRecConfig, TrainConfig, evaluate_sasrec, load_checkpoint, train_sasrec
from simulators.recsys.split import STAGES, leave_one_out


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset path, or 'synthetic'")
    p.add_argument("--format", default="auto", choices=FORMATS)
    p.add_argument("--k-core", type=int, default=None, help="drop users/items with fewer interactions")
    p.add_argument("--min-rating", type=float, default=None, help="keep ratings >= this (implicit feedback)")
    p.add_argument("--max-seq-len", type=int, default=None, help="keep each user's most recent items")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest on a busy machine)")


def _load(args: argparse.Namespace):
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    options = {k: v for k, v in (("k_core", args.k_core), ("min_rating", args.min_rating),
                                 ("max_seq_len", args.max_seq_len)) if v is not None}
    return load_dataset(None if args.data == "synthetic" else args.data, args.format, **options)


def _train(args: argparse.Namespace) -> int:
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder for best.pt, log.json and metrics.json")
    dataset = _load(args)
    config = SASRecConfig(n_items=dataset.n_items, hidden=args.hidden, n_layers=args.layers, n_heads=args.heads,
                          inner=args.inner, max_len=args.max_len, dropout=args.dropout, attn_dropout=args.attn_dropout)
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                        patience=args.patience, max_minutes=args.max_minutes, seed=args.seed,
                        progress=not args.no_progress, instances=args.instances, anneal_epochs=args.anneal_epochs,
                        anneal_lr=args.anneal_lr)
    print(f"{dataset.name}: {dataset.summary()}")
    init = load_checkpoint(args.init_from) if args.init_from else None
    model = train_sasrec(dataset, config, train, out_dir=args.out, init=init)
    summary = {k: model.meta[k] for k in ("dataset", "best_epoch", "init_valid_ndcg10", "epochs_run", "valid",
                                          "test", "epochs_per_second", "items_per_second")}
    (Path(args.out) / "metrics.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"checkpoint: {Path(args.out) / 'best.pt'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    dataset = _load(args)
    model = load_checkpoint(args.checkpoint)
    if model.config.n_items != dataset.n_items:
        raise SystemExit(f"error: {args.checkpoint} has {model.config.n_items} items, the dataset {dataset.n_items}; "
                         "use the same data and loader options as for training")
    metrics = evaluate_sasrec(model, leave_one_out(dataset), args.stage)
    print(json.dumps({"dataset": dataset.name, "stage": args.stage, **metrics}, indent=1))
    return 0


def add_sasrec_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``sasrec train`` / ``sasrec evaluate``; each leaf sets ``func(args) -> int``."""
    parser = subparsers.add_parser("sasrec", help="train/evaluate the SASRec sequential recommender",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="sasrec_command", required=True)
    d = SASRecConfig(n_items=1)
    t = TrainConfig()
    tr = sub.add_parser("train", help="train with early stopping on validation NDCG@10")
    _data_args(tr)
    tr.add_argument("--out", required=True, type=Path, help="output folder (best.pt, log.json, metrics.json)")
    tr.add_argument("--epochs", type=int, default=t.epochs)
    tr.add_argument("--max-len", type=int, default=d.max_len)
    tr.add_argument("--hidden", type=int, default=d.hidden)
    tr.add_argument("--layers", type=int, default=d.n_layers)
    tr.add_argument("--heads", type=int, default=d.n_heads)
    tr.add_argument("--inner", type=int, default=d.inner, help="feed-forward width")
    tr.add_argument("--dropout", type=float, default=d.dropout)
    tr.add_argument("--attn-dropout", type=float, default=d.attn_dropout)
    tr.add_argument("--batch-size", type=int, default=t.batch_size)
    tr.add_argument("--lr", type=float, default=t.lr)
    tr.add_argument("--weight-decay", type=float, default=t.weight_decay)
    tr.add_argument("--patience", type=int, default=t.patience, help="epochs without valid NDCG@10 gain")
    tr.add_argument("--max-minutes", type=float, default=None, help="wall-clock cap of training")
    tr.add_argument("--seed", type=int, default=t.seed)
    tr.add_argument("--instances", choices=("windows", "prefix"), default=t.instances,
                    help="one window per user (loss at every position) or every (prefix, next item) pair")
    tr.add_argument("--init-from", type=Path, default=None, help="SASRec checkpoint to start from (same architecture)")
    tr.add_argument("--anneal-epochs", type=int, default=t.anneal_epochs,
                    help="after early stopping, this many more epochs from the best one at --anneal-lr (0 = none)")
    tr.add_argument("--anneal-lr", type=float, default=t.anneal_lr, help="learning rate of the --anneal-epochs phase")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_train)
    ev = sub.add_parser("evaluate", help="full-ranking Recall/NDCG@{5,10,20} of a checkpoint")
    _data_args(ev)
    ev.add_argument("--checkpoint", required=True, type=Path)
    ev.add_argument("--stage", default="test", choices=STAGES[1:])
    ev.set_defaults(func=_evaluate)
    return parser
