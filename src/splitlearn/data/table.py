"""Tables of your own: one CSV file (a row per sample), or one CSV per site for vertical data.

Numeric columns become features; a non-numeric feature column is refused by name unless
``categorical="onehot"``; a missing value is refused by row and column unless ``impute="mean"``.
Rows are numbered as in a spreadsheet: the header is row 1, the first data row is row 2. The
train/test split is stratified and seeded (for vertical tables, a seeded hash of each id, which
every site computes alone), and every statistic (scaler, imputed values, one-hot categories)
comes from the training split only. pandas reads the files, and is imported only
when a table is loaded.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splitlearn.data.dataset import ArrayDataset, DataError
from splitlearn.data.partition import stratified_split

__all__ = ["CATEGORICAL", "IMPUTE", "SiteTable", "VerticalTables", "load_csv", "load_site_csv", "load_vertical_csv"]

CATEGORICAL = ("refuse", "onehot")  # what to do with non-numeric feature columns
IMPUTE = ("none", "mean")  # what to do with missing feature values
_HEADER_ROWS = 2  # spreadsheet row of data row 0: rows count from 1, and the header is row 1


def _read(path: str | os.PathLike) -> Any:
    """The CSV at ``path`` as a DataFrame whose index is the 0-based data row."""
    import pandas as pd  # here, not at import: pandas adds about 0.3 s to every command's start

    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist" if not path.exists() else f"{path} is not a CSV file but a folder")
    try:
        frame = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", low_memory=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"CSV file {path} is empty") from None
    except UnicodeDecodeError as e:
        raise DataError(f"CSV file {path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except (pd.errors.ParserError, ValueError) as e:
        raise DataError(f"cannot read CSV file {path}: {' '.join(str(e).split())}") from None
    if not len(frame):
        raise DataError(f"CSV file {path} has a header but no data rows")
    with path.open(newline="", encoding="utf-8-sig") as f:
        header = [c.strip() for c in next(csv.reader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))]
    twice = sorted({c for c in header if header.count(c) > 1 and c})
    if twice:
        raise DataError(f"CSV file {path}: the header names column {twice[0]!r} more than once")
    frame.columns = [str(c).strip() for c in frame.columns]
    unnamed = [i + 1 for i, c in enumerate(frame.columns) if c.startswith("Unnamed: ")]
    if unnamed:
        raise DataError(f"CSV file {path}: column {unnamed[0]} has no name in the header row")
    return frame.reset_index(drop=True)


def _column(frame, path: Path, name: str, what: str) -> Any:
    if name not in frame.columns:
        shown = ", ".join(repr(c) for c in list(frame.columns)[:12]) + (", ..." if len(frame.columns) > 12 else "")
        raise DataError(f"CSV file {path} has no {what} column {name!r}; its columns are {shown}")
    return frame[name]


def _row(frame_row: int) -> int:
    return int(frame_row) + _HEADER_ROWS


def _no_missing(series, path: Path, what: str) -> None:
    missing = series.isna().to_numpy()
    if missing.any():
        raise DataError(f"CSV file {path}: row {_row(series.index[missing.argmax()])} has no value in {what} column {series.name!r}")


def _labels(series, path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices of the label column, and the class names (its sorted distinct values)."""
    import pandas as pd

    _no_missing(series, path, "label")
    if pd.api.types.is_float_dtype(series):
        fractional = (series != series.round()).to_numpy()
        if fractional.any():
            i = fractional.argmax()
            raise DataError(f"CSV file {path}: label column {series.name!r} holds {series.iloc[i]} in row "
                            f"{_row(series.index[i])}; labels must be classes (whole numbers or names), not measurements")
        series = series.astype("int64")
    if not pd.api.types.is_numeric_dtype(series):
        series = series.astype(str).str.strip()
    values, codes = np.unique(series.to_numpy(), return_inverse=True)
    if len(values) < 2:
        raise DataError(f"CSV file {path}: label column {series.name!r} holds one class ({values[0]!r}); training needs two or more")
    return codes.astype(np.int64).reshape(-1), tuple(str(v) for v in values.tolist())


def _sample_ids(series, path: Path) -> np.ndarray:
    """Integer ids are the sample ids; other ids (e.g. 'P-0012') give way to 0-based row numbers."""
    import pandas as pd

    _no_missing(series, path, "id")
    first = {}
    for row, value in zip(series.index, series.tolist()):
        if value in first:
            raise DataError(f"CSV file {path}: row {_row(row)} repeats id {value!r} of row {_row(first[value])} in id column {series.name!r}")
        first[value] = row
    if pd.api.types.is_integer_dtype(series):
        return np.array(series.to_numpy(), dtype=np.int64)  # a copy: pandas' arrays may be read-only
    return np.array(series.index, dtype=np.int64)


@dataclass(frozen=True)
class _Encoder:
    """Feature columns to a float32 matrix, with statistics fitted on training rows only."""

    numeric: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]  # one-hot column -> its training categories, sorted
    mean: np.ndarray
    std: np.ndarray
    fill: dict[str, Any]  # column -> imputed value (impute = "mean")

    @property
    def names(self) -> tuple[str, ...]:
        return self.numeric + tuple(f"{c}={v}" for c, cats in self.categories.items() for v in cats)

    def __call__(self, frame) -> np.ndarray:
        frame = frame.fillna(self.fill) if self.fill else frame
        numeric = (frame[list(self.numeric)].to_numpy(dtype=np.float64) - self.mean) / self.std
        onehot = [(frame[c].astype(str).str.strip().to_numpy()[:, None] == np.array(cats, dtype=object)[None, :])
                  for c, cats in self.categories.items()]
        return np.hstack([numeric, *onehot]).astype(np.float32) if onehot else numeric.astype(np.float32)


def _not_numeric(frame, path: Path, categorical: str) -> list[str]:
    """Names of the columns that are not numbers; refused (by name, with an example) unless one-hot."""
    import pandas as pd

    names = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if names and categorical == "refuse":
        examples = []
        for c in names:
            bad = (pd.to_numeric(frame[c], errors="coerce").isna() & frame[c].notna()).to_numpy()
            i = bad.argmax()
            examples.append(f"{c!r} ({frame[c].iloc[i]!r} in row {_row(frame.index[i])})")
        raise DataError(f"CSV file {path}: feature column{'s' if len(names) > 1 else ''} {', '.join(examples)} "
                        f"{'are' if len(names) > 1 else 'is'} not numeric; one-hot encode with --categorical onehot "
                        "(data.categorical = \"onehot\"), or remove them")
    return names


def _refuse_missing(frame, path: Path, impute: str) -> None:
    values = frame.to_numpy(dtype=object)
    missing = frame.isna().to_numpy()
    import pandas as pd

    numeric = np.array([pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame.columns])
    infinite = np.zeros_like(missing)
    if numeric.any():
        infinite[:, numeric] = ~np.isfinite(frame.loc[:, numeric].to_numpy(dtype=np.float64)) & ~missing[:, numeric]
    if infinite.any():
        r, c = np.argwhere(infinite)[0]
        raise DataError(f"CSV file {path}: row {_row(frame.index[r])}, column {frame.columns[c]!r} holds {values[r, c]}, not a finite number")
    if missing.any() and impute == "none":
        r, c = np.argwhere(missing)[0]
        more = int(missing.sum()) - 1
        raise DataError(f"CSV file {path}: row {_row(frame.index[r])}, column {frame.columns[c]!r} has no value"
                        + (f" ({more} more missing)" if more else "")
                        + "; fill it in, or pass --impute mean (data.impute = \"mean\") to impute the training split's mean")


def _fit(frame, train: np.ndarray, path: Path, *, categorical: str, impute: str) -> _Encoder:
    """An encoder for ``frame``'s feature columns fitted on the rows at positions ``train``."""
    if not len(frame.columns):
        raise DataError(f"CSV file {path} has no feature columns")
    if categorical not in CATEGORICAL:
        raise ValueError(f"categorical must be one of {', '.join(CATEGORICAL)}, got {categorical!r}")
    if impute not in IMPUTE:
        raise ValueError(f"impute must be one of {', '.join(IMPUTE)}, got {impute!r}")
    names = _not_numeric(frame, path, categorical)
    _refuse_missing(frame, path, impute)
    fit = frame.iloc[train]
    fill = {}
    if impute == "mean":
        for c in frame.columns[frame.isna().any().to_numpy()]:
            known = fit[c].dropna()
            if not len(known):
                raise DataError(f"CSV file {path}: column {c!r} has no value in the training split to impute from")
            # numbers: the training mean; categories: the most frequent training value (ties: the first sorted)
            fill[c] = known.astype(str).str.strip().value_counts().sort_index(kind="stable").idxmax() if c in names else float(known.mean())
    numeric = tuple(c for c in frame.columns if c not in names)
    values = (fit.fillna(fill) if fill else fit)[list(numeric)].to_numpy(dtype=np.float64)
    mean, std = values.mean(0), values.std(0)
    categories = {c: tuple(sorted(set((fit[c].fillna(fill[c]) if c in fill else fit[c]).astype(str).str.strip()))) for c in names}
    return _Encoder(numeric, categories, mean, np.where(std > 0, std, 1.0), fill)


def load_csv(
    path: str | os.PathLike,
    *,
    label_column: str | None,
    id_column: str | None = None,
    categorical: str = "refuse",
    impute: str = "none",
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
) -> tuple[ArrayDataset, ArrayDataset]:
    """The table at ``path`` (a row per sample) as a stratified, seeded (train, test) pair.

    Every column other than ``label_column`` and ``id_column`` is a feature. Numeric features
    are standardised with the training split's mean and standard deviation (a constant column
    stays centred). A non-numeric feature column is refused by name unless ``categorical`` is
    ``"onehot"``, which adds a 0/1 column per category seen in the training split (named
    ``column=value``; a test value not seen there sets none of them). A missing feature value is
    refused by row and column unless ``impute`` is ``"mean"``: numbers take the training
    split's mean, categories its most frequent value. A missing label or id is always refused.

    Classes are the label column's distinct values, sorted. Integer ids become the sample ids;
    without an id column, or with ids that are not integers, sample ids are the 0-based data
    row numbers. ``name`` defaults to the file name without its suffix.
    """
    path = Path(path)
    if not label_column:
        raise DataError(f"the table {path} needs the name of its label column: pass --label-column (data.label_column)")
    frame = _read(path)
    labels, classes = _labels(_column(frame, path, label_column, "label"), path)
    if id_column == label_column:
        raise DataError(f"CSV file {path}: the id column and the label column are both {label_column!r}")
    ids = _sample_ids(_column(frame, path, id_column, "id"), path) if id_column else np.array(frame.index, dtype=np.int64)
    features = frame.drop(columns=[c for c in (label_column, id_column) if c])
    train, test = (t.numpy() for t in stratified_split(torch.from_numpy(labels), test_fraction=test_fraction, seed=seed))
    encode = _fit(features, train, path, categorical=categorical, impute=impute)
    full = ArrayDataset(torch.from_numpy(encode(features)), torch.from_numpy(labels), torch.from_numpy(ids),
                        classes=classes, name=path.stem if name is None else name)
    return full.subset(torch.from_numpy(train)), full.subset(torch.from_numpy(test))


def _hash(text: str, *, salt: str = "") -> int:
    """A 63-bit integer from ``text`` that every process and platform computes alike."""
    digest = hashlib.blake2b(text.encode(), digest_size=8, person=b"splitlearn-ids", salt=salt.encode()[:16]).digest()
    return int.from_bytes(digest, "big") >> 1


def _site_ids(series, path: Path) -> np.ndarray:
    """Sample ids of a site's id column, the same at every site for the same id without the sites
    talking: integer ids are themselves; any other id (e.g. 'P-0012', stripped) a 63-bit hash of it."""
    import pandas as pd

    _sample_ids(series, path)  # present, complete and unique as written
    if pd.api.types.is_integer_dtype(series):
        return np.array(series.to_numpy(), dtype=np.int64)
    text = series.astype(str).str.strip()
    first: dict[int, int] = {}
    for row, value in zip(text.index, text.tolist()):
        key = _hash(value)
        if key in first:
            raise DataError(f"CSV file {path}: row {_row(row)} repeats id {value!r} of row {_row(first[key])} in id column "
                            f"{series.name!r} (ids are compared without surrounding spaces)")
        first[key] = row
    return np.fromiter(first, dtype=np.int64, count=len(first))


def _in_test(ids: np.ndarray, *, test_fraction: float, seed: int) -> np.ndarray:
    """Whether each sample id falls in the test split: a seeded hash of the id alone, so that every
    site puts a patient in the same split without knowing the others' rows."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    salt = str(seed)
    return np.array([_hash(str(int(i)), salt=salt) < test_fraction * 2**63 for i in ids], dtype=bool)


@dataclass(frozen=True)
class SiteTable:
    """One site's table for vertical training: its rows, split into train and test by a seeded hash
    of each id (:func:`load_site_csv`) and sorted by sample id, with the site's own columns; the
    label site's labels too."""

    name: str  # the file name without its suffix
    path: Path
    columns: tuple[str, ...]  # the encoded feature columns (one-hot ones as column=value)
    train_ids: torch.Tensor  # int64 sample ids, ascending
    train: torch.Tensor  # float32 (len(train_ids), len(columns))
    test_ids: torch.Tensor
    test: torch.Tensor
    ids: dict[int, Any]  # sample id -> the id as written in the file
    classes: tuple[str, ...] | None = None  # the label site only: the label column's distinct values, sorted
    train_labels: torch.Tensor | None = None  # int64 class indices, aligned with train_ids
    test_labels: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return len(self.ids)

    def rows_of(self, part: str, ids: torch.Tensor) -> torch.Tensor:
        """Positions of sample ``ids`` (all held here) in this site's ``part``, "train" or "test"."""
        own = getattr(self, f"{part}_ids")
        at = torch.searchsorted(own, ids)
        if len(ids) and (int(at.max()) >= len(own) or not torch.equal(own[at], ids)):
            raise ValueError(f"{self.path}: some of the asked sample ids are not in its {part} split")
        return at


def load_site_csv(
    path: str | os.PathLike,
    *,
    id_column: str,
    label_column: str | None = None,
    holds_labels: bool = True,
    categorical: str = "refuse",
    impute: str = "none",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> SiteTable:
    """One site's CSV of vertical data, as the site reads it alone: ``id_column`` and its feature
    columns, and ``label_column`` if it ``holds_labels`` (otherwise a column of that name is
    refused: it would be taken for a feature).

    A row goes to the test split by a seeded hash of its id, not by a stratified draw, so that
    every site puts a patient in the same split without seeing the others' files. Features are
    encoded as by :func:`load_csv`, with statistics from this site's training rows.
    """
    path = Path(path)
    frame = _read(path)
    if label_column and not holds_labels:
        if label_column in frame.columns:
            raise DataError(f"CSV file {path} holds the label column {label_column!r}, but this site holds no labels "
                            "(another site's CSV holds them, data.label_site)")
        label_column = None
    return _site_table(frame, path, id_column=id_column, label_column=label_column, categorical=categorical,
                       impute=impute, test_fraction=test_fraction, seed=seed)


def _site_table(frame, path: Path, *, id_column: str, label_column: str | None, categorical: str, impute: str,
                test_fraction: float, seed: int) -> SiteTable:
    if not id_column:
        raise DataError(f"vertical tables are aligned by id: name the id column of {path} (--id-column, data.id_column)")
    if label_column == id_column:
        raise DataError(f"CSV file {path}: the id column and the label column are both {label_column!r}")
    ids = _site_ids(_column(frame, path, id_column, "id"), path)
    labels, classes = _labels(_column(frame, path, label_column, "label"), path) if label_column else (None, None)
    order = np.argsort(ids, kind="stable")
    in_test = _in_test(ids[order], test_fraction=test_fraction, seed=seed)
    train, test = order[~in_test], order[in_test]
    if not len(train):
        raise DataError(f"CSV file {path}: none of its {len(ids)} rows falls in the training split")
    features = frame.drop(columns=[c for c in (id_column, label_column) if c])
    encode = _fit(features, train, path, categorical=categorical, impute=impute)
    x = torch.from_numpy(encode(features))
    t = lambda rows: torch.from_numpy(np.ascontiguousarray(rows))  # noqa: E731
    y = None if labels is None else torch.from_numpy(labels)
    written = frame[id_column].tolist()
    return SiteTable(path.stem, path, encode.names, t(ids[train]), x[t(train)], t(ids[test]), x[t(test)],
                     {int(ids[r]): written[r] for r in order}, classes,
                     None if y is None else y[t(train)], None if y is None else y[t(test)])


@dataclass(frozen=True)
class VerticalTables:
    """Several sites' columns of the same samples: the sample ids every site holds, ascending.

    Row ``j`` of site ``i``'s features of ``part`` ("train" or "test") is :meth:`features`
    ``(i, part)[j]``, the sample ``train_ids[j]`` (``test_ids[j]``); the labels come from
    ``label_site``.
    """

    sites: tuple[SiteTable, ...]
    label_site: str
    id_column: str
    classes: tuple[str, ...]
    train_ids: torch.Tensor  # int64 sample ids of the training split that every site holds, ascending
    test_ids: torch.Tensor
    train_labels: torch.Tensor  # int64 class indices, aligned with train_ids
    test_labels: torch.Tensor

    @property
    def ids(self) -> dict[int, Any]:
        """Sample id -> the id as written, for the aligned samples."""
        return {int(i): self.sites[0].ids[int(i)] for i in torch.cat([self.train_ids, self.test_ids]).sort().values}

    @property
    def widths(self) -> list[int]:
        """Each site's number of feature columns, in site order."""
        return [len(s.columns) for s in self.sites]

    @property
    def label_index(self) -> int:
        return [s.name for s in self.sites].index(self.label_site)

    @property
    def dropped(self) -> dict[str, int]:
        """Rows each site dropped: its ids that some other site does not hold."""
        aligned = len(self.train_ids) + len(self.test_ids)
        return {s.name: s.rows - aligned for s in self.sites}

    def summary(self) -> str:
        """One line: how many samples were aligned, and how many rows each site dropped."""
        aligned = len(self.train_ids) + len(self.test_ids)
        drops = ", ".join(f"{s.name} {s.rows - aligned} of {s.rows}" for s in self.sites)
        return f"aligned {aligned} samples by {self.id_column!r} across {len(self.sites)} sites; rows dropped: {drops}"

    def features(self, site: int, part: str) -> torch.Tensor:
        """Site ``site``'s columns of the aligned samples of ``part`` ("train" or "test")."""
        s = self.sites[site]
        return getattr(s, part)[s.rows_of(part, getattr(self, f"{part}_ids"))]

    def merged(self) -> tuple[ArrayDataset, ArrayDataset]:
        """Every site's columns side by side, in site order, as one (train, test) pair: the single
        array that a vertical split with chunk sizes :attr:`widths` cuts back into the sites' columns."""
        def one(part: str) -> ArrayDataset:
            return ArrayDataset(torch.cat([self.features(i, part) for i in range(len(self.sites))], dim=1),
                                getattr(self, f"{part}_labels"), getattr(self, f"{part}_ids"),
                                classes=self.classes, name="+".join(s.name for s in self.sites))

        return one("train"), one("test")


def load_vertical_csv(
    paths: Sequence[str | os.PathLike],
    *,
    id_column: str,
    label_column: str,
    categorical: str = "refuse",
    impute: str = "none",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> VerticalTables:
    """One CSV per site, each with ``id_column`` and its own feature columns, and exactly one
    with ``label_column``: the samples whose id every site holds, aligned by id (the files'
    row orders do not matter).

    Each site is read as by :func:`load_site_csv`, alone, as it would be at the site of a
    deployment: its own train/test split by id, its own encoding statistics. Rows whose id some
    site lacks are dropped and counted per site (:attr:`VerticalTables.dropped`,
    :meth:`VerticalTables.summary`). The ids are compared here in the clear: this is not private
    set intersection.
    """
    if len(paths) < 2:
        raise DataError(f"vertical data needs a CSV per site, 2 or more; got {len(paths)}")
    paths = [Path(p) for p in paths]
    names = [p.stem for p in paths]
    if len(set(names)) != len(names):
        raise DataError(f"the sites' CSV files need distinct names, got {', '.join(map(str, paths))}")
    frames = [_read(path) for path in paths]
    for path, frame in zip(paths, frames):
        _column(frame, path, id_column, "id")
    holders = [i for i, f in enumerate(frames) if label_column in f.columns]
    if len(holders) != 1:
        found = "none of them" if not holders else "each of " + ", ".join(str(paths[i]) for i in holders)
        raise DataError(f"exactly one site's CSV must hold the label column {label_column!r}; {found} does")
    sites = tuple(_site_table(f, p, id_column=id_column, label_column=label_column if i == holders[0] else None,
                              categorical=categorical, impute=impute, test_fraction=test_fraction, seed=seed)
                  for i, (p, f) in enumerate(zip(paths, frames)))
    common = {}
    for part in ("train", "test"):
        ids = getattr(sites[0], f"{part}_ids")
        for s in sites[1:]:
            ids = ids[torch.isin(ids, getattr(s, f"{part}_ids"))]
        common[part] = ids
    if not len(common["train"]) + len(common["test"]):
        raise DataError(f"the sites' CSV files have no id in common in column {id_column!r}")
    if not len(common["train"]):
        raise DataError(f"the sites' CSV files have no training sample in common in column {id_column!r}")
    holder = sites[holders[0]]
    labels = {part: getattr(holder, f"{part}_labels")[holder.rows_of(part, common[part])] for part in common}
    return VerticalTables(sites, holder.name, id_column, holder.classes, common["train"], common["test"],
                          labels["train"], labels["test"])
