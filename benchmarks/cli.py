"""The ``recrail`` command: list environments, train, evaluate, benchmark and run the demo.

Bad arguments print one ``recrail: error: ...`` line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path

import envs
from agents.sasrec_cli import add_sasrec_parser

BACKENDS = ("sb3", "rllib")
SB3_ALGOS = ("ppo", "maskable_ppo", "sac", "dqn", "a2c")


class UsageError(Exception):
    """A user mistake: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line instead of the usage block
        raise UsageError(f"{self.prog}: error: {message}")


def _env_id(value: str) -> str:
    try:
        return envs.entry_for(value).env_id
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:  # numpy's seeding rejects negative seeds
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return number


def _json_object(value: str) -> dict:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err.msg}): {value!r}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {value!r}")
    return parsed


def describe_space(space) -> str:
    """A one-line description of a space (Box bounds summarized, Text charset counted)."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Box):
        return f"Box(shape={space.shape}, dtype={space.dtype}, low>={space.low.min():.3g}, high<={space.high.max():.3g})"
    if isinstance(space, gym.spaces.Text):
        return f"Text(length {space.min_length}..{space.max_length}, {len(space.character_set)} characters)"
    return str(space)


def cmd_list(args: argparse.Namespace) -> None:
    import gymnasium as gym

    for entry in envs.ENVIRONMENTS:
        print(f"{entry.env_id}\n    {entry.description}")
        if not args.no_spaces:
            env = gym.make(entry.env_id)
            print(f"    observation: {describe_space(env.observation_space)}")
            print(f"    action:      {describe_space(env.action_space)}")
            env.close()


def cmd_train(args: argparse.Namespace) -> None:
    from benchmarks.experiment import load_experiment

    import gymnasium as gym

    experiment = load_experiment(args.env, args.config)
    probe = gym.make(args.env, **experiment.env_kwargs)
    if isinstance(probe.observation_space, gym.spaces.Text):
        raise UsageError(f"recrail train: error: {args.env} observes text (for language-model agents); SB3 and RLlib "
                         "train on numeric observations, e.g. recrail/TRMRetrieval-v0")
    probe.close()
    name = envs.entry_for(args.env).name
    out = args.out or Path("runs") / "train" / f"{name}-{args.backend}-{args.algo}-s{args.seed}"
    if args.backend == "sb3":
        from agents.train_sb3 import train_sb3

        if args.algo not in SB3_ALGOS:
            raise UsageError(f"recrail train: error: --algo {args.algo} is not an SB3 algorithm ({', '.join(SB3_ALGOS)})")
        overrides = {"seed": args.seed, "out_dir": out}
        if args.timesteps:
            overrides["timesteps"] = args.timesteps
        train_sb3(args.env, experiment.sb3_config(args.algo, **overrides))
        print(f"saved {out / 'model.zip'}")
    else:
        from agents.train_rllib import train_rllib

        if args.algo == "maskable_ppo":
            raise UsageError("recrail train: error: maskable_ppo is SB3 only; use --algo ppo with --backend rllib")
        overrides = {"seed": args.seed, "out_dir": out, "address": args.address}
        if args.num_env_runners is not None:
            overrides["num_env_runners"] = args.num_env_runners
        if args.iterations:
            overrides["iterations"] = args.iterations
        elif args.timesteps:  # RLlib counts iterations: one is a train batch of env steps
            batch = experiment.rllib.get(args.algo, {}).get("train_batch_size_per_learner", 4000)
            overrides["iterations"] = max(1, math.ceil(args.timesteps / batch))
        train_rllib(args.env, experiment.rllib_config(args.algo, **overrides))
        print(f"saved {out / 'checkpoint'}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from agents.loading import load_policy
    from benchmarks.demo import rich_table, wide_console
    from benchmarks.experiment import load_experiment
    from benchmarks.harness import evaluate_policies

    env_kwargs = args.env_kwargs
    if env_kwargs is None:
        experiment = load_experiment(args.env, args.config)
        env_kwargs = experiment.heldout_env_kwargs if args.heldout else experiment.env_kwargs
    policies = {}
    for spec in args.policy:
        policy = load_policy(spec, args.env)
        if policy.name in policies:
            raise UsageError(f"recrail evaluate: error: policy {policy.name!r} given twice")
        policies[policy.name] = policy
    report = evaluate_policies(
        args.env, policies, args.episodes, seed=args.seed, env_kwargs=env_kwargs, reference=args.reference
    )
    out = args.out or Path("runs") / "evaluate" / envs.entry_for(args.env).name
    paths = report.write(out)
    wide_console().print(rich_table(report, f"{args.env}: {args.episodes} paired episodes, mean [95% CI]"))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def benchmark_modules() -> list[str]:
    """Names of the ``benchmarks/bench_*.py`` modules."""
    import benchmarks

    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))


def cmd_bench(args: argparse.Namespace) -> None:
    names = benchmark_modules()
    chosen = args.only or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise UsageError(f"recrail bench: error: unknown benchmark(s) {unknown}; known: {names}")
    for name in chosen:
        print(f"== {name}")
        importlib.import_module(f"benchmarks.{name}").main(args.out / name)


def cmd_demo(args: argparse.Namespace) -> None:
    from benchmarks.demo import run_demo

    run_demo(args.out, args.env)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="recrail", description=__doc__.splitlines()[0])
    parser.add_argument("--torch-threads", type=_positive, default=1,
                        help="torch CPU threads (default 1: fastest for these small networks, and on a busy machine)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="registered environment ids with descriptions and spaces")
    p.add_argument("--no-spaces", action="store_true", help="skip building each env to show its spaces")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train an agent (SB3 or RLlib) on an environment")
    p.add_argument("--env", required=True, type=_env_id, help="environment id, e.g. recrail/RailDisruption-v0")
    p.add_argument("--algo", default="ppo", choices=sorted({*SB3_ALGOS, "appo"}), help="algorithm (default ppo)")
    p.add_argument("--backend", default="sb3", choices=BACKENDS, help="sb3 (laptop) or rllib (cluster)")
    p.add_argument("--timesteps", type=_positive, help="environment steps (default: the experiment config's)")
    p.add_argument("--iterations", type=_positive, help="rllib: training iterations (overrides --timesteps)")
    p.add_argument("--num-env-runners", type=int, help="rllib: env runner processes")
    p.add_argument("--address", help="rllib: address of a running Ray cluster (default: start Ray locally)")
    p.add_argument("--seed", type=_non_negative, default=0, help="training seed (default 0)")
    p.add_argument("--config", type=Path, help="experiment YAML (default benchmarks/configs/<Name>.yaml)")
    p.add_argument("--out", type=Path, help="output folder (default runs/train/<name>-<backend>-<algo>-s<seed>)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate policies on paired seeds; writes JSON, CSV, Markdown, PNG")
    p.add_argument("--env", required=True, type=_env_id, help="environment id")
    p.add_argument("--policy", required=True, nargs="+",
                   help="baseline name, SB3 .zip file or RLlib checkpoint folder (several allowed)")
    p.add_argument("--episodes", type=_positive, default=30, help="paired episodes per policy (default 30)")
    p.add_argument("--seed", type=_non_negative, default=100_000, help="seed of the first episode (default 100000)")
    p.add_argument("--reference", help="policy the paired differences are taken against (default: the first)")
    p.add_argument("--heldout", action="store_true", help="use the config's held-out eval_env_kwargs")
    p.add_argument("--env-kwargs", type=_json_object, help="JSON kwargs for gym.make (overrides --config)")
    p.add_argument("--config", type=Path, help="experiment YAML (default benchmarks/configs/<Name>.yaml)")
    p.add_argument("--out", type=Path, help="output folder (default runs/evaluate/<name>)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="run the long benchmarks (benchmarks/bench_*.py)")
    p.add_argument("--only", nargs="+", help="benchmark module names, e.g. bench_rail_speed")
    p.add_argument("--out", type=Path, default=Path("runs/bench"), help="output folder (default runs/bench)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="train and evaluate a small agent on every environment")
    p.add_argument("--env", nargs="+", type=_env_id, help="only these environment ids")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="report folder (default runs/demo)")
    p.set_defaults(func=cmd_demo)

    add_sasrec_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        import torch

        torch.set_num_threads(args.torch_threads)
        code = args.func(args)
    except UsageError as err:
        print(f"{err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as err:
        print(f"recrail: error: {err}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
