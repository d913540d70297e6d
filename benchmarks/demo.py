"""``make demo``: for every registered environment, train a small agent, evaluate it against the
environment's baselines on held-out seeds, print a table and write a report folder.

Budgets come from each env's ``demo`` section in ``benchmarks/configs/<Name>-v0.yaml``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import envs
from agents.baselines import baseline_names, make_baseline
from agents.policy import Policy
from agents.train_sb3 import train_sb3
from benchmarks.experiment import load_experiment
from benchmarks.harness import EvaluationReport, evaluate_policies, with_interval

EVAL_SEED = 100_000  # evaluation seeds start here, away from the training seeds
BASELINE_ONLY_EPISODES = 10  # for an env whose config has no demo section
TABLE_METRICS = 4  # columns shown on the console; the report has them all
CONSOLE_WIDTH = 150


def wide_console() -> Console:
    """A console at least ``CONSOLE_WIDTH`` wide, so CI cells stay on one line."""
    return Console(width=max(Console().width, CONSOLE_WIDTH))


def rich_table(report: EvaluationReport, title: str) -> Table:
    """The report's first metrics as a console table, ``mean [95% CI]`` per cell, and the paired
    difference of the return to the reference policy."""
    metrics = report.metrics[:TABLE_METRICS]
    wide = report.table(metrics, digits=3)
    returns = report.summary[report.summary["metric"] == "return"].set_index("policy")
    table = Table(title=title, show_lines=False)
    table.add_column("policy", style="bold", no_wrap=True)
    for metric in metrics:
        table.add_column(metric, justify="right", no_wrap=True)
    table.add_column(f"return - {report.reference}", justify="right", no_wrap=True)
    for policy, row in wide.iterrows():
        d = returns.loc[policy]
        diff = "" if policy == report.reference else with_interval(d["diff"], d["diff_ci_low"], d["diff_ci_high"], "+.3g")
        table.add_row(str(policy), *[str(row[m]) for m in metrics], diff)
    return table


def demo_env(env_id: str, out_dir: Path, console: Console) -> EvaluationReport:
    """Train (when the env's config has a demo section), evaluate, write ``out_dir``."""
    experiment = load_experiment(env_id)
    policies: dict[str, Policy] = {}
    if experiment.demo is not None:
        spec = experiment.demo
        console.print(f"[bold]{env_id}[/]: training {spec.algo} for {spec.timesteps} steps")
        config = experiment.sb3_config(spec.algo, timesteps=spec.timesteps, out_dir=out_dir / "train")
        policies[spec.algo] = train_sb3(env_id, config)
        episodes, reference = spec.episodes, spec.reference
    else:
        episodes, reference = BASELINE_ONLY_EPISODES, None
    policies.update({name: make_baseline(env_id, name) for name in baseline_names(env_id)})
    report = evaluate_policies(
        env_id, policies, episodes, seed=EVAL_SEED, env_kwargs=experiment.heldout_env_kwargs, reference=reference
    )
    report.write(out_dir)
    console.print(rich_table(report, f"{env_id}: {episodes} held-out episodes, mean [95% CI]"))
    return report


def run_demo(out_dir: Path, env_ids: list[str] | None = None) -> Path:
    """Run the demo over ``env_ids`` (default: every registered id); return the report path."""
    console = wide_console()
    out_dir.mkdir(parents=True, exist_ok=True)
    sections, timings = ["# recrail demo", ""], {}
    for env_id in env_ids or envs.env_ids():
        start = time.perf_counter()
        env_dir = out_dir / envs.entry_for(env_id).name
        report = demo_env(env_id, env_dir, console)
        timings[env_id] = round(time.perf_counter() - start, 1)
        body = report.markdown().replace("# Evaluation on", "## Evaluation on", 1).replace("\n## ", "\n### ")
        sections += [body, f"![{env_id}]({env_dir.name}/evaluation.png)", ""]
    sections += ["## Wall time (s)", "", *[f"- `{k}`: {v}" for k, v in timings.items()], ""]
    report_path = out_dir / "report.md"
    report_path.write_text("\n".join(sections))
    (out_dir / "timings.json").write_text(json.dumps(timings, indent=2))
    console.print(f"report written to {report_path}")
    return report_path
