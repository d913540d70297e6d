"""Reading the checkpoint files the recsys models write (SASRec, LARES, the preference TRM): a missing file or
one torch cannot read is named as such, instead of surfacing as an unpickling traceback."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch


def read_checkpoint(path: str | Path, kind: str) -> dict:
    """The dict a ``kind`` model saved at ``path`` (tensors on the CPU, weights only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        reason = (str(err).strip().splitlines() or ["unreadable"])[0]
        raise ValueError(f"{path} is not a recrail {kind} checkpoint (torch cannot read it: {reason})") from None
    if not isinstance(blob, dict):
        raise ValueError(f"{path} is not a recrail {kind} checkpoint (it holds a {type(blob).__name__})")
    return blob
