"""Paired policy evaluation: every policy plays the same seeded episodes, then KPIs get CIs.

Episode ``i`` is reset with seed ``seed + i`` for every policy, so differences between policies
are paired per episode. Per episode the harness records the return, the length and every KPI the
environment reports in ``info["kpis"]`` on its final step. Per policy and metric it reports the
mean with a 95% bootstrap CI, the IQM, and the paired difference to a reference policy with its CI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import matplotlib
import numpy as np
import pandas as pd
from rich.progress import Progress

import envs  # noqa: F401  (registers the recrail ids)
from agents.policy import Policy
from benchmarks.stats import iqm, mean_ci, paired_difference

matplotlib.use("Agg")  # reports are written on headless machines
import matplotlib.pyplot as plt  # noqa: E402

SUMMARY_COLUMNS = [
    "policy", "metric", "mean", "ci_low", "ci_high", "iqm",
    "diff", "diff_ci_low", "diff_ci_high",
]


def run_episode(env: gym.Env, policy: Policy, seed: int) -> dict[str, float]:
    """Play one episode from ``env.reset(seed=seed)``; return its return, length and KPIs."""
    obs, info = env.reset(seed=seed)
    policy.reset(env, seed)
    episode_return, length = 0.0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, env))
        episode_return += float(reward)
        length += 1
        if terminated or truncated:
            break
    kpis = info.get("kpis", {})
    return {"return": episode_return, "length": float(length), **{k: float(v) for k, v in kpis.items()}}


def _nan_to_none(value: Any) -> Any:
    """``value`` with every float NaN (in nested dicts and lists) replaced by None, JSON's null."""
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def with_interval(estimate: float, low: float, high: float, spec: str) -> str:
    """``estimate [low, high]`` formatted with ``spec``; ``[no CI]`` when the interval is undefined (one episode)."""
    if np.isnan(low) or np.isnan(high):
        return f"{estimate:{spec}} [no CI]"
    return f"{estimate:{spec}} [{low:{spec}}, {high:{spec}}]"


@dataclass
class EvaluationReport:
    """Per-episode records and their per-policy summary."""

    env_id: str
    episodes: pd.DataFrame  # one row per (policy, episode): seed, return, length, KPIs
    summary: pd.DataFrame  # SUMMARY_COLUMNS, one row per (policy, metric)
    reference: str | None

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(self.summary["metric"]))

    def table(self, metrics: list[str] | None = None, digits: int = 4) -> pd.DataFrame:
        """Wide table: one row per policy, ``mean [low, high]`` per metric."""
        rows = self.summary if metrics is None else self.summary[self.summary["metric"].isin(metrics)]
        cells = rows.assign(cell=[
            with_interval(m, lo, hi, f".{digits}g") for m, lo, hi in zip(rows["mean"], rows["ci_low"], rows["ci_high"])
        ])
        wide = cells.pivot(index="policy", columns="metric", values="cell")
        order = list(dict.fromkeys(self.summary["policy"]))
        return wide.loc[order, list(dict.fromkeys(rows["metric"]))]

    def difference_table(self) -> pd.DataFrame:
        """Wide table of paired differences to the reference policy, ``diff [low, high]``."""
        rows = self.summary[self.summary["policy"] != self.reference]
        cells = rows.assign(cell=[
            with_interval(d, lo, hi, "+.4g") for d, lo, hi in zip(rows["diff"], rows["diff_ci_low"], rows["diff_ci_high"])
        ])
        wide = cells.pivot(index="policy", columns="metric", values="cell")
        # a metric a policy never reported (no episode of it ended with KPIs) is an empty cell
        return wide.reindex(index=list(dict.fromkeys(rows["policy"])), columns=self.metrics).fillna("")

    def write(self, out_dir: Path | str) -> dict[str, Path]:
        """Write ``evaluation.json``, ``evaluation.csv``, ``evaluation.md`` and ``evaluation.png``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {kind: out / f"evaluation.{kind}" for kind in ("json", "csv", "md", "png")}
        payload = {
            "env_id": self.env_id,
            "reference": self.reference,
            "n_episodes": int(self.episodes.groupby("policy").size().min()),
            "summary": self.summary.to_dict(orient="records"),
            "episodes": self.episodes.to_dict(orient="records"),
        }
        # strict JSON: a missing value (a CI of one episode) is null, not the bare NaN token
        paths["json"].write_text(json.dumps(_nan_to_none(payload), indent=2, allow_nan=False))
        self.summary.to_csv(paths["csv"], index=False)
        paths["md"].write_text(self.markdown())
        self.plot(paths["png"])
        return paths

    def markdown(self) -> str:
        n = int(self.episodes.groupby("policy").size().min())
        lines = [
            f"# Evaluation on `{self.env_id}`",
            "",
            f"{n} paired episodes per policy; mean [95% bootstrap CI].",
            "",
            self.table().T.to_markdown(),
        ]
        if self.reference is not None and len(self.summary["policy"].unique()) > 1:
            lines += [
                "",
                f"## Paired difference to `{self.reference}`",
                "",
                "mean of (policy - reference) per episode [95% bootstrap CI]; a CI that excludes 0 is a "
                "significant difference.",
                "",
                self.difference_table().T.to_markdown(),
            ]
        iqm_table = self.summary.pivot(index="policy", columns="metric", values="iqm")
        iqm_table = iqm_table.reindex(index=list(dict.fromkeys(self.summary["policy"])), columns=self.metrics).T
        lines += ["", "## Interquartile mean", "", iqm_table.to_markdown(floatfmt=".4g"), ""]
        return "\n".join(lines)

    def plot(self, path: Path, metrics: list[str] | None = None) -> None:
        """Bars of each policy's mean with CI whiskers, one panel per metric."""
        metrics = metrics or self.metrics
        cols = min(4, len(metrics))
        rows = int(np.ceil(len(metrics) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
        for ax, metric in zip(axes.flat, metrics):
            part = self.summary[self.summary["metric"] == metric]
            x = np.arange(len(part))
            err = np.vstack([part["mean"] - part["ci_low"], part["ci_high"] - part["mean"]])
            ax.bar(x, part["mean"], yerr=err, capsize=4, color="tab:blue", alpha=0.8)
            ax.set_xticks(x, part["policy"], rotation=30, ha="right", fontsize=8)
            ax.set_title(metric, fontsize=9)
        for ax in list(axes.flat)[len(metrics):]:
            ax.axis("off")
        fig.suptitle(f"{self.env_id}: mean and 95% CI", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.97))  # leave room for the suptitle
        fig.savefig(path, dpi=110)
        plt.close(fig)


def summarize(episodes: pd.DataFrame, reference: str | None) -> pd.DataFrame:
    """Per (policy, metric): mean and CI, IQM, and the paired difference to ``reference``."""
    metrics = [c for c in episodes.columns if c not in ("policy", "episode", "seed")]
    by_policy = {name: part.sort_values("episode") for name, part in episodes.groupby("policy", sort=False)}
    if reference is not None and reference not in by_policy:
        raise ValueError(f"reference policy {reference!r} is not among {list(by_policy)}")
    rows: list[dict[str, Any]] = []
    for name, part in by_policy.items():
        for metric in metrics:
            values = part[metric].dropna().to_numpy()
            if values.size == 0:
                continue
            ci = mean_ci(values)
            row = {"policy": name, "metric": metric, "mean": ci.estimate, "ci_low": ci.low,
                   "ci_high": ci.high, "iqm": iqm(values), "diff": np.nan, "diff_ci_low": np.nan,
                   "diff_ci_high": np.nan}
            if reference is not None and metric in by_policy[reference]:
                ref = by_policy[reference]
                if list(ref["seed"]) != list(part["seed"]):
                    raise ValueError(f"policies {name!r} and {reference!r} were not run on the same seeds")
                paired = pd.DataFrame({"a": part[metric].to_numpy(), "b": ref[metric].to_numpy()}).dropna()
                if len(paired):
                    diff = paired_difference(paired["a"], paired["b"])
                    row.update(diff=diff.estimate, diff_ci_low=diff.low, diff_ci_high=diff.high)
            rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def evaluate_policies(
    env_id: str,
    policies: Mapping[str, Policy],
    episodes: int,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    reference: str | None = None,
    progress: bool = True,
) -> EvaluationReport:
    """Run every policy for ``episodes`` paired episodes of ``env_id`` and summarize.

    ``reference`` defaults to the first policy given.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if not policies:
        raise ValueError("no policies to evaluate")
    reference = reference if reference is not None else next(iter(policies))
    if reference not in policies:  # before any episode runs, not after all of them
        raise ValueError(f"reference policy {reference!r} is not among {list(policies)}")
    records: list[dict[str, Any]] = []
    with Progress(disable=not progress, transient=True) as bar:
        for name, policy in policies.items():
            env = gym.make(env_id, **(env_kwargs or {}))
            task = bar.add_task(f"evaluating {name}", total=episodes)
            for i in range(episodes):
                records.append({"policy": name, "episode": i, "seed": seed + i, **run_episode(env, policy, seed + i)})
                bar.advance(task)
            env.close()
    return EvaluationReport(env_id, pd.DataFrame(records), summarize(pd.DataFrame(records), reference), reference)
