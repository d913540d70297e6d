"""LARES model: shapes, causality, the step sampler, SPT losses, GRPO math, checkpoints."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agents.lares_post_training import (RPTConfig, SPTConfig, init_from_sasrec, same_target_partners, spt_instances,
                                        training_windows)
from simulators.recsys.lares import (
    LARES,
    LARESConfig,
    grpo_loss,
    group_advantages,
    info_nce,
    kl_k3,
    load_lares,
    load_lares_and_optimizer,
    mixed_share,
    rollout_advantages,
    sample_steps,
    save_lares,
    spt_loss,
    trim_padding,
    truncated_normal,
)
from simulators.recsys.split import leave_one_out
from simulators.recsys.synthetic import SyntheticConfig, make_synthetic

TINY = dict(n_items=30, max_len=8, hidden=16, n_heads=2, ffn=32, dropout=0.0)


@pytest.fixture(scope="module")
def tiny_split():
    return leave_one_out(make_synthetic(SyntheticConfig(n_users=60, n_items=30, mean_len=10, max_len=20), seed=1))


def _inputs(rows: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 31, (rows, 8), generator=g)
    x[0, :3] = 0  # left padding
    return x


def test_shapes_and_per_step_states():
    model = LARES(LARESConfig(**TINY)).eval()
    x = _inputs()
    H, mask = model.prepare(x)
    assert H.shape == (4, 8, 16) and mask.shape == (4, 1, 8, 8)
    states = model.reason(H, mask, 5, model.initial_state(H, generator=torch.Generator().manual_seed(0)))
    assert len(states) == 5 and all(s.shape == (4, 8, 16) for s in states)
    assert model.score(states[-1]).shape == (4, 31)
    assert model(x, 3, generator=torch.Generator().manual_seed(0)).shape == (4, 31)
    assert not torch.allclose(states[0], states[1])  # every step refines the state


def test_causal_mask_future_items_do_not_change_earlier_states():
    model = LARES(LARESConfig(**TINY)).eval()
    x = _inputs()
    y = x.clone()
    y[:, 5:] = (y[:, 5:] % 30) + 1  # change positions 5..7 only
    noise = truncated_normal(np.random.default_rng(0), (4, 8, 16))
    outs = []
    for ids in (x, y):
        H, mask = model.prepare(ids)
        outs.append(model.reason(H, mask, 4, model.initial_state(H, torch.from_numpy(noise))))
    for a, b in zip(*outs):
        assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)
        assert not torch.allclose(a[:, 5:], b[:, 5:], atol=1e-4)


def test_leading_padding_columns_can_be_trimmed():
    model = LARES(LARESConfig(**TINY)).eval()
    x = _inputs()
    x[:, :2] = 0
    noise = torch.from_numpy(truncated_normal(np.random.default_rng(1), (4, 8, 16)))
    H, mask = model.prepare(x)
    full = model.score(model.reason(H, mask, 3, model.initial_state(H, noise))[-1])
    H2, mask2 = model.prepare(x[:, 2:])
    cut = model.score(model.reason(H2, mask2, 3, model.initial_state(H2, noise[:, 2:]))[-1])
    assert torch.allclose(full, cut, atol=1e-5)


def test_step_sampler_bounds_and_mean():
    steps = sample_steps(np.random.default_rng(0), 4.0, 0.5, 12, size=20000)
    assert steps.min() == 1 and steps.max() == 12
    assert 4.7 < steps.mean() < 5.3  # 1 + E[lambda] = 5, slightly lowered by the cap at 12
    assert isinstance(sample_steps(np.random.default_rng(0)), int)


def test_truncated_normal_is_bounded_and_deterministic():
    z = truncated_normal(np.random.default_rng(3), (200, 50))
    assert np.abs(z).max() <= 3.0 and z.dtype == np.float32 and abs(z.std() - 0.986) < 0.03
    assert np.array_equal(z, truncated_normal(np.random.default_rng(3), (200, 50)))


def test_spt_loss_finite_and_decreasing(tiny_split):
    torch.manual_seed(0)
    model = LARES(LARESConfig(**TINY))
    inputs, targets = training_windows(tiny_split, 8)
    rng = np.random.default_rng(0)
    partners = same_target_partners(targets[:, -1], rng)
    x, y, pos = (torch.from_numpy(a[:64]) for a in (inputs, targets, inputs[partners]))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, parts = spt_loss(model, x, y, pos, 3, rng)
        assert all(math.isfinite(v) for v in parts.values()) and parts["tla"] > 0 and parts["sla"] > 0
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts["loss"])
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])


def test_spt_loss_equals_the_padded_one_batch_loss(tiny_split):
    # T0 = 0 and no dropout make the loss deterministic; spt_loss trims padding, scores only positions
    # with a target and runs the positives in length chunks: it must equal one padded forward of all rows.
    # The intermediate-step CE (mid_ce) scores the step SLA draws
    model = LARES(LARESConfig(**TINY, init_scale=0.0, mid_ce=0.5)).train()
    inputs, targets = training_windows(tiny_split, 8)
    partners = same_target_partners(targets[:, -1], np.random.default_rng(0))
    short = np.tile(np.flatnonzero((inputs > 0).sum(1) <= 5), 2)  # 96 rows
    x, y, pos = (torch.from_numpy(a[short]) for a in (inputs, targets, inputs[partners]))
    assert trim_padding(x).shape[1] == 5 and len(x) > 64  # the batch is cut and the positives need 2 chunks
    loss, parts = spt_loss(model, x, y, pos, 3, np.random.default_rng(1))
    B = len(x)
    H, mask = model.prepare(torch.cat([x, pos]))
    states = model.reason(H, mask, 3, torch.zeros_like(H))
    z = states[-1][:, -1]
    same = y[:, -1, None] == y[None, :, -1]
    mid = states[int(np.random.default_rng(1).integers(2))]
    expected = {
        "ce": F.cross_entropy(model.score(states[-1][:B].reshape(-1, 16)), y.reshape(-1), ignore_index=0),
        "tla": info_nce(z[:B], z[B:], 1.0, same),
        "sla": info_nce(z[:B], mid[:B, -1], 1.0),
        "mid_ce": F.cross_entropy(model.score(mid[:B].reshape(-1, 16)), y.reshape(-1), ignore_index=0),
    }
    for key, value in expected.items():
        assert parts[key] == pytest.approx(value.item(), rel=1e-5), key
    weights = {"ce": 1.0, "tla": 0.1, "sla": 0.5, "mid_ce": 0.5}  # the authors' alpha and gamma
    assert loss.item() == pytest.approx(sum(w * expected[k].item() for k, w in weights.items()), rel=1e-5)


def test_training_windows_cover_each_transition_once(tiny_split):
    inputs, targets = training_windows(tiny_split, 8)
    n_transitions = sum(max(len(tiny_split.train_sequence(u)) - 1, 0) for u in range(tiny_split.n_users))
    assert (targets > 0).sum() == n_transitions
    assert ((inputs > 0) == (targets > 0)).all()  # every input position predicts its next item
    last_in, last_t = training_windows(tiny_split, 8, last_only=True)  # one most recent window per user
    seqs = [tiny_split.train_sequence(u) for u in range(tiny_split.n_users)]
    seqs = [q for q in seqs if len(q) >= 2]
    assert len(last_t) == len(seqs) and (last_t[:, -1] == [q[-1] for q in seqs]).all()
    assert (last_in[:, -1] == [q[-2] for q in seqs]).all()


def test_prefix_instances_score_only_their_last_position(tiny_split):
    inputs, targets = spt_instances(tiny_split, 8, "prefix")
    n_transitions = sum(max(len(tiny_split.train_sequence(u)) - 1, 0) for u in range(tiny_split.n_users))
    assert len(inputs) == n_transitions and (targets[:, :-1] == 0).all() and (targets[:, -1] > 0).all()
    seq = tiny_split.train_sequence(0)  # user 0's first instances: its first item, then its first two
    assert list(inputs[0, -1:]) == list(seq[:1]) and targets[0, -1] == seq[1]
    assert list(inputs[1, -2:]) == list(seq[:2]) and (inputs[1, :-2] == 0).all() and targets[1, -1] == seq[2]


def test_held_out_prefix_instances_are_the_train_stage_pairs(tiny_split):
    """hold_out_last removes exactly each user's last training pair, which is the split's "train" stage pair
    (what RPT's instances="held-out" trains on); every other pair stays, in order."""
    inputs, targets = spt_instances(tiny_split, 8, "prefix")
    kept_in, kept_t = spt_instances(tiny_split, 8, "prefix", hold_out_last=True)
    held_in, held_t = tiny_split.batch("train", tiny_split.users("train"), 8)
    assert len(kept_t) == len(targets) - len(held_t) > 0
    last = np.cumsum([max(len(tiny_split.train_sequence(u)) - 1, 0) for u in range(tiny_split.n_users)]) - 1
    last = np.unique(last[last >= 0])  # each user's last row of the full instances
    np.testing.assert_array_equal(inputs[last], held_in.numpy())
    np.testing.assert_array_equal(targets[last, -1], held_t.numpy())
    rest = np.setdiff1d(np.arange(len(targets)), last)
    np.testing.assert_array_equal(inputs[rest], kept_in)
    np.testing.assert_array_equal(targets[rest], kept_t)
    with pytest.raises(ValueError, match="hold_out_last = True needs windows='prefix', got windows='all'"):
        SPTConfig(hold_out_last=True)
    with pytest.raises(ValueError, match="instances = 'train'"):
        RPTConfig(instances="train")


def test_same_target_partners():
    targets = np.array([5, 5, 7, 5, 9, 7])
    p = same_target_partners(targets, np.random.default_rng(0))
    assert (targets[p] == targets).all()
    assert p[4] == 4 and (p[[0, 1, 2, 3, 5]] != [0, 1, 2, 3, 5]).all()


def test_group_advantages_hand_computed():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    std = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0, 1]
    expected = torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]) / torch.tensor([[std + 1e-4], [1e-4]])
    assert torch.allclose(group_advantages(r), expected)
    assert mixed_share(r) == 0.5  # the second group's rewards are all equal: no advantage
    assert mixed_share(torch.tensor([[0.0, 0.0], [0.0, 0.5], [0.3, 0.3], [1.0, 0.0]])) == 0.5
    assert torch.equal(rollout_advantages(r), group_advantages(r))
    assert torch.allclose(rollout_advantages(r, "positive"), expected.clamp(min=0))
    assert rollout_advantages(r, "positive")[0, 1] == 0.0  # the worse rollouts are not pushed down
    assert torch.equal(rollout_advantages(r, "uniform"), torch.ones(2, 4))
    with pytest.raises(ValueError, match="'signed'"):
        rollout_advantages(r, "signed")


def test_kl_k3_and_grpo_loss_hand_computed():
    ref = torch.tensor([math.log(0.5)])
    lp = torch.tensor([math.log(0.25)], requires_grad=True)
    kl = 2.0 - math.log(2.0) - 1.0  # exp(d) - d - 1 with d = log 2
    assert kl_k3(ref, lp).item() == pytest.approx(kl, rel=1e-6)
    assert kl_k3(ref, ref).item() == 0.0
    adv = torch.tensor(0.7)
    loss = grpo_loss(lp.view(1, 1), ref.view(1, 1), adv.view(1), beta=1.0)
    assert loss.item() == pytest.approx(-(0.7 - kl), rel=1e-6)  # the ratio is 1 in value
    loss.backward()
    # d/dlp of -(ratio A - beta k3) = -(A + beta (exp(ref - lp) - 1)) = -(0.7 + 1)
    assert lp.grad.item() == pytest.approx(-1.7, rel=1e-5)


def test_checkpoint_roundtrip_half(tmp_path):
    model = LARES(LARESConfig(**TINY)).eval()
    save_lares(model, tmp_path / "m.pt", half=True, meta={"note": "x"})
    back = load_lares(tmp_path / "m.pt")
    assert back.config == model.config and back.meta == {"note": "x"}
    assert load_lares_and_optimizer(tmp_path / "m.pt")[1] is None  # saved without one
    x = _inputs()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.allclose(model(x, 2, generator=g()), back(x, 2, generator=g()), atol=1e-2)


def test_loading_another_models_checkpoint_is_named():
    from simulators.recsys.preference_trm import load_trm
    from simulators.recsys.synthetic import SyntheticConfig, make_synthetic

    weights = Path(__file__).resolve().parents[1] / "simulators" / "recsys" / "weights"
    with pytest.raises(ValueError, match="trm_default.pt is not a recrail LARES checkpoint"):
        load_lares(weights / "trm_default.pt")
    with pytest.raises(ValueError, match="lares_default.pt is not a recrail TRM checkpoint"):
        load_trm(weights / "lares_default.pt", make_synthetic(SyntheticConfig(), seed=0))
    with pytest.raises(FileNotFoundError, match="LARES checkpoint nowhere.pt does not exist"):
        load_lares("nowhere.pt")


@pytest.mark.parametrize(
    "field, value",
    [("adapter", "sum"), ("eval_steps", 13), ("n_heads", 3), ("dropout", 1.0), ("n_core_layers", 0)],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        LARESConfig(**{**TINY, field: value})


@pytest.mark.parametrize("adapter", ["concat", "gated"])
def test_other_adapters_run(adapter):
    model = LARES(LARESConfig(**{**TINY, "adapter": adapter})).eval()
    assert torch.isfinite(model(_inputs(), 2, generator=torch.Generator().manual_seed(0))).all()


def test_init_from_sasrec_maps_embeddings_positions_and_layers():
    from simulators.recsys.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    sas = SASRec(SASRecConfig(n_items=30, hidden=16, n_layers=1, n_heads=2, inner=32, max_len=10))
    with torch.no_grad():  # trained-like scales, so LayerNorm's eps is negligible in the comparison below
        sas.item_embedding.weight.normal_()
        sas.position_embedding.weight.normal_()
    model = init_from_sasrec(LARES(LARESConfig(**TINY)), sas)
    assert torch.equal(model.item_embedding.weight, sas.item_embedding.weight)
    for layer in list(model.pre_block) + list(model.core_block):  # one SASRec block, reused by every layer
        assert torch.equal(layer.qkv.weight, sas.blocks[0].qkv.weight)
        assert torch.equal(layer.ff[2].bias, sas.blocks[0].ffn[3].bias)
    # right-aligned positions: LARES's normalised input equals that of SASRec's scaled embedding (LN is
    # scale invariant; the LN affine parameters are still at their identity init)
    x = _inputs()
    pos = torch.arange(8)
    mine = model.emb_ln(model.item_embedding(x) + model.position_embedding(pos))
    theirs = F.layer_norm(sas.item_embedding(x) * 4.0 + sas.position_embedding(pos + 2), (16,))
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="hidden"):
        init_from_sasrec(LARES(LARESConfig(**dict(TINY, hidden=8, n_heads=2))), sas)


@pytest.mark.parametrize("make", [lambda: SPTConfig(windows="recent"), lambda: RPTConfig(eval_every=0),
                                  lambda: SPTConfig(eval_users=0), lambda: RPTConfig(eval_users=-5),
                                  lambda: RPTConfig(max_instances=0), lambda: RPTConfig(max_instances=-5),
                                  lambda: RPTConfig(time_budget_s=0), lambda: SPTConfig(time_budget_s=-5.0)])
def test_training_configs_reject_bad_values(make):
    with pytest.raises(ValueError, match="windows|eval_every|eval_users|max_instances|time_budget_s"):
        make()


def test_rpt_rejects_a_cutoff_no_rollout_can_miss_and_logs_the_batches_it_ran(tiny_split):
    from agents.lares_post_training import train_rpt

    spt = LARES(LARESConfig(**TINY)).eval()
    with pytest.raises(ValueError, match=f"RPTConfig.k = {TINY['n_items']} is invalid"):
        train_rpt(spt, tiny_split, RPTConfig(k=TINY["n_items"], progress=False))
    config = RPTConfig(epochs=2, batch_size=16, eval_users=None, filter_top=30, progress=False, time_budget_s=1e-9)
    history = train_rpt(spt, tiny_split, config)[1]
    assert [h["epoch"] for h in history] == [-1, 0] and history[-1]["batch"] == 1  # the budget ended it after one


def test_rpt_with_no_instance_left_keeps_the_spt_model(tiny_split, monkeypatch):
    import agents.lares_post_training as lpt

    monkeypatch.setattr(lpt, "filter_instances", lambda *args, **kwargs: np.array([], dtype=np.int64))
    spt = LARES(LARESConfig(**TINY)).eval()
    model, history = lpt.train_rpt(spt, tiny_split, RPTConfig(epochs=1, eval_users=None, progress=False))
    assert history[-1]["batch"] == 0 and lpt.rpt_kept_spt(history)


def test_cli_init_is_for_the_rpt_phase_only(tmp_path, capsys):
    from agents.lares_post_training import main

    with pytest.raises(SystemExit):
        main(["--default-world", "--phase", "spt", "--init", str(tmp_path / "x.pt"), "--out", str(tmp_path / "m.pt")])
    assert "--init applies to --phase rpt only (got --phase spt)" in capsys.readouterr().err


def test_cli_passes_the_spt_loss_weights_and_dropout_to_the_model(tmp_path):
    from agents.lares_post_training import main
    from simulators.recsys.lares import load_lares

    out = tmp_path / "m.pt"
    main(["--default-world", "--phase", "spt", "--epochs", "1", "--eval-users", "50", "--max-len", "4",
          "--alpha-tla", "0", "--gamma-sla", "0.25", "--mid-ce", "0.75", "--dropout", "0.5", "--out", str(out)])
    config = load_lares(out).config
    assert (config.alpha_tla, config.gamma_sla, config.mid_ce, config.dropout) == (0.0, 0.25, 0.75, 0.5)
    assert load_lares_and_optimizer(out)[1]["param_groups"][0]["lr"] == SPTConfig.lr  # resumable: Adam's state is kept
    with pytest.raises(ValueError, match="alpha_tla = -1.0"):
        main(["--default-world", "--phase", "spt", "--alpha-tla", "-1", "--out", str(out)])
    with pytest.raises(ValueError, match="dropout = 1.0"):
        main(["--default-world", "--phase", "spt", "--dropout", "1", "--out", str(out)])


def test_cli_passes_the_rpt_settings_and_the_anneal_phase(tmp_path, monkeypatch):
    import agents.lares_post_training as post_training
    from simulators.recsys.lares import load_lares

    seen, held_out = [], []
    monkeypatch.setattr(post_training, "train_rpt", lambda model, split, config: seen.append(config) or (model, []))
    real_instances = post_training.spt_instances
    monkeypatch.setattr(post_training, "spt_instances",
                        lambda *a: held_out.append(a[3]) or real_instances(*a))
    out = tmp_path / "m.pt"
    post_training.main(["--default-world", "--phase", "both", "--epochs", "1", "--eval-users", "50", "--max-len", "4",
                        "--windows", "prefix", "--hold-out-last", "--rpt-reward", "ndcg", "--rpt-k", "20",
                        "--rpt-beta", "0.5", "--rpt-dropout", "shared", "--rpt-advantage", "positive",
                        "--rpt-instances", "held-out", "--anneal-epochs", "1", "--anneal-lr", "1e-4",
                        "--rpt-action", "list", "--rpt-list-samples", "3", "--rpt-list-temperature", "0.5",
                        "--out", str(out)])
    assert (seen[0].reward, seen[0].k, seen[0].beta, seen[0].dropout, seen[0].advantage, seen[0].instances) == (
        "ndcg", 20, 0.5, "shared", "positive", "held-out")
    assert (seen[0].action, seen[0].list_samples, seen[0].list_temperature) == ("list", 3, 0.5)
    assert held_out == [True]
    assert [h["epoch"] for h in load_lares(out).meta["history"]] == [0, 1]  # the SPT epoch and the low-lr one
    assert (tmp_path / "m_rpt.pt").is_file()
    with pytest.raises(ValueError, match="beta = -1.0"):
        post_training.main(["--default-world", "--phase", "rpt", "--init", str(out), "--rpt-beta", "-1",
                            "--out", str(out)])


def test_rpt_dropout_option_sets_the_kl_before_the_weights_move(tiny_split):
    """With weights that do not move (lr 1e-12), "policy" dropout alone makes the KL to the reference
    positive; "shared" (the reference replays the policy's masks) and "off" leave it at zero. "shared" does
    not change the policy's draws: its rewards equal "policy"'s."""
    from agents.lares_post_training import train_rpt

    spt = LARES(LARESConfig(**{**TINY, "dropout": 0.3})).eval()
    logs = {}
    for dropout in RPTConfig.DROPOUT:
        config = RPTConfig(epochs=1, lr=1e-12, batch_size=16, eval_users=None, filter_top=30, progress=False,
                           dropout=dropout)
        logs[dropout] = train_rpt(spt, tiny_split, config)[1][-1]
    assert logs["policy"]["kl"] > 1e-5
    assert logs["shared"]["kl"] < 1e-9 and logs["off"]["kl"] < 1e-9
    assert logs["shared"]["reward"] == logs["policy"]["reward"] != logs["off"]["reward"]
    assert 0.0 < logs["policy"]["mixed"] < 1.0
    with pytest.raises(ValueError, match="dropout = 'both'"):
        RPTConfig(dropout="both")
    with pytest.raises(ValueError, match="advantage = 'signed'"):
        RPTConfig(advantage="signed")


def _seen(inputs: torch.Tensor) -> torch.Tensor:
    """The items of ``inputs`` and padding id 0 as an exclusion mask over TINY's items."""
    mask = torch.zeros(len(inputs), TINY["n_items"] + 1, dtype=torch.bool).scatter(1, inputs, True)
    mask[:, 0] = True  # as LeaveOneOutSplit.prefix_history_mask: padding is never ranked
    return mask


def test_rpt_advantage_mode_reaches_the_loss():
    """With beta 0 and the ratio at 1, the loss is minus the mean advantage over rollouts: 0 for GRPO's
    group-normalised one, below 0 for its positive part, exactly -1 for the uniform control; the rollouts
    (rewards) do not depend on the mode."""
    from agents.lares_post_training import rpt_batch_loss

    torch.manual_seed(0)
    model = LARES(LARESConfig(**TINY)).eval()
    inputs, targets = _inputs(16), torch.randint(1, 31, (16,), generator=torch.Generator().manual_seed(1))
    parts = {}
    for mode in RPTConfig.ADVANTAGES:
        config = RPTConfig(beta=0.0, advantage=mode, group_size=8, reward="ndcg", k=30)
        parts[mode] = rpt_batch_loss(model, model, inputs, targets, _seen(inputs), config, np.random.default_rng(0),
                                     torch.Generator().manual_seed(0))[1]
    assert parts["grpo"]["mixed"] > 0  # else every mode's advantage would be trivially equal
    assert parts["grpo"]["reward"] == parts["positive"]["reward"] == parts["uniform"]["reward"]
    assert parts["grpo"]["loss"] == pytest.approx(0.0, abs=1e-6)
    assert parts["positive"]["loss"] < -0.1
    assert parts["uniform"]["loss"] == pytest.approx(-1.0)


def test_rpt_list_action_normalises_the_advantage_over_every_drawn_list():
    """With action="list" each of the G rollouts draws list_samples lists: the reward is that of the lists
    (not the deterministic ranking's), GRPO's advantages over the G x list_samples lists average 0, the uniform
    control's loss is exactly -1 at beta 0, and the policy's own lists have a KL of 0 to itself."""
    from agents.lares_post_training import rpt_batch_loss

    torch.manual_seed(0)
    model = LARES(LARESConfig(**TINY)).eval()
    inputs, targets = _inputs(16), torch.randint(1, 31, (16,), generator=torch.Generator().manual_seed(1))
    parts = {}
    for action, advantage in [("target", "grpo"), ("list", "grpo"), ("list", "uniform")]:
        config = RPTConfig(beta=0.0, advantage=advantage, group_size=4, reward="ndcg", k=5, action=action,
                           list_samples=3, list_temperature=0.5, dropout="shared")
        loss, parts[action, advantage] = rpt_batch_loss(model, model, inputs, targets, _seen(inputs), config,
                                                        np.random.default_rng(0), torch.Generator().manual_seed(0))
        assert loss.requires_grad and torch.isfinite(loss)
    listed = parts["list", "grpo"]
    assert listed["reward"] != parts["target", "grpo"]["reward"]
    assert 0 < listed["mixed"] <= 1 and listed["kl"] == pytest.approx(0.0, abs=1e-9)
    assert listed["loss"] == pytest.approx(0.0, abs=1e-6)
    assert parts["list", "uniform"]["loss"] == pytest.approx(-1.0)
    for bad, match in [({"action": "ranking"}, "action = 'ranking'"), ({"list_samples": 0}, "list_samples = 0"),
                       ({"list_temperature": 0.0}, "list_temperature = 0.0"),
                       ({"action": "list"}, "action = 'list' with dropout = 'policy'")]:
        with pytest.raises(ValueError, match=match):
            RPTConfig(**bad)


@pytest.mark.parametrize("lr", [1e-9, 3e-2])  # a step too small to change validation, and a large one
def test_train_rpt_returns_its_best_validation_entry(tiny_split, lr):
    """RPT returns the model of its best validation entry; epoch -1 (the SPT model itself) when nothing beat it."""
    from agents.lares_post_training import _valid_metric, rpt_kept_spt, train_rpt

    torch.manual_seed(0)
    spt = LARES(LARESConfig(**TINY)).eval()
    config = RPTConfig(epochs=2, lr=lr, batch_size=16, eval_users=None, eval_every=2, filter_top=30,
                       progress=False)
    rpt, history = train_rpt(spt, tiny_split, config)
    assert history[0]["epoch"] == -1 and len(history) > 2
    best = max(history, key=lambda h: h["NDCG@10"])
    same = all(torch.equal(a, b) for a, b in zip(spt.state_dict().values(), rpt.state_dict().values()))
    assert rpt_kept_spt(history) == same == (best["epoch"] == -1)
    users = tiny_split.users("valid")
    assert _valid_metric(rpt, tiny_split, users, config.seed)["NDCG@10"] == pytest.approx(best["NDCG@10"])
    assert same == (lr < 1e-3)  # each case takes the branch it is for (else it tests nothing)


@pytest.mark.parametrize("lr", [1e-9, 3e-2])  # a step too small to change validation, and a large one
def test_train_spt_resumes_a_checkpoint(tiny_split, tmp_path, lr):
    """Resumed SPT numbers epochs after the checkpoint's, keeps its history and returns the best model, the
    resumed weights included (validation on the same users, so the history's best entry is the returned model);
    Adam continues from the checkpoint's moments with the new learning rate."""
    from agents.lares_post_training import _valid_metric, train_spt

    config = LARESConfig(**TINY)
    first, history, adam = train_spt(tiny_split, config, SPTConfig(epochs=2, lr=1e-2, batch_size=16,
                                                                   eval_users=None, progress=False))
    path = tmp_path / "spt.pt"
    save_lares(first, path, meta={"phase": "spt", "history": history}, optimizer=adam)
    resumed, more, adam_after = train_spt(tiny_split, config, SPTConfig(epochs=2, lr=lr, batch_size=16,
                                                                        eval_users=None, progress=False,
                                                                        resume_from=path))
    assert [h["epoch"] for h in more] == [0, 1, 2, 3] and more[:2] == history
    assert more[2]["elapsed_s"] >= history[-1]["elapsed_s"]
    users = tiny_split.users("valid")
    got = _valid_metric(resumed, tiny_split, users, 0)["NDCG@10"]
    assert got == pytest.approx(max(h["NDCG@10"] for h in more))
    kept = all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), resumed.state_dict().values()))
    assert kept == (max(h["NDCG@10"] for h in more[2:]) <= max(h["NDCG@10"] for h in history))
    assert kept == (lr < 1e-3)  # each case takes the branch it is for
    # Adam's step count goes on from the checkpoint's best epoch (first improvement kept on ties)
    steps = lambda state: {int(v["step"]) for v in state["state"].values()}  # noqa: E731
    ndcg = [h["NDCG@10"] for h in more]
    (saved,) = steps(adam)
    per_epoch = saved // (int(np.argmax(ndcg[:2])) + 1)
    assert steps(adam_after) == {saved if kept else saved + (int(np.argmax(ndcg[2:])) + 1) * per_epoch}
    assert [g["lr"] for g in adam_after["param_groups"]] == [lr]

    with pytest.raises(ValueError, match="dropout"):
        train_spt(tiny_split, LARESConfig(**dict(TINY, dropout=0.1)), SPTConfig(resume_from=path, progress=False))
    # the loss settings shape training only: a resumed run may change them, and its model records its own
    other_loss = LARESConfig(**dict(TINY, alpha_tla=0.0, mid_ce=1.0))
    assert train_spt(tiny_split, other_loss, SPTConfig(epochs=1, batch_size=16, eval_users=None, progress=False,
                                                       resume_from=path))[0].config == other_loss
    save_lares(first, path, meta={"phase": "spt", "epoch": 1})  # an in-progress file: no history
    with pytest.raises(ValueError, match="history absent"):
        train_spt(tiny_split, config, SPTConfig(resume_from=path, progress=False))
    with pytest.raises(ValueError, match="at most one"):
        SPTConfig(resume_from=path, init_from=path)


def test_train_spt_anneal_phase_equals_a_resume_from_the_best_epoch(tiny_split, tmp_path):
    """SPTConfig.anneal_epochs continues in-process exactly as resume_from on the main phase's checkpoint at
    anneal_lr: the same weights, Adam state and epoch logs (bit for bit), the best of both phases kept."""
    from agents.lares_post_training import train_spt

    config = LARESConfig(**TINY)
    main = SPTConfig(epochs=2, lr=1e-2, batch_size=16, eval_users=None, progress=False)
    first, history, adam = train_spt(tiny_split, config, main)
    path = tmp_path / "spt.pt"
    save_lares(first, path, meta={"phase": "spt", "history": history}, optimizer=adam)
    resumed = train_spt(tiny_split, config, dataclasses.replace(main, lr=3e-3, resume_from=path))
    annealed = train_spt(tiny_split, config, dataclasses.replace(main, anneal_epochs=2, anneal_lr=3e-3))
    strip = lambda hist: [{k: v for k, v in h.items() if k != "elapsed_s"} for h in hist]  # noqa: E731
    assert [h["epoch"] for h in annealed.history] == [0, 1, 2, 3]
    assert strip(annealed.history) == strip(resumed.history)
    for a, b in zip(annealed.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert str(annealed.optimizer_state) == str(resumed.optimizer_state)
    # the phase changed the model (else the comparison above says nothing)
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), annealed.model.state_dict().values()))


@pytest.mark.parametrize("epochs, lr", [(-1, None), (2, None), (0, 1e-4), (2, 0.0)])
def test_spt_config_rejects_a_bad_anneal_phase(epochs, lr):
    with pytest.raises(ValueError, match=f"anneal_(epochs|lr) = {lr!r}" if epochs >= 0 else "anneal_epochs = -1"):
        SPTConfig(anneal_epochs=epochs, anneal_lr=lr)


def test_train_rpt_trains_on_the_instances_it_is_given(tiny_split):
    """With a filter every target passes (top-30 of 30 items), RPT's instance count is every training pair for
    instances="prefix" and one per user with a "train" stage pair for "held-out"."""
    from agents.lares_post_training import train_rpt

    spt = LARES(LARESConfig(**TINY)).eval()
    counts = {}
    for instances in RPTConfig.INSTANCES:
        config = RPTConfig(epochs=1, batch_size=16, eval_users=None, filter_top=30, progress=False,
                           instances=instances)
        counts[instances] = train_rpt(spt, tiny_split, config)[1][0]["instances"]
    assert counts["held-out"] == len(tiny_split.users("train"))
    assert counts["prefix"] == len(tiny_split.prefix_instances(8)[1]) > counts["held-out"]
