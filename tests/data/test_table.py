"""CSV tables: features, labels, ids, the split and its statistics, and a clear line for each bad input."""

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from splitlearn.data import DataError, load_csv, load_dataset, load_site_csv, load_vertical_csv
from splitlearn.split import configs
from splitlearn.split.configs import Vertical
from splitlearn.split.simulation import Simulation
from splitlearn.split.state import OptimizerSpec


def patients(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """``n`` patients in shuffled order: integer ids, three numeric features, a named class."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"pid": rng.permutation(np.arange(100, 100 + n)), "age": rng.normal(60, 10, n).round(1),
                          "bmi": rng.normal(27, 4, n).round(2), "dose": rng.integers(0, 5, n)})
    frame["outcome"] = np.where(rng.random(n) < 0.3, "relapse", "remission")
    return frame


def write(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def test_features_labels_ids_and_a_training_split_scaler(tmp_path):
    frame = patients()
    path = write(frame, tmp_path / "ward.csv")
    train, test = load_csv(path, label_column="outcome", id_column="pid", seed=3)
    assert (train.name, train.classes, train.sample_shape) == ("ward", ("relapse", "remission"), (3,))
    assert sorted(torch.cat([train.sample_ids, test.sample_ids]).tolist()) == sorted(frame.pid)
    by_id = frame.set_index("pid")
    for ds in (train, test):
        expected = [train.classes.index(by_id.outcome[i]) for i in ds.sample_ids.tolist()]
        assert ds.labels.tolist() == expected
    # Stratified: each class sends round(0.2 * its size) rows to test; seeded: the same seed, the same split.
    for c, name in enumerate(train.classes):
        assert int((test.labels == c).sum()) == round(0.2 * int((frame.outcome == name).sum()))
    assert torch.equal(load_csv(path, label_column="outcome", id_column="pid", seed=3)[1].sample_ids, test.sample_ids)
    assert not torch.equal(load_csv(path, label_column="outcome", id_column="pid", seed=4)[1].sample_ids, test.sample_ids)
    # The scaler is fitted on the training rows only, and applied to both splits.
    raw = by_id[["age", "bmi", "dose"]].to_numpy(dtype=np.float64)
    rows = {i: k for k, i in enumerate(by_id.index)}
    fit = raw[[rows[i] for i in train.sample_ids.tolist()]]
    mean, std = fit.mean(0), fit.std(0)
    for ds in (train, test):
        expected = (raw[[rows[i] for i in ds.sample_ids.tolist()]] - mean) / std
        torch.testing.assert_close(ds.features, torch.tensor(expected, dtype=torch.float32))
    assert not torch.allclose(test.features.mean(0), torch.zeros(3), atol=1e-3)  # test rows did not shape the scaler
    # Without an id column the sample ids are the data rows, and pid is a feature like any other.
    train, test = load_dataset("csv", root=path, seed=3, label_column="outcome")
    assert train.sample_shape == (4,) and sorted(torch.cat([train.sample_ids, test.sample_ids]).tolist()) == list(range(60))


def test_string_ids_and_integer_labels(tmp_path):
    frame = patients(20).assign(pid=lambda f: [f"P-{i}" for i in f.pid], outcome=lambda f: (f.outcome == "relapse").astype(int))
    train, test = load_csv(write(frame, tmp_path / "t.csv"), label_column="outcome", id_column="pid", test_fraction=0.25)
    assert train.classes == ("0", "1") and train.sample_shape == (3,)
    ids = torch.cat([train.sample_ids, test.sample_ids])
    assert sorted(ids.tolist()) == list(range(20))  # ids that are not integers: data row numbers
    labels = torch.cat([train.labels, test.labels])
    assert labels.tolist() == frame.outcome.to_numpy()[ids.numpy()].tolist()


def test_categorical_columns_refused_by_name_or_one_hot(tmp_path):
    frame = patients().assign(sex=lambda f: np.where(f.index % 3, "F", "M"), ward=lambda f: np.where(f.index % 2, "north", "south"))
    frame.loc[59, "ward"] = "annex"  # one row only: if it falls in test, no training category matches it
    path = write(frame, tmp_path / "t.csv")
    with pytest.raises(DataError) as refused:
        load_csv(path, label_column="outcome", id_column="pid")
    message = str(refused.value)
    assert "feature columns 'sex' ('M' in row 2), 'ward' ('south' in row 2) are not numeric" in message
    assert "--categorical onehot" in message and "\n" not in message
    for seed in range(40):  # find a split that puts the one 'annex' row (pid of row 59) in the test split
        train, test = load_csv(path, label_column="outcome", id_column="pid", categorical="onehot", seed=seed)
        if int(frame.pid[59]) in test.sample_ids.tolist():
            break
    else:
        pytest.fail("no seed of 40 puts the annex row in the test split")
    # 3 numbers, then sex=F, sex=M, ward=north, ward=south (training categories, sorted); 'annex' was never trained on.
    assert train.sample_shape == (7,)
    by_id = frame.set_index("pid")
    for ds in (train, test):
        onehot = ds.features[:, 3:]
        assert set(onehot.unique().tolist()) <= {0.0, 1.0}
        sex, ward = by_id.sex[ds.sample_ids.numpy()].to_numpy(), by_id.ward[ds.sample_ids.numpy()].to_numpy()
        expected = np.stack([sex == "F", sex == "M", ward == "north", ward == "south"], 1)
        assert torch.equal(onehot, torch.tensor(expected, dtype=torch.float32))
    annex = test.sample_ids.tolist().index(int(frame.pid[59]))
    assert test.features[annex, 5:].tolist() == [0.0, 0.0]


def test_missing_values_refused_by_row_and_column_or_imputed_from_training_rows(tmp_path):
    frame = patients().astype({"dose": float})
    frame.loc[6, "bmi"] = np.nan
    frame.loc[9, "dose"] = np.nan
    path = write(frame, tmp_path / "t.csv")
    with pytest.raises(DataError) as refused:
        load_csv(path, label_column="outcome", id_column="pid")
    assert str(refused.value) == (f"CSV file {path}: row 8, column 'bmi' has no value (1 more missing); fill it in, or pass "
                                  "--impute mean (data.impute = \"mean\") to impute the training split's mean")
    train, test = load_csv(path, label_column="outcome", id_column="pid", impute="mean", seed=1)
    by_id = frame.set_index("pid")
    fit = by_id.loc[train.sample_ids.numpy(), ["age", "bmi", "dose"]]
    filled = by_id[["age", "bmi", "dose"]].fillna(fit.mean())  # pandas' mean skips the missing value
    mean, std = filled.loc[train.sample_ids.numpy()].to_numpy().mean(0), filled.loc[train.sample_ids.numpy()].to_numpy().std(0)
    for ds in (train, test):
        expected = (filled.loc[ds.sample_ids.numpy()].to_numpy() - mean) / std
        torch.testing.assert_close(ds.features, torch.tensor(expected, dtype=torch.float32))
    # A missing category is imputed with the training split's most frequent one.
    frame = patients().assign(sex=lambda f: np.where(f.index % 4, "F", "M"))
    frame.loc[2, "sex"] = None
    train, test = load_csv(write(frame, tmp_path / "c.csv"), label_column="outcome", id_column="pid", categorical="onehot", impute="mean")
    ds = train if int(frame.pid[2]) in train.sample_ids.tolist() else test
    assert ds.features[ds.sample_ids.tolist().index(int(frame.pid[2])), 3:].tolist() == [1.0, 0.0]  # sex=F


@pytest.mark.parametrize(
    "edit,kwargs,message",
    [
        (lambda f: f.assign(outcome=f.outcome.where(f.index != 4)), {}, "row 6 has no value in label column 'outcome'"),
        (lambda f: f.assign(pid=f.pid.where(f.index != 0, f.pid[3])), {}, "row 5 repeats id {pid3} of row 2 in id column 'pid'"),
        (lambda f: f.assign(age=f.age.where(f.index != 2, np.inf)), {}, "row 4, column 'age' holds inf, not a finite number"),
        (lambda f: f.assign(outcome="remission"), {}, "label column 'outcome' holds one class ('remission'); training needs two or more"),
        (lambda f: f.assign(outcome=f.index % 2 + np.where(f.index == 4, 0.25, 0)), {}, "label column 'outcome' holds 0.25 in row 6; labels must be classes"),
        (lambda f: f, {"label_column": "y"}, "has no label column 'y'; its columns are 'pid', 'age', 'bmi', 'dose', 'outcome'"),
        (lambda f: f, {"id_column": "patient"}, "has no id column 'patient'"),
        (lambda f: f, {"label_column": None}, "needs the name of its label column: pass --label-column"),
        (lambda f: f, {"categorical": "drop"}, "categorical must be one of refuse, onehot, got 'drop'"),
    ],
)
def test_bad_tables_are_one_line_naming_row_and_column(tmp_path, edit, kwargs, message):
    frame = patients()
    path = write(edit(frame), tmp_path / "t.csv")
    options = {"label_column": "outcome", "id_column": "pid"} | kwargs
    with pytest.raises(ValueError) as error:
        load_csv(path, **options)
    assert message.format(pid3=frame.pid[3]) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "text,message",
    [
        (None, "CSV file {path} does not exist"),
        ("", "CSV file {path} is empty"),
        ("pid,age,outcome\n", "CSV file {path} has a header but no data rows"),
        ("pid,age,age,outcome\n1,2,3,a\n", "CSV file {path}: the header names column 'age' more than once"),
        ("pid,,outcome\n1,2,a\n", "CSV file {path}: column 2 has no name in the header row"),
        ('pid,age,outcome\n1,2,"a\n', "cannot read CSV file {path}"),
        (b"pid,age,outcome\n1,\xff\xfe,a\n", "CSV file {path} is not UTF-8 text"),
    ],
)
def test_unreadable_files_are_named(tmp_path, text, message):
    path = tmp_path / "t.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(DataError) as error:
        load_csv(path, label_column="outcome")
    assert message.format(path=path) in str(error.value) and "\n" not in str(error.value)


def vertical_sites(tmp_path, n: int = 200):
    """Three sites' CSVs of the same ``n`` patients (ids 'P0000'...), each shuffled differently;
    the second site misses 5% of them. The label needs columns of all three sites."""
    rng = np.random.default_rng(14)
    ids = [f"P{i:04d}" for i in range(n)]
    x = rng.normal(size=(n, 7))
    label = np.where(x[:, 0] + x[:, 3] + x[:, 6] > 0, "yes", "no")
    a = pd.DataFrame({"patient": ids, "age": x[:, 0], "bmi": x[:, 1], "sbp": x[:, 2], "label": label})
    b = pd.DataFrame({"patient": ids, "hb": x[:, 3], "crp": x[:, 4]})
    c = pd.DataFrame({"patient": ids, "mri0": x[:, 5], "mri1": x[:, 6]})
    missing = rng.choice(n, n // 20, replace=False)
    b = b.drop(index=missing)
    paths = []
    for name, frame in (("lab", a), ("blood", b), ("scan", c)):
        paths.append(write(frame.sample(frac=1, random_state=int(rng.integers(1000))), tmp_path / f"{name}.csv"))
    return paths, pd.concat([a.set_index("patient"), b.set_index("patient"), c.set_index("patient")], axis=1), sorted(ids[i] for i in missing)


def test_vertical_sites_align_by_id_on_their_intersection(tmp_path):
    paths, truth, missing = vertical_sites(tmp_path)
    v = load_vertical_csv(paths, id_column="patient", label_column="label", seed=2)
    assert (v.label_site, v.classes, [s.name for s in v.sites], v.widths) == ("lab", ("no", "yes"), ["lab", "blood", "scan"], [3, 2, 2])
    assert len(v.ids) == 190 and not set(missing) & set(v.ids.values()) and list(v.ids) == sorted(v.ids)
    assert v.dropped == {"lab": 10, "blood": 0, "scan": 10}
    assert v.summary() == "aligned 190 samples by 'patient' across 3 sites; rows dropped: lab 10 of 200, blood 0 of 190, scan 10 of 200"
    assert sorted(torch.cat([v.train_ids, v.test_ids]).tolist()) == list(v.ids) and 19 <= len(v.test_ids) <= 57
    columns = {"lab": ["age", "bmi", "sbp"], "blood": ["hb", "crp"], "scan": ["mri0", "mri1"]}
    for i, site in enumerate(v.sites):
        assert site.columns == tuple(columns[site.name])
        # Each site alone: its own rows split by id, its scaler from its own training rows (dropped ones too).
        own_train = truth.loc[[site.ids[k] for k in site.train_ids.tolist()], columns[site.name]].to_numpy()
        mean, std = own_train.mean(0), own_train.std(0)
        for part, ids in (("train", v.train_ids), ("test", v.test_ids)):
            raw = truth.loc[[v.ids[k] for k in ids.tolist()], columns[site.name]].to_numpy()
            torch.testing.assert_close(v.features(i, part), torch.tensor((raw - mean) / std, dtype=torch.float32))
    for ids, labels in ((v.train_ids, v.train_labels), (v.test_ids, v.test_labels)):
        assert [v.classes[c] for c in labels.tolist()] == truth.label[[v.ids[k] for k in ids.tolist()]].tolist()


def test_each_site_splits_its_rows_alone_as_the_others_do(tmp_path):
    """A patient lands in the same split at every site, whatever else each site holds: the split
    is a seeded hash of the id, so sites of a deployment agree without seeing each other's files."""
    paths, _, _ = vertical_sites(tmp_path)
    alone = [load_site_csv(p, id_column="patient", label_column="label" if i == 0 else None, seed=2) for i, p in enumerate(paths)]
    together = load_vertical_csv(paths, id_column="patient", label_column="label", seed=2)
    for site, again in zip(alone, together.sites, strict=True):
        for part in ("train", "test"):
            assert torch.equal(getattr(site, f"{part}_ids"), getattr(again, f"{part}_ids"))
            assert torch.equal(getattr(site, part), getattr(again, part))
    shared = set(alone[0].ids) & set(alone[1].ids)
    assert set(alone[0].test_ids.tolist()) & shared == set(alone[1].test_ids.tolist()) & shared
    other_seed = load_site_csv(paths[1], id_column="patient", seed=3)
    assert not torch.equal(other_seed.test_ids, alone[1].test_ids)
    assert alone[1].classes is None and alone[0].classes == ("no", "yes")


def test_vertical_tables_train_in_the_vertical_configuration(tmp_path):
    """merged() is the single array a vertical split with chunk sizes ``widths`` cuts back into
    the sites' own columns (here 2, 3, 2: not near-equal chunks), and the split learns the rule."""
    paths, _, _ = vertical_sites(tmp_path)
    paths = paths[1:2] + paths[:1] + paths[2:]
    v = load_vertical_csv(paths, id_column="patient", label_column="label", seed=2)
    assert v.widths == [2, 3, 2] and v.label_index == 1
    train, test = v.merged()
    torch.manual_seed(0)
    bottoms = [nn.Sequential(nn.Linear(len(s.columns), 8), nn.ReLU()) for s in v.sites]
    split = configs.vertical(Vertical(bottoms, nn.Linear(8, 2), dim=1, merge="sum", sizes=v.widths), in_shape=(7,))
    sim = Simulation(split, train=train, test=test, optimizer=OptimizerSpec("adam", lr=0.01), batch_size=16)
    for i, site in enumerate(v.sites):
        shards = sim.parties[f"client{i}"].shards
        assert torch.equal(shards["train"].features, v.features(i, "train")) and torch.equal(shards["test"].features, v.features(i, "test"))
        assert shards["train"].features.shape[1] == len(site.columns) and torch.equal(shards["train"].sample_ids, v.train_ids)
    history = sim.fit(15)
    assert history[-1]["test_accuracy"] >= 0.85


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda fs: fs[:1], "vertical data needs a CSV per site, 2 or more; got 1"),
        (lambda fs: [fs[0], fs[1].assign(label="x"), fs[2]], "exactly one site's CSV must hold the label column 'label'; each of"),
        (lambda fs: [fs[0].drop(columns="label"), fs[1], fs[2]], "must hold the label column 'label'; none of them does"),
        (lambda fs: [fs[0], fs[1].drop(columns="patient"), fs[2]], "blood.csv has no id column 'patient'"),
        (lambda fs: [fs[0], fs[1], pd.concat([fs[2], fs[2].iloc[:1]])], "scan.csv: row 202 repeats id"),
        (lambda fs: [fs[0], fs[1].assign(patient=lambda f: "Q" + f.patient), fs[2]], "have no id in common in column 'patient'"),
        (lambda fs: [fs[0], fs[1].assign(crp=lambda f: f.crp.astype(str)).assign(crp=lambda f: f.crp.where(f.index != 5, "high")), fs[2]],
         "blood.csv: feature column 'crp' ('high' in row"),
    ],
)
def test_bad_vertical_sites_are_one_line(tmp_path, edit, message):
    paths, _, _ = vertical_sites(tmp_path)
    frames = edit([pd.read_csv(p) for p in paths])
    paths = [write(f, tmp_path / f"{['lab', 'blood', 'scan'][i]}.csv") for i, f in enumerate(frames)]
    with pytest.raises(DataError, match=re.escape(message)) as error:
        load_vertical_csv(paths, id_column="patient", label_column="label")
    assert "\n" not in str(error.value)


def test_pandas_loads_only_with_a_table():
    code = "import sys, splitlearn, splitlearn.data, splitlearn.cli.app; print('pandas' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_csv_through_the_registry_needs_a_file(tmp_path):
    with pytest.raises(DataError, match=r"data set 'csv' is read from a CSV file of your own, a row per sample: pass its path as root \(--data-root\)"):
        load_dataset("csv", label_column="y")
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path))} is not a CSV file but a folder"):
        load_dataset("csv", root=tmp_path, label_column="y")
