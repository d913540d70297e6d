"""Speed of recrail/RailDisruption-v0: env steps/s, 12-hour episode time, scaling with network size.

Single process, random feasible actions (drawn from ``action_masks()``; the draw and the mask are
inside the timed loop). Three measurements:

1. steps/s on the default scenario (episodes end as usual; resets are inside the timed loop);
2. wall time of a full simulated 12-hour episode (144 epochs of 5 minutes: the line stays closed,
   so nothing ends it early), reset included, with the number of passengers simulated;
3. steps/s on synthetic star networks with 2 to 16 routes (fleet and demand scale with routes).

Run: ``python -m benchmarks.bench_rail_speed`` (or ``recrail bench``); writes
``rail_speed.md`` / ``rail_speed.json`` to the output folder and to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from agents.baselines.rail import random_masked_action
from benchmarks.machine import machine_info
from benchmarks.publish import RESULTS, write_results
from envs.rail_disruption import RailDisruptionEnv
from simulators.railway import default_scenario, synthetic_scenario

TARGET_STEPS_PER_S = 5000
TARGET_EPISODE_MS = 50


def steps_per_second(env: RailDisruptionEnv, steps: int, seed: int = 0) -> dict[str, float]:
    """Random feasible play for ``steps`` steps; resets when an episode ends (timed too)."""
    rng = np.random.default_rng(seed)
    nvec = env.action_space.nvec
    env.reset(seed=seed)
    episodes, trains = 0, 0
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(random_masked_action(nvec, env.action_masks(), rng))
        if terminated or truncated:
            episodes += 1
            trains += info["kpis"]["trains_dispatched"]
            env.reset()
    elapsed = time.perf_counter() - start
    return {"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed, "episodes": episodes,
            "trains_per_episode": trains / max(episodes, 1)}


def full_episode(env: RailDisruptionEnv, episodes: int) -> dict[str, float]:
    """Wall time of whole episodes (reset + every step), median over ``episodes`` seeds."""
    times, passengers, lengths, trains = [], [], [], []
    for seed in range(episodes):
        rng = np.random.default_rng(seed)
        nvec = env.action_space.nvec
        start = time.perf_counter()
        env.reset(seed=seed)
        n = 0
        while True:
            _, _, terminated, truncated, info = env.step(random_masked_action(nvec, env.action_masks(), rng))
            n += 1
            if terminated or truncated:
                break
        times.append(time.perf_counter() - start)
        passengers.append(info["kpis"]["passengers_arrived"])
        trains.append(info["kpis"]["trains_dispatched"])
        lengths.append(n)
    return {"episodes": episodes, "median_ms": 1000 * float(np.median(times)), "p90_ms": 1000 * float(np.quantile(times, 0.9)),
            "steps_per_episode": float(np.mean(lengths)), "passengers_per_episode": float(np.mean(passengers)),
            "trains_per_episode": float(np.mean(trains))}


def run(steps: int = 20_000, episodes: int = 30, sizes: tuple[int, ...] = (2, 4, 8, 16)) -> dict:
    base = default_scenario()
    never_reopens = replace(base, disruption=replace(base.disruption, duration_median_min=10 * base.horizon_min,
                                                     duration_sigma=0.0))
    results = {
        "machine": machine_info(),
        "default": steps_per_second(RailDisruptionEnv(), steps),
        "episode_12h": full_episode(RailDisruptionEnv({"scenario": never_reopens}), episodes),
        "scaling": [],
    }
    for n in sizes:
        scenario = synthetic_scenario(n)
        row = steps_per_second(RailDisruptionEnv({"scenario": scenario}), max(2000, steps // 4))
        row.update(routes=n, fleet=scenario.fleet.size, stations=len(scenario.network.stations))
        results["scaling"].append(row)
    results["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    return results


def markdown(results: dict) -> str:
    d, e, m = results["default"], results["episode_12h"], results["machine"]
    lines = [
        "# RailDisruption-v0 speed",
        "",
        f"Single process, random feasible actions (mask + draw inside the timed loop), Python {m['python']}, "
        f"{m['cpus']} CPUs shared with other jobs (1-min load average {m['load_average_1min_at_start']:.1f} at start, "
        f"{m['load_average_1min_at_end']:.1f} at end), commit {m.get('commit')}. Every episode runs the whole day "
        "(144 steps); the 12-hour row's line never reopens.",
        "",
        "| measurement | value | target |",
        "|---|---|---|",
        f"| env steps/s, default scenario | {d['steps_per_s']:,.0f} | >= {TARGET_STEPS_PER_S:,} |",
        f"| 12-hour episode ({e['steps_per_episode']:.0f} steps), median wall time | {e['median_ms']:.1f} ms "
        f"(p90 {e['p90_ms']:.1f} ms) | < {TARGET_EPISODE_MS} ms |",
        f"| passengers simulated per 12-hour episode | {e['passengers_per_episode']:,.0f} | |",
        f"| trains dispatched per 12-hour episode | {e['trains_per_episode']:,.0f} | |",
        "",
        "## Scaling with network size (synthetic star networks, 5 stops per route)",
        "",
        "| routes | stations | fleet (units) | trains / episode | env steps/s |",
        "|---|---|---|---|---|",
    ]
    for row in results["scaling"]:
        lines.append(f"| {row['routes']} | {row['stations']} | {row['fleet']} | {row['trains_per_episode']:.0f} | "
                     f"{row['steps_per_s']:,.0f} |")
    lines += ["", "Reproduce: `python -m benchmarks.bench_rail_speed`."]
    return "\n".join(lines) + "\n"


def main(out_dir: Path) -> None:
    results = run()
    text = markdown(results)
    write_results(out_dir, "rail_speed", results, text)
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for rail_speed.md/.json (also written to "
                        "benchmarks/results)")
    main(parser.parse_args().out)
