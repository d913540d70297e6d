"""RL vs baselines on recrail/RailDisruption-v0's held-out test scenario family.

Trains MaskablePPO (``agents.train_sb3``, hyperparameters from
``benchmarks/configs/RailDisruption-v0.yaml``) on the ``train`` family, optionally RLlib PPO
(``agents.train_rllib``, 2 env runners, MaskablePPO's network and action masks, matched settings), then evaluates every policy and every registered
baseline on the same ``episodes`` seeds of the held-out ``test`` family
(``benchmarks.harness.evaluate_policies``). Reports the seed paper's triple per policy (demand
satisfied, share of rolling stock used, overcrowding) and the paired difference of the return
between MaskablePPO and the best baseline with its 95% bootstrap CI.

Run: ``python -m benchmarks.bench_rail_rl [--timesteps N] [--episodes N] [--rllib-iterations N]``
(or ``recrail bench``); writes ``rail_rl.md`` / ``rail_rl.json`` (+ the harness's report files)
to the output folder and the two summaries to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd
import torch

from agents.baselines import baseline_names, make_baseline
from agents.train_sb3 import train_sb3
from benchmarks.experiment import load_experiment
from benchmarks.harness import evaluate_policies, summarize
from benchmarks.publish import write_results

ENV_ID = "recrail/RailDisruption-v0"
TIMESTEPS = 150_000
EPISODES = 60
AGENTS = {"maskable_ppo": "MaskablePPO", "rllib_ppo": "RLlib PPO"}  # trained here -> their names in the report
EVAL_SEED = 100_000  # the training runs never see these seeds (and train on another family)
COLUMNS = {  # metric -> (header, format)
    "return": ("return (95% CI)", None),
    "demand_satisfaction": ("demand satisfied", "{:.1%}"),
    "fleet_share_used": ("rolling stock used", "{:.1%}"),
    "overcrowding_person_min": ("overcrowding (person-min)", "{:,.0f}"),
    "peak_crowd_ratio": ("peak crowd ratio", "{:.2f}"),
    "passengers_lost": ("passengers lost", "{:,.0f}"),
    "mean_wait_min": ("mean wait (min)", "{:.1f}"),
    "trains_dispatched": ("trains", "{:.0f}"),
    "invalid_actions": ("invalid actions", "{:.1f}"),
}


def run(out_dir: Path, timesteps: int = TIMESTEPS, episodes: int = EPISODES, rllib_iterations: int | None = None) -> dict:
    """Train, evaluate, pair; ``rllib_iterations`` None: the YAML's (147 x 1,024 steps, MaskablePPO's 150k), 0: no RLlib."""
    # Small MLPs: one torch thread is faster than several fighting over 2 shared cores.
    torch.set_num_threads(1)
    experiment = load_experiment(ENV_ID)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    sb3_config = experiment.sb3_config("maskable_ppo", timesteps=timesteps, out_dir=out_dir / "maskable_ppo", progress=False)
    policies = {"maskable_ppo": train_sb3(ENV_ID, sb3_config)}
    timings["maskable_ppo_train_s"] = time.perf_counter() - start
    rllib_config = experiment.rllib_config("ppo", out_dir=out_dir / "rllib_ppo", progress=False)
    if rllib_iterations is None:
        rllib_iterations = rllib_config.iterations
    if rllib_iterations:
        from agents.train_rllib import train_rllib  # Ray is slow to import: only when asked

        start = time.perf_counter()
        rllib_config = dataclasses.replace(rllib_config, iterations=rllib_iterations)
        policies["rllib_ppo"] = train_rllib(ENV_ID, rllib_config)
        timings["rllib_ppo_train_s"] = time.perf_counter() - start
    baselines = baseline_names(ENV_ID)
    policies.update({name: make_baseline(ENV_ID, name) for name in baselines})
    start = time.perf_counter()
    report = evaluate_policies(ENV_ID, policies, episodes, seed=EVAL_SEED, env_kwargs=experiment.heldout_env_kwargs,
                               reference="maskable_ppo", progress=False)
    timings["evaluation_s"] = time.perf_counter() - start
    means = report.episodes.groupby("policy")["return"].mean()
    best = max(baselines, key=lambda name: means[name])
    summary = summarize(report.episodes, best)
    report.write(out_dir / "evaluation")
    diffs = {name: _return_diff(summary, name) for name in AGENTS if name in policies}
    # RLlib PPO minus MaskablePPO (the report's reference): one algorithm on two backends
    framework = _return_diff(report.summary, "rllib_ppo") if "rllib_ppo" in policies else None
    return {
        "env_id": ENV_ID,
        "train_env_kwargs": experiment.env_kwargs,
        "eval_env_kwargs": experiment.heldout_env_kwargs,
        "timesteps": timesteps,
        "rllib_iterations": rllib_iterations,
        "episodes": episodes,
        "eval_seeds": [EVAL_SEED, EVAL_SEED + episodes - 1],
        "best_baseline": best,
        "return_diff_vs_best": diffs,
        "return_diff_rllib_vs_maskable": framework,
        "timings_s": timings,
        "summary": summary.to_dict(orient="records"),
    }


def _return_diff(summary: pd.DataFrame, policy: str) -> dict[str, float]:
    """``policy``'s paired return difference to the summary's reference, with its CI."""
    row = summary.set_index(["policy", "metric"]).loc[(policy, "return")]
    return {"mean": row["diff"], "ci_low": row["diff_ci_low"], "ci_high": row["diff_ci_high"]}


def markdown(result: dict) -> str:
    summary = pd.DataFrame(result["summary"])
    policies = list(dict.fromkeys(summary["policy"]))
    header = "| policy | " + " | ".join(h for h, _ in COLUMNS.values()) + " |"
    lines = [
        "# RailDisruption-v0: MaskablePPO and RLlib PPO vs baselines on the held-out test family",
        "",
        f"Trained on `{result['train_env_kwargs']}` for {result['timesteps']:,} steps; evaluated on "
        f"`{result['eval_env_kwargs']}`, {result['episodes']} paired episodes (seeds {result['eval_seeds'][0]}.."
        f"{result['eval_seeds'][1]}, the same for every policy). Means over episodes; the return with its 95% bootstrap CI.",
        "",
        header,
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    for name in policies:
        part = summary[summary.policy == name].set_index("metric")
        cells = []
        for metric, (_, fmt) in COLUMNS.items():
            row = part.loc[metric]
            cells.append(f"{row['mean']:.1f} [{row['ci_low']:.1f}, {row['ci_high']:.1f}]" if fmt is None
                         else fmt.format(row["mean"]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, d in result["return_diff_vs_best"].items():
        verdict = (f"excludes zero in favour of {AGENTS[name]}" if d["ci_low"] > 0
                   else "excludes zero in favour of the baseline" if d["ci_high"] < 0 else "includes zero")
        lines.append(f"Paired difference of the return, {AGENTS[name]} minus the best baseline (`{result['best_baseline']}`): "
                     f"**{d['mean']:+.2f}**, 95% CI [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}], which {verdict}.")
    d = result["return_diff_rllib_vs_maskable"]
    if d is not None:
        lines.append(f"RLlib PPO minus MaskablePPO (the same network and masks, matched settings): {d['mean']:+.2f}, "
                     f"95% CI [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}].")
    lines += [
        "",
        "Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result["timings_s"].items()) + ".",
        "",
        f"Reproduce: `python -m benchmarks.bench_rail_rl --timesteps {result['timesteps']} --episodes {result['episodes']}"
        + (f" --rllib-iterations {result['rllib_iterations']}`." if result["rllib_iterations"] else "`."),
    ]
    return "\n".join(lines) + "\n"


def main(out_dir: Path, timesteps: int = TIMESTEPS, episodes: int = EPISODES, rllib_iterations: int | None = None) -> None:
    out_dir = Path(out_dir)
    result = run(out_dir, timesteps, episodes, rllib_iterations)
    text = markdown(result)
    write_results(out_dir, "rail_rl", result, text)
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_rail_rl"))
    parser.add_argument("--timesteps", type=int, default=TIMESTEPS)
    parser.add_argument("--episodes", type=int, default=EPISODES)
    parser.add_argument("--rllib-iterations", type=int, default=None,
                        help="RLlib PPO iterations (default: the YAML's); 0: no RLlib agent")
    args = parser.parse_args()
    main(args.out, args.timesteps, args.episodes, args.rllib_iterations)
