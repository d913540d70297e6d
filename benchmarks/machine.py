"""What a speed result was measured on: versions, CPUs, load, commit (speed numbers mean little without it)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch


def machine_info() -> dict:
    """Python and torch versions, CPU count, the 1-minute load average now, the repo's commit (``None`` outside git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "load_average_1min_at_start": os.getloadavg()[0], "commit": commit}
