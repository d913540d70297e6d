"""All loaders on tiny fixture files written here (incl. malformed files), options, real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.recsys.loaders import (
    DatasetFormatError,
    detect_format,
    load_dataset,
    load_movielens,
    load_recbole,
    load_sequence_text,
)


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def _seq(ds, user: str) -> list[str]:
    return [ds.item_ids[i] for i in ds.sequences[ds.user_ids.index(user)]]


# ------------------------------------------------------------------ RecBole atomic
@pytest.fixture
def recbole_dir(tmp_path: Path) -> Path:
    d = tmp_path / "toy"
    _write(d / "toy.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
           "u1\t10\t5\t300\nu1\t20\t2\t100\nu2\t10\t4\t50\nu1\t30\t4\t200\nu2\t30\t1\t60\n")
    _write(d / "toy.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
           "10\tAlpha\t1995\tAction Comedy\n20\tBeta\t1990\tDrama\n30\tGamma\t2001\t\n")
    _write(d / "toy.user", "user_id:token\tage:token\nu1\t24\nu2\t53\n")
    return d


def test_recbole_orders_by_time_and_reads_side_info(recbole_dir: Path) -> None:
    ds = load_recbole(recbole_dir)
    assert ds.name == "toy" and ds.n_items == 3 and ds.n_users == 2
    assert _seq(ds, "u1") == ["20", "30", "10"]  # by timestamp, not file order
    assert ds.item_ids == ["<pad>", "10", "20", "30"]  # numeric original order
    assert ds.item_titles[1] == "Alpha"
    assert ds.item_attributes[1] == ("release_year:1995", "Action", "Comedy")
    assert ds.meta["user_features"]["u2"] == {"age": "53"}
    assert load_recbole(recbole_dir / "toy").n_items == 3  # prefix form
    assert detect_format(recbole_dir) == "recbole"


def test_recbole_min_rating_and_k_core(recbole_dir: Path) -> None:
    ds = load_recbole(recbole_dir, min_rating=4)
    assert _seq(ds, "u1") == ["30", "10"] and _seq(ds, "u2") == ["10"]
    cored = load_recbole(recbole_dir, k_core=2)  # item 20 has 1 interaction: dropped
    assert cored.n_items == 2 and _seq(cored, "u1") == ["30", "10"]
    with pytest.raises(ValueError, match="no interactions left"):
        load_recbole(recbole_dir, k_core=3)


def test_recbole_malformed(tmp_path: Path) -> None:
    bad = _write(tmp_path / "b" / "b.inter", "user_id:token\titem_id:token\ttimestamp:float\nu1\t1\t5\nu1\t2\n")
    with pytest.raises(DatasetFormatError, match=r"b\.inter:3: expected 3 tab-separated fields"):
        load_recbole(bad.parent)
    _write(bad, "user_id:token\titem_id:token\ttimestamp:float\nu1\t1\tyesterday\n")
    with pytest.raises(DatasetFormatError, match=r"b\.inter:2: expected a number for timestamp"):
        load_recbole(bad.parent)
    _write(bad, "user:token\titem_id:token\nu1\t1\n")
    with pytest.raises(DatasetFormatError, match="'user_id' field"):
        load_recbole(bad.parent)
    _write(bad, "user_id\titem_id:token\nu1\t1\n")
    with pytest.raises(DatasetFormatError, match=r"b\.inter:1: expected header cells"):
        load_recbole(bad.parent)
    # a NaN timestamp would break the time order: 50, nan, 30 sorted put 30 last
    _write(bad, "user_id:token\titem_id:token\ttimestamp:float\nu1\t1\t50\nu1\t2\tnan\nu1\t3\t30\n")
    with pytest.raises(DatasetFormatError, match=r"b\.inter:3: expected a finite number for timestamp, got 'nan'"):
        load_recbole(bad.parent)
    _write(bad, "user_id:token\titem_id:token\nu1\t1\n\t2\n")
    with pytest.raises(DatasetFormatError, match=r"b\.inter:3: expected non-empty user and item ids"):
        load_recbole(bad.parent)
    bad.write_bytes(b"user_id:token\titem_id:token\nu1\t1\nu2\tcaf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(DatasetFormatError, match=r"b\.inter:3: expected utf-8-encoded text"):
        load_recbole(bad.parent)


# ------------------------------------------------------------------ sequence per line
def test_sequence_text_with_side_files(tmp_path: Path) -> None:
    path = _write(tmp_path / "Toy.txt", "1 3 1 2\n2 2 3\n3 1 2 3 4\n")
    _write(tmp_path / "Toy_item_text.tsv", "item_id\tasin\ttext\n1\tA1\tred lipstick\n2\tA2\tnail polish\n")
    _write(tmp_path / "Toy_item2attributes.json", json.dumps({"1": [7, 8], "4": [9]}))
    ds = load_sequence_text(path)
    assert ds.n_items == 4 and ds.n_users == 3
    assert ds.item_ids[1:] == ["1", "2", "3", "4"]  # internal id == original id for 1..n files
    assert ds.sequences[0].tolist() == [3, 1, 2]
    assert ds.item_titles[1] == "red lipstick" and ds.item_titles[3] == "item 3"
    assert ds.item_attributes[1] == ("7", "8") and ds.item_attributes[2] == ()
    assert load_sequence_text(path, max_seq_len=2).sequences[2].tolist() == [3, 4]
    assert load_dataset(tmp_path).n_items == 4  # folder with one .txt: auto-detected
    with pytest.raises(ValueError, match="has no ratings"):
        load_sequence_text(path, min_rating=3)


def test_sequence_text_malformed(tmp_path: Path) -> None:
    path = _write(tmp_path / "S.txt", "1 3 1\n2\n")
    with pytest.raises(DatasetFormatError, match=r"S\.txt:2: expected 'user item1 item2 \.\.\.'"):
        load_sequence_text(path)
    _write(path, "1 3 1\n1 2 2\n")
    with pytest.raises(DatasetFormatError, match=r"S\.txt:2: .*appears again"):
        load_sequence_text(path)
    path.write_bytes(b"1 1 2 3\r2 2 3 4\r3 1 3\r")  # old Mac line ends: three users, not one
    assert load_sequence_text(path).n_users == 3
    _write(path, "user_id item_ids\n1 1 2 3\n2 2 3 4\n")
    with pytest.raises(DatasetFormatError, match=r"S\.txt:1: expected a data line \(the sequence format has no header\)"):
        load_sequence_text(path)
    _write(path, "1 3 1\n")
    _write(tmp_path / "S_item2attributes.json", "{\"1\": [1,\n")
    with pytest.raises(DatasetFormatError, match=r"S_item2attributes\.json:2: expected valid JSON"):
        load_sequence_text(path)


# ------------------------------------------------------------------ MovieLens raw releases
def test_movielens_100k(tmp_path: Path) -> None:
    d = tmp_path / "ml-100k"
    _write(d / "u.data", "1\t10\t5\t300\n1\t20\t3\t100\n2\t20\t4\t100\n")
    flags = ["0"] * 19
    comedy = flags.copy()
    comedy[5] = "1"
    _write(d / "u.item", f"10|Toy Story (1995)|01-Jan-1995||http://x|{'|'.join(comedy)}\n"
           f"20|Heat (1995)|01-Jan-1995||http://y|{'|'.join(flags)}\n", encoding="latin-1")
    ds = load_movielens(d)
    assert ds.name == "ml-100k" and _seq(ds, "1") == ["20", "10"]
    assert ds.item_titles[1] == "Toy Story (1995)" and ds.item_attributes[1] == ("Comedy",)
    _write(d / "u.item", "10|Toy Story|01-Jan-1995||http://x|0|1\n")
    with pytest.raises(DatasetFormatError, match=r"u\.item:1: expected .*19 0/1 genre flags"):
        load_movielens(d)


def test_movielens_1m(tmp_path: Path) -> None:
    d = tmp_path / "ml-1m"
    _write(d / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::2::978300000\n")
    _write(d / "movies.dat", "1193::One Flew Over (1975)::Drama\n661::James (1996)::Animation|Children's\n",
           encoding="latin-1")
    ds = load_movielens(d, min_rating=3)
    assert ds.n_users == 1 and _seq(ds, "1") == ["1193", "661"]
    assert ds.item_attributes[ds.item_ids.index("661")] == ("Animation", "Children's")
    assert detect_format(d) == "movielens"
    _write(d / "ratings.dat", "1::1193::5\n")
    with pytest.raises(DatasetFormatError, match=r"ratings\.dat:1: expected 4 fields 'user item rating timestamp'"):
        load_movielens(d)
    _write(d / "ratings.dat", "1::1193::5::978300760::x\n")  # an extra field is not silently dropped
    with pytest.raises(DatasetFormatError, match=r"ratings\.dat:1: expected 4 fields"):
        load_movielens(d)
    _write(d / "ratings.dat", "1::1193::5::978300760\n::661::3::978302109\n")
    with pytest.raises(DatasetFormatError, match=r"ratings\.dat:2: expected non-empty user and item ids"):
        load_movielens(d)


def test_movielens_csv(tmp_path: Path) -> None:
    d = tmp_path / "ml-latest-small"
    _write(d / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n")
    _write(d / "movies.csv", 'movieId,title,genres\n1,"Toy Story, The (1995)",Adventure|Animation\n'
           "3,Grumpier Old Men (1995),(no genres listed)\n")
    ds = load_dataset(d)
    assert ds.name == "ml-csv" and _seq(ds, "1") == ["3", "1"]
    assert ds.item_titles[1] == "Toy Story, The (1995)" and ds.item_attributes[2] == ()
    _write(d / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,four,964982703\n")
    with pytest.raises(DatasetFormatError, match=r"ratings\.csv:2: expected a number for rating"):
        load_movielens(d)
    _write(d / "ratings.csv", "1,1,4.0,964982703\n1,3,4.5,964981247\n")  # no header: line 1 is not dropped
    with pytest.raises(DatasetFormatError, match=r"ratings\.csv:1: expected the header 'userId,movieId,rating,timestamp'"):
        load_movielens(d)


def test_load_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format must be one of"):
        load_dataset(tmp_path, format="parquet")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="cannot detect"):
        load_dataset(tmp_path)
    with pytest.raises(ValueError, match="k_core"):
        _write(tmp_path / "s.txt", "1 2 3\n")
        load_dataset(tmp_path / "s.txt", k_core=0)


# ------------------------------------------------------------------ real data (skips when absent)
def test_real_beauty(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "amazon-beauty")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (22363, 12101, 198502)
    assert ds.item_ids[1:4] == ["1", "2", "3"] and ds.item_titles[1] == "nail lacquer simmer and shimmer"
    assert all(len(s) >= 5 for s in ds.sequences)


def test_real_ml100k(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "ml-100k")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100000)
    assert ds.item_titles[1] == "Toy Story" and "Animation" in ds.item_attributes[1]
    assert load_dataset(shared_data / "ml-100k", min_rating=4).n_interactions == 55375


@settings(max_examples=25)
@given(st.lists(st.lists(st.integers(1, 12), min_size=1, max_size=12), min_size=1, max_size=25), st.integers(1, 4))
def test_k_core_property(tmp_path_factory: pytest.TempPathFactory, seqs: list[list[int]], k: int) -> None:
    path = tmp_path_factory.mktemp("kcore") / "P.txt"
    path.write_text("".join(f"u{u} {' '.join(map(str, s))}\n" for u, s in enumerate(seqs)))
    try:
        ds = load_sequence_text(path, k_core=k)
    except ValueError as err:  # everything filtered away is allowed, and said so
        assert "no interactions left" in str(err)
        return
    counts = ds.item_counts()[1:]
    assert counts.min() >= k and min(len(s) for s in ds.sequences) >= k
    for user, s in zip(ds.user_ids, ds.sequences):  # order kept: a subsequence of the original
        original = iter(seqs[int(user[1:])])
        assert all(any(str(x) == ds.item_ids[i] for x in original) for i in s)


def test_synthetic_format() -> None:
    ds = load_dataset(None, format="synthetic")
    assert ds.name == "synthetic" and ds.n_items == 400
