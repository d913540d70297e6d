"""Best-epoch bookkeeping shared by the trainers (SASRec's ``train_sasrec``, LARES's ``train_spt`` and ``train_rpt``).

All three keep the weights that validate best (NDCG@10); SASRec and SPT, with ``anneal_epochs`` > 0, then run a
low-lr phase that restarts from that epoch (weights and Adam(W) moments) at ``anneal_lr``.
"""

from __future__ import annotations

import copy
import math

import torch


def check_anneal_phase(owner: str, epochs: int, lr: float | None) -> None:
    """Validate a config's low-lr phase: ``anneal_epochs`` >= 0, ``anneal_lr`` > 0 exactly when it is > 0."""
    if epochs < 0:
        raise ValueError(f"{owner}.anneal_epochs = {epochs!r} is invalid; allowed: an int >= 0")
    if (epochs > 0) != (lr is not None) or (lr is not None and not (math.isfinite(lr) and lr > 0)):
        raise ValueError(f"{owner}.anneal_lr = {lr!r} with anneal_epochs = {epochs!r}; allowed: a float > 0 when "
                         "anneal_epochs > 0, None when it is 0")


def restart_at_lr(model: torch.nn.Module, opt: torch.optim.Optimizer, weights: dict, opt_state: dict,
                  lr: float) -> None:
    """Put a model and its optimizer back to a saved epoch (weights and moments) and set the learning rate:
    the start of a low-lr phase (``anneal_epochs``) in SASRec's and LARES-SPT's training loops."""
    model.load_state_dict(weights)
    opt.load_state_dict(opt_state)  # this also restores the saved lr, replaced below
    for group in opt.param_groups:
        group["lr"] = lr


def snapshot(model: torch.nn.Module, opt: torch.optim.Optimizer | None = None) -> tuple[dict, dict | None]:
    """Copies of the weights and, given ``opt`` (for a later low-lr phase), of its state: the best epoch so
    far in the trainers' loops."""
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return weights, None if opt is None else copy.deepcopy(opt.state_dict())
