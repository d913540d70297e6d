"""Paired comparison of two bench runs on the users both evaluated."""

import numpy as np
import pandas as pd
import pytest

from benchmarks.compare_runs import compare, load_per_user, markdown


def _table(policy: str, users: list[int], ndcg: list[float], steps: float | None = None) -> pd.DataFrame:
    return pd.DataFrame({"user": users, "policy": policy, "NDCG@10": ndcg, "Recall@10": 0.0,
                         "steps": np.nan if steps is None else steps})


def test_differences_are_paired_on_the_common_users():
    a = pd.concat([_table("p", [1, 2, 3], [0.5, 0.2, 0.9], 2.0), _table("only A", [1], [1.0])])
    b = pd.concat([_table("p", [2, 3, 4], [0.1, 0.3, 0.0], 4.0), _table("only B", [1], [1.0])])
    (r,) = compare(a, b).to_dict("records")
    # users 2 and 3: A 0.2, 0.9; B 0.1, 0.3 -> differences 0.1, 0.6
    assert r["policy"] == "p" and r["users"] == 2
    assert r["NDCG@10 A"] == pytest.approx(0.55) and r["NDCG@10 B"] == pytest.approx(0.2)
    assert r["A - B"] == pytest.approx(0.35) and r["lo"] <= 0.35 <= r["hi"]
    assert (r["steps A"], r["steps B"]) == (2.0, 4.0)
    assert "| p | 2 | 0.5500 | 0.2000 | +0.3500 [" in markdown(compare(a, b))


def test_bad_requests_name_what_is_allowed(tmp_path):
    a = _table("p", [1], [0.5])
    with pytest.raises(ValueError, match=r"policies \['q'\] are not in both runs; the common ones: \['p'\]"):
        compare(a, a, ["q"])
    with pytest.raises(ValueError, match="share no"):
        compare(a, _table("p", [2], [0.5]))
    twice = _table("p", [1, 2, 3, 3], [0.5, 0.2, 0.0, 0.9])  # a merge would pair user 3 twice
    with pytest.raises(ValueError, match="run B lists user 3 of policy 'p' more than once"):
        compare(_table("p", [1, 2, 3], [0.5, 0.2, 0.9]), twice)
    with pytest.raises(FileNotFoundError, match="ml-100k.*per_user.csv.gz does not exist"):
        load_per_user(tmp_path, "ml-100k")
    (tmp_path / "ml-100k").mkdir()
    a.drop(columns="steps").to_csv(tmp_path / "ml-100k" / "per_user.csv.gz", index=False)
    with pytest.raises(ValueError, match=r"lacks the columns \['steps'\]"):
        load_per_user(tmp_path, "ml-100k")
