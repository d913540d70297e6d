"""The README's Python snippets run as written."""

import re

import pytest

from tests.conftest import REPO_ROOT

SNIPPETS = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), flags=re.S)
# A snippet that reads ../shared/data is an illustration of real-data use; the rest must run.
RUNNABLE = [s for s in SNIPPETS if "../shared/data" not in s]


def test_readme_has_runnable_snippets():
    assert len(RUNNABLE) >= 5


@pytest.mark.parametrize("snippet", RUNNABLE, ids=[s.splitlines()[0][:40] for s in RUNNABLE])
def test_snippet_runs(snippet, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {"__name__": "readme"})


@pytest.fixture(autouse=True)
def _stop_ray():
    """The RLlib snippet starts Ray implicitly; later tests expect a fresh process state."""
    yield
    import sys

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
