"""Shared test fixtures: where the optional real data lives, and a fast hypothesis profile."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# The models under test are small: one torch thread is faster than two on a shared 2-core machine,
# where two threads contend with any other process (measured 10-50x slower resets under load).
torch.set_num_threads(1)

settings.register_profile("recrail", max_examples=40, deadline=None)
settings.load_profile("recrail")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA
