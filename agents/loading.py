"""Turn what a user names on the command line into a :class:`agents.policy.Policy`.

``spec`` is a baseline name of the environment, a path to an SB3 ``.zip``, or an RLlib checkpoint
folder (the run folder ``recrail train --backend rllib`` wrote, or the checkpoint inside it).
"""

from __future__ import annotations

import json
from pathlib import Path

from agents.baselines import baseline_names, make_baseline
from agents.policy import METADATA_FILE, SB3_MODEL_FILE, Policy
from envs import entry_for


RUN_FILE_NAMES = ("model", "checkpoint")  # what `recrail train` writes in every run folder


def load_policy(spec: str, env_id: str) -> Policy:
    """Resolve ``spec`` for ``env_id``; raise ``ValueError`` naming what was expected otherwise, also
    when the agent's saved metadata says it was trained on another environment. A trained agent is
    named after its file, or after its run folder when the file has ``recrail train``'s fixed name."""
    if spec in baseline_names(env_id):
        return make_baseline(env_id, spec)
    path = Path(spec)
    if path.is_dir() and (path / SB3_MODEL_FILE).is_file():  # an SB3 run folder stands for its model
        path = path / SB3_MODEL_FILE
    if path.suffix == ".zip":
        from agents.train_sb3 import load_sb3_policy

        _check_trained_on(path, (path.parent,), env_id)
        policy = load_sb3_policy(path)
    elif path.is_dir():
        from agents.train_rllib import load_rllib_policy

        _check_trained_on(path, (path, path.parent), env_id)
        policy = load_rllib_policy(path)
    else:
        known = ", ".join(baseline_names(env_id)) or "none"
        raise ValueError(
            f"policy {spec!r} is neither a baseline of {env_id} ({known}), an SB3 .zip file, "
            "nor an RLlib checkpoint folder"
        )
    name = path.stem if path.suffix == ".zip" else path.name
    policy.name = path.resolve().parent.name if name in RUN_FILE_NAMES else name
    return policy


def _check_trained_on(path: Path, folders: tuple[Path, ...], env_id: str) -> None:
    """Raise when the first metadata file in ``folders`` names another environment than ``env_id``."""
    meta = next((f / METADATA_FILE for f in folders if (f / METADATA_FILE).is_file()), None)
    if meta is None:
        return
    trained = json.loads(meta.read_text()).get("env_id")
    if trained is not None and entry_for(trained).env_id != entry_for(env_id).env_id:
        raise ValueError(f"policy {str(path)!r} was trained on {trained} ({meta}), not on {env_id}")
