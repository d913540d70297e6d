"""Paired comparison of two LARES bench runs: the same policies on the same test users, run A - run B.

Each ``bench_lares`` run writes every row's per-user metrics to ``<out>/<dataset>/per_user.csv.gz``
(NDCG@10 and Recall@10 averaged over the run's noise draws, mean steps). Two runs that differ in one
setting (an observation, a seed, a calibration) are compared per policy on the users both evaluated:
the mean of the per-user NDCG@10 differences with its 95% bootstrap CI
(``benchmarks.stats.paired_difference``), much tighter than two independent intervals, since most of the
spread is between users. Draws that differ between the runs (another ``--seed``) stay inside the
per-user values: the CI then covers that noise as well.

    python -m benchmarks.compare_runs runs/nl_s3 runs/sc_s3 --dataset ml-100k
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from benchmarks.bench_lares import DATASETS, PER_USER
from benchmarks.stats import paired_difference

COLUMNS = ("user", "policy", "NDCG@10", "Recall@10", "steps")


def load_per_user(run_dir: Path, dataset: str) -> pd.DataFrame:
    """One run's per-user table of ``dataset``, checked for the columns :func:`compare` reads."""
    path = Path(run_dir) / dataset / PER_USER
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a bench_lares --out folder with {dataset!r} results "
                                f"(runs before per-user tables were saved have none)")
    table = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; it has {list(table.columns)}")
    return table


def compare(a: pd.DataFrame, b: pd.DataFrame, policies: list[str] | None = None) -> pd.DataFrame:
    """Per policy in both tables (or ``policies``): users in both, NDCG@10 of A and B on them, A - B [95% CI],
    and the mean steps of each."""
    in_b = set(b["policy"])  # once: a comprehension's condition would rebuild it per policy
    common = [p for p in a["policy"].unique() if p in in_b]
    if policies is not None:
        unknown = [p for p in policies if p not in common]
        if unknown:
            raise ValueError(f"policies {unknown} are not in both runs; the common ones: {common}")
        common = policies
    for name, table in (("A", a), ("B", b)):
        repeated = table[table.duplicated(["policy", "user"], keep=False)]
        if not repeated.empty:  # a merge would pair every copy: one user would count several times
            first = repeated.iloc[0]
            raise ValueError(f"run {name} lists user {first['user']} of policy {first['policy']!r} more than once "
                             f"({len(repeated)} repeated rows); each (policy, user) must appear once")
    out = []
    for policy in common:
        both = a[a["policy"] == policy].merge(b[b["policy"] == policy], on="user", suffixes=(" A", " B"))
        if both.empty:
            continue  # the runs evaluated this policy on disjoint users (different --max-env-users subsets)
        d = paired_difference(both["NDCG@10 A"], both["NDCG@10 B"])
        out.append({"policy": policy, "users": len(both), "NDCG@10 A": both["NDCG@10 A"].mean(),
                    "NDCG@10 B": both["NDCG@10 B"].mean(), "A - B": d.estimate, "lo": d.low, "hi": d.high,
                    "steps A": both["steps A"].mean(), "steps B": both["steps B"].mean()})
    if not out:
        raise ValueError(f"the runs share no (policy, user) pair; policies in common: {common}")
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame) -> str:
    lines = ["| policy | users | NDCG@10 A | NDCG@10 B | A - B [95% CI] | steps A / B |", "|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        steps = "" if pd.isna(r["steps A"]) else f"{r['steps A']:.2f} / {r['steps B']:.2f}"
        lines.append(f"| {r['policy']} | {r['users']} | {r['NDCG@10 A']:.4f} | {r['NDCG@10 B']:.4f} | "
                     f"{r['A - B']:+.4f} [{r['lo']:+.4f}, {r['hi']:+.4f}] | {steps} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_a", type=Path, help="a bench_lares --out folder")
    parser.add_argument("run_b", type=Path, help="another one, subtracted from A")
    parser.add_argument("--dataset", choices=list(DATASETS), default="ml-100k")
    parser.add_argument("--policy", nargs="*", default=None, help="only these rows (default: all in both runs)")
    args = parser.parse_args()
    print(markdown(compare(load_per_user(args.run_a, args.dataset), load_per_user(args.run_b, args.dataset),
                           args.policy)))
