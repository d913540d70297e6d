"""Where a benchmark's results go: its output folder and the committed copy in ``benchmarks/results/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(out_dir: Path | str, stem: str, results: Any, text: str) -> None:
    """``<out_dir>/<stem>.json`` and ``.md``, and the same two files in ``benchmarks/results/``."""
    for folder in (Path(out_dir), RESULTS):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.json").write_text(json.dumps(results, indent=2, default=float))  # numpy numbers too
        (folder / f"{stem}.md").write_text(text)
