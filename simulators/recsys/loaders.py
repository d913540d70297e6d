"""Loaders: the interaction-data formats people have, each to one :class:`InteractionDataset`.

Formats:
- ``recbole``: RecBole atomic files ``<name>.inter`` (required), ``<name>.item``, ``<name>.user``;
  tab-separated, header ``field:type`` (types token, token_seq, float, float_seq). Interactions are
  ordered per user by the ``timestamp`` field when present (stable: ties keep file order).
  Item titles come from the first of ``movie_title``/``title``/``item_name``/``name``; attributes
  are the tokens of every other ``token_seq`` field (e.g. genres) and ``field:value`` of every other
  ``token`` field (e.g. ``release_year:1995``). ``.user`` features go to ``meta["user_features"]``.
- ``sequence``: one user per line, ``user item1 item2 ...`` in time order (SASRec/S3-Rec), plus an
  optional item text TSV (``item_id <tab> ... <tab> text``, header allowed; last column = title)
  and an optional JSON ``{item_id: [attribute, ...]}``. Beside ``X.txt`` these are found
  automatically as ``X_item_text.tsv`` and ``X_item2attributes.json``.
- ``movielens``: raw GroupLens releases, detected by file name: 100K (``u.data``, ``u.item``,
  ``u.genre``), 1M/10M (``ratings.dat``, ``movies.dat``, ``::``-separated) and the CSV releases
  (``ratings.csv`` with its header ``userId,movieId,rating,timestamp``, ``movies.csv``). Ordered per
  user by timestamp (stable: ties keep file order); genres are the attributes.
- ``synthetic``: :func:`simulators.recsys.synthetic.make_synthetic` (no file).

Options (all file formats; the synthetic world rejects them): ``min_rating`` keeps interactions with rating >= it (implicit feedback;
formats without ratings reject it), ``k_core`` repeatedly drops users and items with fewer than k
interactions until none remain, ``max_seq_len`` keeps each user's most recent items. Internal item
ids follow numeric order of the original ids when all are integers, else first appearance. Repeated
(user, item) interactions are kept (repeat consumption). Malformed files (a wrong field count, an
empty id, a number that is not finite, a header where the format has none, text that is not in the
file's encoding) raise :class:`DatasetFormatError` naming the file, the line and what was expected.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .dataset import PAD_TOKEN, InteractionDataset

FORMATS = ("auto", "recbole", "sequence", "movielens", "synthetic")
_TITLE_FIELDS = ("movie_title", "title", "item_name", "name")
_USER_HEADERS = ("user", "user_id", "userid", "uid", "user_id:token")  # a first line that names columns
_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)


class DatasetFormatError(ValueError):
    """A data file does not match its format: names the file, the line and what was expected."""

    def __init__(self, path: Path | str, line: int | None, expected: str, got: str | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        msg = f"{where}: expected {expected}"
        if got is not None:
            msg += f", got {got[:120]!r}"
        super().__init__(msg)


# (user, item, rating or None, timestamp or None, file order) rows, as parsed from any format
Row = tuple[str, str, float | None, float | None, int]


_UNDECODED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bytes the encoding cannot decode


def _lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline) for non-empty lines (\\n, \\r\\n and \\r all end a line);
    a byte the encoding cannot decode names its line."""
    with path.open(encoding=encoding, errors="surrogateescape", newline="") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if _UNDECODED.search(line):
                shown = line.encode(encoding, "surrogateescape").decode(encoding, "replace")
                raise DatasetFormatError(path, number, f"{encoding}-encoded text", shown)
            if line.strip():
                yield number, line


def _number(path: Path, line: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetFormatError(path, line, f"a number for {what}", text) from None
    if not np.isfinite(value):  # a NaN timestamp would break the time order silently
        raise DatasetFormatError(path, line, f"a finite number for {what}", text)
    return value


def _ids(path: Path, line: int, user: str, item: str) -> tuple[str, str]:
    """The (user, item) ids of a row, stripped; an empty one raises."""
    user, item = user.strip(), item.strip()
    if not user or not item:
        raise DatasetFormatError(path, line, "non-empty user and item ids", f"user {user!r}, item {item!r}")
    return user, item


def _build(
    name: str,
    rows: list[Row],
    titles: dict[str, str],
    attributes: dict[str, tuple[str, ...]],
    *,
    k_core: int | None,
    min_rating: float | None,
    max_seq_len: int | None,
    meta: dict,
    source: Path,
) -> InteractionDataset:
    """Filter, order and index parsed rows into an InteractionDataset."""
    if k_core is not None and k_core < 1:
        raise ValueError(f"k_core must be None or an int >= 1, got {k_core}")
    if max_seq_len is not None and max_seq_len < 1:
        raise ValueError(f"max_seq_len must be None or an int >= 1, got {max_seq_len}")
    if min_rating is not None:
        if any(r[2] is None for r in rows[:1]):
            raise ValueError(f"min_rating={min_rating} given but {source} has no ratings")
        rows = [r for r in rows if r[2] >= min_rating]
    # time order per user: by timestamp when present, file order otherwise (stable)
    rows.sort(key=lambda r: (r[3] if r[3] is not None else 0.0, r[4]))
    seqs: dict[str, list[str]] = {}
    for user, item, *_ in rows:
        seqs.setdefault(user, []).append(item)
    if k_core is not None:
        while True:
            item_count: dict[str, int] = {}
            for items in seqs.values():
                for it in items:
                    item_count[it] = item_count.get(it, 0) + 1
            kept = {u: [it for it in items if item_count[it] >= k_core] for u, items in seqs.items()}
            kept = {u: items for u, items in kept.items() if len(items) >= k_core}
            if sum(map(len, kept.values())) == sum(map(len, seqs.values())):
                break
            seqs = kept
    if max_seq_len is not None:
        seqs = {u: items[-max_seq_len:] for u, items in seqs.items()}
    if not seqs:
        raise ValueError(f"no interactions left in {source} after filtering (k_core={k_core}, min_rating={min_rating})")
    first_seen: dict[str, None] = {}
    for items in seqs.values():
        first_seen.update(dict.fromkeys(items))
    originals = list(first_seen)
    if all(it.lstrip("-").isdecimal() for it in originals):
        originals.sort(key=int)
    index = {it: i + 1 for i, it in enumerate(originals)}
    meta = dict(meta, source=str(source), k_core=k_core, min_rating=min_rating, max_seq_len=max_seq_len)
    return InteractionDataset(
        name=name,
        n_items=len(originals),
        user_ids=list(seqs),
        item_ids=[PAD_TOKEN] + originals,
        sequences=[np.array([index[it] for it in items], dtype=np.int64) for items in seqs.values()],
        item_titles=[""] + [titles.get(it, f"item {it}") for it in originals],
        item_attributes=[()] + [attributes.get(it, ()) for it in originals],
        meta=meta,
    )


# ----------------------------------------------------------------------------- RecBole atomic
def _atomic(path: Path) -> tuple[list[tuple[str, str]], list[tuple[int, list[str]]]]:
    """Header [(name, type)] and [(line, cells)] of a RecBole atomic file."""
    lines = _lines(path)
    try:
        number, header = next(lines)
    except StopIteration:
        raise DatasetFormatError(path, 1, "a header line 'field:type<TAB>field:type...'") from None
    fields = []
    for cell in header.split("\t"):
        fname, sep, ftype = cell.partition(":")
        if not sep or ftype not in ("token", "token_seq", "float", "float_seq"):
            raise DatasetFormatError(path, number, "header cells 'name:type' with type token|token_seq|float|float_seq", cell)
        fields.append((fname, ftype))
    rows = []
    for number, line in lines:
        cells = line.split("\t")
        if len(cells) != len(fields):
            raise DatasetFormatError(path, number, f"{len(fields)} tab-separated fields", line)
        rows.append((number, cells))
    return fields, rows


def _field(path: Path, fields: list[tuple[str, str]], name: str, required: bool = True) -> int | None:
    names = [f for f, _ in fields]
    if name in names:
        return names.index(name)
    if required:
        raise DatasetFormatError(path, 1, f"a '{name}' field in the header", "\t".join(names))
    return None


def load_recbole(
    folder_or_prefix: str | Path,
    *,
    k_core: int | None = None,
    min_rating: float | None = None,
    max_seq_len: int | None = None,
) -> InteractionDataset:
    """Load RecBole atomic files from a folder (``folder/folder.inter`` or its only ``.inter``) or a
    path prefix (``prefix.inter``, ``prefix.item``, ``prefix.user``)."""
    p = Path(folder_or_prefix)
    if p.suffix in (".inter", ".item", ".user"):
        p = p.with_suffix("")
    if p.is_dir():
        candidates = sorted(p.glob("*.inter"))
        preferred = p / f"{p.name}.inter"
        if preferred.is_file():
            inter = preferred
        elif len(candidates) == 1:
            inter = candidates[0]
        else:
            raise FileNotFoundError(f"{p}: expected {preferred.name} or exactly one .inter file, found {[c.name for c in candidates]}")
    else:
        inter = p.with_name(p.name + ".inter")
        if not inter.is_file():
            raise FileNotFoundError(f"RecBole interaction file {inter} does not exist")
    prefix = inter.with_suffix("")
    fields, raw = _atomic(inter)
    ui, ii = _field(inter, fields, "user_id"), _field(inter, fields, "item_id")
    ri, ti = _field(inter, fields, "rating", False), _field(inter, fields, "timestamp", False)
    rows: list[Row] = [
        (
            *_ids(inter, n, cells[ui], cells[ii]),
            _number(inter, n, cells[ri], "rating") if ri is not None else None,
            _number(inter, n, cells[ti], "timestamp") if ti is not None else None,
            n,
        )
        for n, cells in raw
    ]
    titles: dict[str, str] = {}
    attributes: dict[str, tuple[str, ...]] = {}
    item_file = prefix.with_name(prefix.name + ".item")
    if item_file.is_file():
        ifields, iraw = _atomic(item_file)
        idx = _field(item_file, ifields, "item_id")
        title_idx = next((i for i, (f, _) in enumerate(ifields) if f in _TITLE_FIELDS), None)
        for _, cells in iraw:
            item = cells[idx]
            if title_idx is not None:
                titles[item] = cells[title_idx]
            attrs: list[str] = []
            for i, (fname, ftype) in enumerate(ifields):
                if i in (idx, title_idx) or not cells[i]:
                    continue
                if ftype == "token_seq":
                    attrs.extend(cells[i].split())
                elif ftype == "token":
                    attrs.append(f"{fname}:{cells[i]}")
            attributes[item] = tuple(attrs)
    meta: dict = {"format": "recbole"}
    user_file = prefix.with_name(prefix.name + ".user")
    if user_file.is_file():
        ufields, uraw = _atomic(user_file)
        uidx = _field(user_file, ufields, "user_id")
        meta["user_features"] = {
            cells[uidx]: {f: cells[i] for i, (f, _) in enumerate(ufields) if i != uidx} for _, cells in uraw
        }
    return _build(prefix.name, rows, titles, attributes, k_core=k_core, min_rating=min_rating,
                  max_seq_len=max_seq_len, meta=meta, source=inter)


# ----------------------------------------------------------------------------- sequence per line
def load_sequence_text(
    path: str | Path,
    item_text: str | Path | None = None,
    item_attributes: str | Path | None = None,
    *,
    k_core: int | None = None,
    min_rating: float | None = None,
    max_seq_len: int | None = None,
) -> InteractionDataset:
    """Load ``user item1 item2 ...`` lines (time order) plus optional item text TSV and attribute JSON.

    Without explicit side files, ``<stem>_item_text.tsv`` / ``<stem>_item2attributes.json`` beside
    ``path`` are used when present.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sequence file {path} does not exist")
    if min_rating is not None:
        raise ValueError(f"min_rating={min_rating} given but {path} (sequence format) has no ratings")
    rows: list[Row] = []
    seen_users: set[str] = set()
    for number, line in _lines(path):
        cells = line.split()
        if len(cells) < 2:
            raise DatasetFormatError(path, number, "'user item1 item2 ...' with at least one item", line)
        if not rows and cells[0].lower() in _USER_HEADERS:
            raise DatasetFormatError(path, number, "a data line (the sequence format has no header)", line)
        if cells[0] in seen_users:
            raise DatasetFormatError(path, number, f"each user on one line; user {cells[0]!r} appears again", line)
        seen_users.add(cells[0])
        rows.extend((cells[0], item, None, None, len(rows) + k) for k, item in enumerate(cells[1:]))
    item_text = Path(item_text) if item_text else path.with_name(path.stem + "_item_text.tsv")
    item_attributes = Path(item_attributes) if item_attributes else path.with_name(path.stem + "_item2attributes.json")
    titles: dict[str, str] = {}
    if item_text.is_file():
        for number, line in _lines(item_text):
            cells = line.split("\t")
            if len(cells) < 2:
                raise DatasetFormatError(item_text, number, "'item_id<TAB>...<TAB>text' (at least 2 tab-separated columns)", line)
            if number == 1 and cells[0].lower() in ("item_id", "item", "id"):
                continue
            titles[cells[0]] = cells[-1].strip()
    attributes: dict[str, tuple[str, ...]] = {}
    if item_attributes.is_file():
        try:
            blob = json.loads(item_attributes.read_text())
        except json.JSONDecodeError as err:
            raise DatasetFormatError(item_attributes, err.lineno, "valid JSON {item_id: [attribute, ...]}", err.msg) from None
        if not isinstance(blob, dict) or not all(isinstance(v, list) for v in blob.values()):
            raise DatasetFormatError(item_attributes, None, "a JSON object mapping item ids to lists of attributes")
        attributes = {str(k): tuple(str(a) for a in v) for k, v in blob.items()}
    meta = {"format": "sequence", "item_text": str(item_text) if titles else None,
            "item_attributes": str(item_attributes) if attributes else None}
    return _build(path.stem, rows, titles, attributes, k_core=k_core, min_rating=None,
                  max_seq_len=max_seq_len, meta=meta, source=path)


# ----------------------------------------------------------------------------- MovieLens raw
def _split_ratings(path: Path, sep: str, header: str | None) -> list[Row]:
    """Rows of a ratings file with 4 fields ``user item rating timestamp`` per line, after ``header`` if given."""
    rows: list[Row] = []
    lines = _lines(path, encoding="latin-1")
    if header is not None:
        number, line = next(lines, (1, ""))
        if line.strip() != header:
            raise DatasetFormatError(path, number, f"the header {header!r}", line)
    for number, line in lines:
        cells = line.split(sep) if sep != "whitespace" else line.split()
        if len(cells) != 4:
            raise DatasetFormatError(path, number, "4 fields 'user item rating timestamp'", line)
        rows.append((*_ids(path, number, cells[0], cells[1]), _number(path, number, cells[2], "rating"),
                     _number(path, number, cells[3], "timestamp"), number))
    return rows


def load_movielens(
    folder: str | Path,
    *,
    k_core: int | None = None,
    min_rating: float | None = None,
    max_seq_len: int | None = None,
) -> InteractionDataset:
    """Load a raw MovieLens release folder (100K, 1M/10M ``.dat`` or the CSV releases; detected)."""
    folder = Path(folder)
    titles: dict[str, str] = {}
    attributes: dict[str, tuple[str, ...]] = {}
    if (folder / "u.data").is_file():
        release, rows = "100k", _split_ratings(folder / "u.data", "whitespace", None)
        genres = list(_ML100K_GENRES)
        if (folder / "u.genre").is_file():
            pairs = [line.split("|") for _, line in _lines(folder / "u.genre", encoding="latin-1")]
            genres = [name for name, *_ in sorted(pairs, key=lambda p: int(p[1]))]
        if (folder / "u.item").is_file():
            for number, line in _lines(folder / "u.item", encoding="latin-1"):
                cells = line.split("|")
                if len(cells) != 5 + len(genres) or not all(c in ("0", "1") for c in cells[5:]):
                    raise DatasetFormatError(folder / "u.item", number,
                                             f"'id|title|date|video date|url' and {len(genres)} 0/1 genre flags", line)
                titles[cells[0]] = cells[1]
                attributes[cells[0]] = tuple(g for g, flag in zip(genres, cells[5:]) if flag == "1")
    elif (folder / "ratings.dat").is_file():
        release, rows = "1m", _split_ratings(folder / "ratings.dat", "::", None)
        if (folder / "movies.dat").is_file():
            for number, line in _lines(folder / "movies.dat", encoding="latin-1"):
                cells = line.split("::")
                if len(cells) != 3:
                    raise DatasetFormatError(folder / "movies.dat", number, "'id::title::Genre|Genre'", line)
                titles[cells[0]] = cells[1]
                attributes[cells[0]] = tuple(g for g in cells[2].split("|") if g)
    elif (folder / "ratings.csv").is_file():
        release, rows = "csv", _split_ratings(folder / "ratings.csv", ",", "userId,movieId,rating,timestamp")
        movies = folder / "movies.csv"
        if movies.is_file():
            with movies.open(encoding="utf-8", newline="") as fh:
                for number, cells in enumerate(csv.reader(fh), start=1):
                    if number == 1 or not cells:
                        continue
                    if len(cells) != 3:
                        raise DatasetFormatError(movies, number, "'movieId,title,genres' (3 CSV fields)", ",".join(cells))
                    titles[cells[0]] = cells[1]
                    attributes[cells[0]] = tuple(g for g in cells[2].split("|") if g and g != "(no genres listed)")
    else:
        raise FileNotFoundError(f"{folder}: no MovieLens ratings file (u.data, ratings.dat or ratings.csv) found")
    return _build(f"ml-{release}", rows, titles, attributes, k_core=k_core, min_rating=min_rating,
                  max_seq_len=max_seq_len, meta={"format": "movielens", "release": release}, source=folder)


# ----------------------------------------------------------------------------- dispatch
def detect_format(path: str | Path) -> str:
    """Guess the format of ``path`` (see the module docstring); raises ValueError when unsure."""
    p = Path(path)
    if p.is_dir():
        if any((p / f).is_file() for f in ("u.data", "ratings.dat", "ratings.csv")):
            return "movielens"
        if any(p.glob("*.inter")):
            return "recbole"
        texts = sorted(p.glob("*.txt"))
        if len(texts) == 1:
            return "sequence"
    elif p.suffix == ".inter" or p.with_name(p.name + ".inter").is_file():
        return "recbole"
    elif p.is_file():
        return "sequence"
    raise ValueError(f"cannot detect the dataset format of {p}; pass format= one of {FORMATS[1:]}")


def load_dataset(path: str | Path | None, format: str = "auto", **options) -> InteractionDataset:
    """Load a dataset in ``format`` (one of FORMATS; "auto" detects it). ``options``: ``k_core``,
    ``min_rating``, ``max_seq_len``; for "sequence" also ``item_text``, ``item_attributes``; for
    "synthetic" ``config`` and ``seed`` (``path`` is ignored)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "synthetic" or (format == "auto" and path in (None, "synthetic")):
        from .synthetic import SyntheticConfig, make_synthetic

        filters = sorted(k for k in ("k_core", "min_rating", "max_seq_len") if options.get(k) is not None)
        if filters:  # the generated world has no ratings and is shaped by its SyntheticConfig, not filtered
            raise ValueError(f"options {filters} apply to dataset files; the synthetic world takes config= (a "
                             "SyntheticConfig: n_users, n_items, min_len, max_len, ...) and seed=")

        return make_synthetic(options.get("config", SyntheticConfig()), options.get("seed", 0))
    p = Path(path)
    if not p.exists() and not p.with_name(p.name + ".inter").exists():
        raise FileNotFoundError(f"dataset path {p} does not exist")
    fmt = detect_format(p) if format == "auto" else format
    if fmt == "sequence" and p.is_dir():
        (p,) = sorted(p.glob("*.txt"))
    loader = {"recbole": load_recbole, "sequence": load_sequence_text, "movielens": load_movielens}[fmt]
    return loader(p, **options)
