"""The ``recrail`` command: listing, one-line errors, evaluate's outputs, SB3 and RLlib training."""

import json
import re
import shutil

import pytest

import envs
from agents.baselines import baseline_names
from benchmarks.cli import main

ENV_WITH_TWO_BASELINES = next(i for i in envs.env_ids() if len(baseline_names(i)) >= 2)


@pytest.fixture
def small_config(tmp_path):
    """An experiment file with tiny batches: the tests check the plumbing, not learning."""
    path = tmp_path / "small.yaml"
    path.write_text(
        f"env_id: {ENV_WITH_TWO_BASELINES}\n"
        "sb3:\n  ppo: {n_envs: 1, n_steps: 64, batch_size: 64, n_epochs: 1}\n"
        "rllib:\n  ppo: {train_batch_size_per_learner: 256, minibatch_size: 128, num_epochs: 1}\n"
    )
    return path


def test_list_shows_every_id_with_spaces(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for env_id in envs.env_ids():
        assert env_id in out
    assert out.count("observation:") == len(envs.env_ids())


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--env", "recrail/Nope-v0"], "unknown environment id 'recrail/Nope-v0'"),
        (["train", "--env", ENV_WITH_TWO_BASELINES, "--timesteps", "0"], "must be a positive integer"),
        (["train", "--env", ENV_WITH_TWO_BASELINES, "--backend", "tf"], "invalid choice: 'tf'"),
        (["evaluate", "--env", ENV_WITH_TWO_BASELINES, "--policy", "no_such_policy"], "neither a baseline"),
        (["evaluate", "--env", ENV_WITH_TWO_BASELINES, "--policy", "x", "--env-kwargs", "[1]"], "JSON object"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["train", "--env", ENV_WITH_TWO_BASELINES, "--seed", "-1"], "must be an integer >= 0, got -1"),
        (["evaluate", "--env", ENV_WITH_TWO_BASELINES, "--policy", "x", "--seed", "-5"], "must be an integer >= 0"),
        (["train", "--env", "recrail/TRMRetrievalText-v0"], "observes text"),
        (["train", "--env", "recrail/RailDisruption-v0", "--algo", "dqn", "--timesteps", "64"],
         "dqn cannot train on recrail/RailDisruption-v0"),
        (["sasrec", "train", "--data", "synthetic", "--threads", "0", "--out", "unused"], "--threads must be >= 1"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_code_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and err.startswith("recrail")


@pytest.mark.parametrize(
    "text, fragment",
    [("env_id: {env}\nsb3:\n  ppo_: {{n_steps: 64}}\n", r"sb3: unknown keys \['ppo_'\]"),
     ("env_id: {env}\nsb3:\n  ppo: {{n_stepz: 64}}\n", r"ppo has no hyperparameters \['n_stepz'\]"),
     ("env_id: {env}\nrllib:\n  ppo: {{lamda: 0.9}}\n", r"rllib ppo has no training settings \['lamda'\]"),
     ("env_id: {env}\nrllib:\n  ppo: {{model: {{fcnet_hidden: [8]}}}}\n", r"rllib model has no settings \['fcnet_hidden'\]"),
     ("env_id: {env}\nrllib:\n  ppo: {{vectorize: vector_entry_point}}\n", "needs a native vector env"),
     ("env_id: {env}\nsb3: [ppo\n", "not valid YAML"),
     ("env_id: {env}\nenv_kwargs: [1]\n", "env_kwargs: expected a mapping")],
)
def test_config_typos_are_named_before_training(tmp_path, text, fragment, capsys):
    backend = "rllib" if "rllib" in text else "sb3"
    path = tmp_path / "typo.yaml"
    path.write_text(text.format(env=ENV_WITH_TWO_BASELINES))
    argv = ["train", "--env", ENV_WITH_TWO_BASELINES, "--backend", backend, "--config", str(path), "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("recrail: error") and re.search(fragment, err)
    assert not (tmp_path / "model.zip").exists()


def test_evaluate_two_baselines_writes_all_four_outputs(tmp_path):
    first, second = baseline_names(ENV_WITH_TWO_BASELINES)[:2]
    argv = ["evaluate", "--env", ENV_WITH_TWO_BASELINES, "--policy", first, second,
            "--episodes", "4", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "evaluation.csv", "evaluation.json", "evaluation.md", "evaluation.png"]
    payload = json.loads((tmp_path / "evaluation.json").read_text())
    assert {row["policy"] for row in payload["summary"]} == {first, second}


def test_sb3_train_then_evaluate_the_saved_zip(tmp_path, small_config, capsys):
    env_id = ENV_WITH_TWO_BASELINES
    argv = ["train", "--env", env_id, "--algo", "ppo", "--timesteps", "128", "--config", str(small_config),
            "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    model = tmp_path / "run" / "model.zip"
    assert model.is_file() and (tmp_path / "run" / "recrail.json").is_file()
    baseline = baseline_names(env_id)[0]
    shutil.copytree(tmp_path / "run", tmp_path / "run2")  # two agents, both saved as model.zip: named by their runs
    argv = ["evaluate", "--env", env_id, "--policy", str(model), str(tmp_path / "run2" / "model.zip"), baseline,
            "--episodes", "2", "--out", str(tmp_path / "eval")]
    assert main(argv) == 0
    payload = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert {row["policy"] for row in payload["summary"]} == {"run", "run2", baseline}
    other = next(i for i in envs.env_ids() if i != env_id)
    assert main(["evaluate", "--env", other, "--policy", str(model), "--episodes", "1"]) == 2
    assert f"was trained on {env_id}" in capsys.readouterr().err


def test_rllib_train_two_iterations_with_two_env_runners(tmp_path, small_config):
    env_id = ENV_WITH_TWO_BASELINES
    argv = ["train", "--env", env_id, "--backend", "rllib", "--algo", "ppo", "--iterations", "2",
            "--num-env-runners", "2", "--config", str(small_config), "--out", str(tmp_path / "rl")]
    assert main(argv) == 0
    meta = json.loads((tmp_path / "rl" / "recrail.json").read_text())
    assert meta["iterations"] == 2 and meta["num_env_runners"] == 2 and len(meta["history"]) == 2
    assert main(["evaluate", "--env", env_id, "--policy", str(tmp_path / "rl"), "--episodes", "2",
                 "--out", str(tmp_path / "eval")]) == 0


def test_sasrec_train_names_an_out_path_that_is_a_file(tmp_path, capsys):
    taken = tmp_path / "log.json"
    taken.write_text("{}")
    assert main(["sasrec", "train", "--data", "synthetic", "--epochs", "1", "--out", str(taken)]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
