"""The top-10 stability screen: its features by hand and the generic threshold rule."""

import numpy as np
import pytest

from agents.baselines.latent_reasoning import DepthTraces, state_change_rule, threshold_rule
from benchmarks.lares_rank_stability import rule_features, stability


def test_stability_counts_shared_items_and_kept_positions():
    top = np.array([[[1, 2, 3], [2, 1, 3], [2, 1, 3], [7, 8, 9]]])  # one user, depths 1-4, top-3 lists
    s = stability(top)
    np.testing.assert_array_equal(s["top-10 overlap"], [[0, 3, 3, 0]])
    np.testing.assert_array_equal(s["top-10 positions"], [[0, 1, 3, 0]])


def test_threshold_rule_stops_where_the_feature_is_low_and_keeps_the_budget():
    # two users: user 0 gains nothing after depth 1, user 1 gains at depth 3; the feature says so
    ndcg = np.array([[0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]])
    feature = np.array([[9.0, 0.0, 0.0, 0.0], [9.0, 5.0, 0.0, 0.0]])
    traces = DepthTraces(np.array([0, 1]), np.zeros((2, 4, 1)), feature, ndcg)
    # the budget binds the steps' upper bound (2.5 + 1.645 x 0.5 over two users): fixed depth 3 at 3.0, then the rule
    assert threshold_rule(traces, feature, max_mean_steps=3.0).steps == 3.0
    rule = threshold_rule(traces, feature, max_mean_steps=3.5)
    assert (rule.ndcg, rule.steps) == (0.75, 2.5)  # user 0 stops at 2, user 1 at 3
    assert rule == state_change_rule(traces, 3.5)  # the state change is the feature there
    with pytest.raises(ValueError, match="feature has shape"):
        threshold_rule(traces, feature[:, :3])
    top = np.zeros((2, 4, 10), int)
    features = rule_features(DepthTraces(traces.users, traces.obs, feature, ndcg, top))
    assert set(features) == {"state change", "top-10 overlap", "top-10 positions"}
    assert features["top-10 overlap"][0, 1] == -10  # oriented: stop where it is low
