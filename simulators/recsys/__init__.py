"""The recommendation world: datasets, leave-one-out split, full-ranking metrics, SASRec, user model.

Internal item ids are ``1..n_items``; 0 is padding everywhere. Modules:
``dataset`` (InteractionDataset), ``loaders`` (RecBole atomic, sequence text, MovieLens),
``synthetic`` (the offline default world), ``split`` (leave-one-out), ``metrics`` (full ranking
Recall/NDCG), ``sasrec`` (the sequential recommender), ``world`` (dataset + split + model bundles,
``default_world``), ``user_model`` (simulated user responses to a slate).
"""

from .dataset import PAD, InteractionDataset
from .loaders import DatasetFormatError, load_dataset
from .metrics import evaluate_full_ranking, ndcg_at_k, ranking_metrics, recall_at_k, target_ranks
from .split import LeaveOneOutSplit, leave_one_out
from .synthetic import SyntheticConfig, make_synthetic

__all__ = [
    "PAD",
    "DatasetFormatError",
    "InteractionDataset",
    "LeaveOneOutSplit",
    "SyntheticConfig",
    "evaluate_full_ranking",
    "leave_one_out",
    "load_dataset",
    "make_synthetic",
    "ndcg_at_k",
    "ranking_metrics",
    "recall_at_k",
    "target_ranks",
]
