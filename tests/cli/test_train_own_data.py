"""``splitlearn train`` on a user's own files: a CSV table and a folder of PNG tiles."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from splitlearn import runner
from splitlearn.cli.app import main
from splitlearn.config import load_config


def _run_dir(out: Path) -> Path:
    (run,) = out.iterdir()
    return run


def write_table(path: Path, n: int = 500, features: int = 20, seed: int = 0) -> Path:
    """``n`` patients (shuffled integer ids), ``features`` numeric columns on different scales and a
    binary label that a linear rule of a few of them decides."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)) * rng.uniform(0.5, 50, features) + rng.uniform(-100, 100, features)
    z = (x - x.mean(0)) / x.std(0)
    cols = [0, 3, 7, 12] if features > 12 else list(range(min(4, features)))
    score = z[:, cols] @ np.array([1.0, -1.0, 0.5, 1.0])[: len(cols)]
    label = np.where(score > 0, "positive", "negative")
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient", *(f"x{i}" for i in range(features)), "diagnosis"])
        for pid, row, y in zip(rng.permutation(np.arange(5000, 5000 + n)), x, label):
            w.writerow([pid, *(f"{v:.4f}" for v in row), y])
    return path


def test_csv_trains_from_the_cli_to_90_percent(tmp_path, capsys):
    table = write_table(tmp_path / "cohort.csv")
    out = tmp_path / "runs"
    args = ["train", "--dataset", "csv", "--data-root", str(table), "--label-column", "diagnosis", "--id-column", "patient",
            "--model", "mlp", "--clients", "2", "--optimizer", "adam", "--lr", "0.003", "--epochs", "8", "--out", str(out)]
    assert main(args) == 0
    run = _run_dir(out)
    config = json.loads((run / "config.json").read_text())["data"]
    assert (config["name"], config["root"], config["label_column"], config["id_column"]) == ("csv", str(table), "diagnosis", "patient")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finished"] and metrics["epochs"][-1]["test_accuracy"] >= 0.9
    assert metrics["epochs"][-1]["test_count"] == 100 and 0 <= metrics["epochs"][-1]["dcor"] <= 1
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["client1.safetensors", "server.safetensors"]
    assert str(run) in capsys.readouterr().out
    # predict rebuilds the table from config.json (same split, same scaler) and keeps the patients' ids.
    assert main(["predict", str(run)]) == 0
    rows = list(csv.DictReader((run / "predictions-test.csv").open()))
    assert len(rows) == 100 and all(5000 <= int(r["sample_id"]) < 5500 for r in rows)
    accuracy = sum(r["prediction"] == r["label"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(metrics["epochs"][-1]["test_accuracy"], abs=1e-9)


def test_csv_keys_in_a_config_file(tmp_path):
    table = write_table(tmp_path / "cohort.csv", n=60, features=4)
    path = tmp_path / "run.toml"
    path.write_text(f'[data]\nname = "csv"\nroot = "{table}"\nlabel_column = "diagnosis"\nid_column = "patient"\n'
                    'categorical = "onehot"\nimpute = "mean"\n[model]\nname = "mlp"\n')
    config = load_config(path)
    assert config.data.loader_options() == dict(label_column="diagnosis", id_column="patient", categorical="onehot", impute="mean")
    built = runner.build(config)
    assert (built.train.sample_shape, built.train.classes, len(built.test)) == ((4,), ("negative", "positive"), 12)
    assert load_config(path, {"data.impute": "none"}).data.impute == "none"
    path.write_text('[data]\nname = "csv"\nimpute = "median"\n')
    with pytest.raises(ValueError, match="data.impute must be 'none' or 'mean', got 'median'"):
        load_config(path)


@pytest.mark.parametrize(
    "edit,args,message",
    [
        (None, ["--label-column", "diagnosis", "--id-column", "patient", "--data-root", "{missing}"], "CSV file {missing} does not exist"),
        (None, [], "needs the name of its label column: pass --label-column (data.label_column)"),
        (None, ["--label-column", "diagnosis", "--data-root", "{missing}", "--data-root", "{missing}"],
         "data.root names 2 files, but only a vertical split takes one CSV per client (--data-root once per client); this split is vanilla"),
        (None, ["--label-column", "outcome"], "has no label column 'outcome'; its columns are 'patient', 'x0'"),
        (lambda lines: [lines[0] + ",sex", *(line + ",F" for line in lines[1:])], ["--label-column", "diagnosis"],
         "feature column 'sex' ('F' in row 2) is not numeric; one-hot encode with --categorical onehot"),
        (lambda lines: [*lines[:4], lines[4].replace(lines[4].split(",")[2], "", 1), *lines[5:]], ["--label-column", "diagnosis"],
         "row 5, column 'x1' has no value; fill it in, or pass --impute mean"),
        (lambda lines: [*lines, lines[1]], ["--label-column", "diagnosis", "--id-column", "patient"], "row 42 repeats id"),
    ],
)
def test_csv_bad_input_is_one_clear_line(tmp_path, capsys, edit, args, message):
    table = write_table(tmp_path / "t.csv", n=40, features=3)
    if edit is not None:
        table.write_text("\n".join(edit(table.read_text().splitlines())) + "\n")
    missing = tmp_path / "nope.csv"
    args = [a.format(missing=missing) for a in args]
    if "--data-root" not in args:
        args = ["--data-root", str(table), *args]
    argv = ["train", "--dataset", "csv", "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "runs"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(missing=missing) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def write_tiles(root: Path, per_class: int = 24) -> Path:
    """Two classes of 12x12 PNG tiles, dark and bright with noise; every third tile is RGB."""
    rng = np.random.default_rng(1)
    for name, level in (("benign", 70), ("malignant", 180)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            tile = np.clip(rng.normal(level, 35, (12, 12)), 0, 255).astype(np.uint8)
            image = Image.fromarray(tile, "L")
            (image.convert("RGB") if i % 3 == 0 else image).save(root / name / f"tile_{i:02d}.png")
    return root


def test_png_tiles_train_from_the_cli(tmp_path):
    tiles = write_tiles(tmp_path / "tiles")
    out = tmp_path / "runs"
    args = ["train", "--dataset", "imagefolder", "--data-root", str(tiles), "--image-size", "16", "--epochs", "1",
            "--clients", "2", "--out", str(out)]
    assert main(args) == 0
    run = _run_dir(out)
    assert {"name": "imagefolder", "image_size": 16, "image_mode": "rgb"}.items() <= json.loads((run / "config.json").read_text())["data"].items()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finished"] and len(metrics["epochs"]) == 1 and metrics["epochs"][0]["test_count"] == 10
    assert np.isfinite(metrics["epochs"][0]["train_loss"])
    built = runner.build(load_config(run / "config.json"))
    assert (built.train.sample_shape, built.train.classes) == ((3, 16, 16), ("benign", "malignant"))
    assert main(["predict", str(run)]) == 0
    assert len(list(csv.DictReader((run / "predictions-test.csv").open()))) == 10
    out2 = tmp_path / "grey"
    assert main([*args[:-1], str(out2), "--image-mode", "grayscale"]) == 0
    built = runner.build(load_config(_run_dir(out2) / "config.json"))
    assert built.train.sample_shape == (1, 16, 16)


@pytest.mark.filterwarnings("ignore::UserWarning:PIL")
def test_truncated_png_is_named_at_the_cli(tmp_path, capsys):
    tiles = write_tiles(tmp_path / "tiles", per_class=4)
    path = tiles / "malignant" / "tile_02.png"
    path.write_bytes(path.read_bytes()[:60])
    argv = ["train", "--dataset", "imagefolder", "--data-root", str(tiles), "--image-size", "16", "--epochs", "1", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot read image {path}: " in err and len(err.strip().splitlines()) == 1
