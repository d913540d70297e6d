"""Halting results across bench runs (seeds): each halting row against fixed depth 4, and how many met the target.

The issue's target for a halting policy: NDCG@10 within the CI of fixed depth 4's or above it (the paired
difference's 95% CI reaches 0 or lies above it) at no more than 70% of depth 4's mean steps. For each
``bench_lares`` run (its ``lares.json``, or ``lares_env.json`` from an ``--env-only`` run) this prints one line
per run with its budget threshold's selection (``--budget-select``; runs before the option selected on NDCG@10)
and every halting row's difference [CI] (steps ratio), bold when met, the met count per row, and how far each
calibrated row's test NDCG@10 fell below its NDCG@10 on the users it was calibrated on (from the row's note,
``bench_lares.CALIBRATION_NOTE``): a large drop marks a policy fitted to those users. ``--recompute`` re-derives
the CIs from the runs' per-user tables with the current :mod:`benchmarks.stats`.

    python -m benchmarks.halting_seeds runs/nl_s0 runs/nl_s1 runs/nl_s2 --dataset ml-100k
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.bench_lares import BUDGET_STEPS, CALIBRATION_NOTE, DATASETS, PAIRS, RECORD_NAMES, recompute_record

ROWS = tuple(a for a, b in PAIRS if b == "fixed_depth_4")  # the halting rows the bench pairs with depth 4
MAX_STEPS_RATIO = round(BUDGET_STEPS / 4, 6)  # the issue's budget: 70% of fixed depth 4's steps
RECORDS = tuple(f"{RECORD_NAMES[rows]}.json" for rows in ("full", "env"))  # a full run's record, else --env-only's


def load_record(run_dir: Path, dataset: str) -> dict:
    """The ``dataset`` record of a bench run folder: its ``lares.json``, or ``lares_env.json`` if it has none."""
    path = next((p for p in (Path(run_dir) / name for name in RECORDS) if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{run_dir} has neither {' nor '.join(RECORDS)}: not a bench_lares --out folder")
    records = {r["dataset"]: r for r in json.loads(path.read_text())}
    if dataset not in records:
        raise ValueError(f"{path} has no {dataset!r} results; it has {sorted(records)}")
    return records[dataset]


def met(pair: dict) -> bool:
    """Within fixed depth 4's CI or above it, at no more than the budget's steps."""
    return pair["hi"] >= 0.0 and pair["steps_ratio"] <= MAX_STEPS_RATIO


def calibration_drop(row: dict) -> float | None:
    """Calibration-set NDCG@10 minus test NDCG@10 of a calibrated row (None for rows without a calibration)."""
    found = CALIBRATION_NOTE.search(row["note"])
    return None if found is None else float(found.group(2)) - row["NDCG@10"]


def table(records: dict[str, dict]) -> str:
    """Markdown: a line per run (keyed by its label), the met counts, the calibration drops."""
    present = [r for r in ROWS if any(p["a"] == r for rec in records.values() for p in rec["paired"])]
    lines = ["| run | seed | budget select | " + " | ".join(present) + " |", "|---|---|---|" + "---|" * len(present)]
    counts, drops = dict.fromkeys(present, 0), {r: [] for r in present}
    for label, rec in records.items():
        pairs = {p["a"]: p for p in rec["paired"] if p["b"] == "fixed_depth_4"}
        rows = {r["policy"]: r for r in rec["rows"]}
        cells = []
        for name in present:
            if name not in pairs:
                cells.append("")
                continue
            p = pairs[name]
            for digits in (2, 4, 6):  # 0.7006 or 0.70004 would print as the limit: show the digits that decide
                ratio = f"{p['steps_ratio']:.{digits}f}"
                if float(ratio) != MAX_STEPS_RATIO or p["steps_ratio"] == MAX_STEPS_RATIO:
                    break
            text = f"{p['NDCG@10_diff']:+.4f} [{p['lo']:+.4f}, {p['hi']:+.4f}] ({ratio})"
            cells.append(f"**{text}**" if met(p) else text)
            counts[name] += met(p)
            drop = calibration_drop(rows[name])
            if drop is not None:
                drops[name].append(f"{drop:.4f}")
        select = rec.get("budget_select", "ndcg")
        lines.append(f"| {label} | {rec.get('seed', 0)} | {select} | " + " | ".join(cells) + " |")
    lines.append("| met | | | " + " | ".join(f"{counts[r]} of {len(records)}" for r in present) + " |")
    lines.append("| calibration - test NDCG@10 | | | " + " | ".join(", ".join(drops[r]) for r in present) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="bench_lares --out folders")
    parser.add_argument("--dataset", choices=list(DATASETS), default="ml-100k")
    parser.add_argument("--recompute", action="store_true",
                        help="recompute the CIs from each run's per-user table with the current statistics "
                             "(runs recorded before a change of the CI method)")
    args = parser.parse_args()
    records = {run.name: load_record(run, args.dataset) for run in args.runs}
    if args.recompute:
        records = {run.name: recompute_record(records[run.name], run) for run in args.runs}
    print(table(records))
