"""Turn what a user names on the command line into a :class:`agents.policy.Policy`.

``spec`` is a baseline name of the environment, a path to an SB3 ``.zip``, or an RLlib checkpoint
folder (the run folder ``recrail train --backend rllib`` wrote, or the checkpoint inside it).
"""

from __future__ import annotations

from pathlib import Path

from agents.baselines import baseline_names, make_baseline
from agents.policy import Policy


def load_policy(spec: str, env_id: str) -> Policy:
    """Resolve ``spec`` for ``env_id``; raise ``ValueError`` naming what was expected otherwise."""
    if spec in baseline_names(env_id):
        return make_baseline(env_id, spec)
    path = Path(spec)
    if path.suffix == ".zip":
        from agents.train_sb3 import load_sb3_policy

        policy = load_sb3_policy(path)
    elif path.is_dir():
        from agents.train_rllib import load_rllib_policy

        policy = load_rllib_policy(path)
    else:
        known = ", ".join(baseline_names(env_id)) or "none"
        raise ValueError(
            f"policy {spec!r} is neither a baseline of {env_id} ({known}), an SB3 .zip file, "
            "nor an RLlib checkpoint folder"
        )
    policy.name = path.stem if path.suffix == ".zip" else path.name
    return policy
