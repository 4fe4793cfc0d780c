"""The CLI end to end: the default job, every configuration, predict, and clear errors."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from splitlearn import runner
from splitlearn.cli.app import main
from splitlearn.config import load_config


def _run_dir(out: Path) -> Path:
    (run,) = out.iterdir()
    return run


def test_default_main_job(tmp_path, capsys):
    """The default experiment (digits, small CNN, vanilla, 4 round-robin clients) reaches 95%."""
    assert main(["train", "--out", str(tmp_path)]) == 0
    run = _run_dir(tmp_path)
    config = json.loads((run / "config.json").read_text())
    assert (config["split"]["configuration"], config["split"]["clients"], config["data"]["name"]) == ("vanilla", 4, "digits")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finished"] and len(metrics["epochs"]) == config["train"]["epochs"]
    assert metrics["epochs"][-1]["test_accuracy"] >= 0.95
    # One weights file per party holding segments: the server and the client whose turn ended last.
    files = sorted(p.name for p in (run / "weights").iterdir())
    assert files == ["client3.safetensors", "server.safetensors"]
    assert all(k.startswith("model/server/") for k in load_file(run / "weights" / "server.safetensors") if k.startswith("model/"))
    # Bytes per party are reported, and the relay moved weights between clients.
    assert metrics["bytes_by_kind"]["Weights"] > 0 and metrics["bytes_sent"]["client0"] > 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "Accuracy per epoch" in "\n".join(out) and "Bytes on the wire per party" in "\n".join(out)
    assert str(run) in " ".join(out[-2:])  # the last line says where the results are

    # Predicting through the protocol with the saved weights reproduces the final accuracy.
    assert main(["predict", str(run)]) == 0
    rows = list(csv.DictReader((run / "predictions-test.csv").open()))
    assert len(rows) == metrics["epochs"][-1]["test_count"] > 300
    accuracy = sum(r["prediction"] == r["label"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(metrics["epochs"][-1]["test_accuracy"], abs=1e-9)


@pytest.mark.parametrize(
    "args,tasks",
    [
        (["--configuration", "ushaped", "--clients", "2"], 1),
        (["--configuration", "multihop", "--cut", "features.1,classifier.0"], 1),
        (["--configuration", "multitask"], 2),
        (["--configuration", "vertical", "--clients", "2"], 1),
        (["--configuration", "vertical", "--clients", "3", "--dataset", "breast_cancer", "--model", "mlp"], 1),
        (["--configuration", "vanilla", "--clients", "3", "--relay", "server", "--partition", "dirichlet", "--alpha", "0.5", "--optimizer", "adam", "--lr", "0.002"], 1),
    ],
)
def test_every_configuration_trains_and_predicts(tmp_path, args, tasks):
    assert main(["train", "--epochs", "3", "--out", str(tmp_path), *args]) == 0
    run = _run_dir(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    last = metrics["epochs"][-1]
    accuracies = [v for k, v in last.items() if k.startswith("test_accuracy")]
    assert len(accuracies) == tasks and min(accuracies) > 0.6  # well above chance after 3 epochs
    assert main(["predict", str(run)]) == 0
    rows = list(csv.DictReader((run / "predictions-test.csv").open()))
    assert len({r["task"] for r in rows}) == tasks


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "mnist-ish"], "unknown data set 'mnist-ish'"),
        (["--cut", "40"], "cut 40 is out of range"),
        (["--cut", "features.9"], "names no layer"),
        (["--model", "transformer"], "unknown model 'transformer'"),
        (["--dataset", "fashion_mnist", "--data-root", "/nonexistent/fmnist"], "/nonexistent/fmnist"),
        (["--dataset", "cifar10"], "pass root (--data-root)"),
        (["--configuration", "vertical", "--clients", "1"], "vertical split needs split.clients >= 2"),
        (["--device", "cuda:7"], "CUDA is not available"),
        (["--compression", "topk", "--topk-ratio", "0"], "compression.topk_ratio must lie in (0, 1], got 0.0"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, args, message):
    if "cuda" in args[-1]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    assert main(["train", "--epochs", "1", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_config_file_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[split]\nconfiguration = "ushaped"\nclients = 2\n[train]\nepochs = 4\nlr = 0.01\n[model]\ncut = ["features.4", 8]\n')
    config = load_config(path, {"train.epochs": 2})
    assert (config.split.configuration, config.split.clients, config.train.epochs, config.train.lr) == ("ushaped", 2, 2, 0.01)
    assert config.model.cut == ("features.4", 8)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"epochs": "ten"}}))
    with pytest.raises(ValueError, match="TrainConfig.epochs must be int, got 'ten'"):
        load_config(bad)
    bad.write_text(json.dumps({"trian": {}}))
    with pytest.raises(ValueError, match=r"unknown RunConfig keys \['trian'\]"):
        load_config(bad)


def test_compression_in_a_config_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[compression]\ncodec = "topk"\ntopk_ratio = 0.05\n')
    assert load_config(path).compression.codec == "topk" and load_config(path).compression.topk_ratio == 0.05
    assert load_config(path, {"compression.codec": "fp16"}).compression.codec == "fp16"
    assert load_config(None).compression.codec == "none"
    path.write_text('[compression]\ncodec = "zip"\n')
    with pytest.raises(ValueError, match="compression.codec must be one of none, fp16, int8, topk, got 'zip'"):
        load_config(path)


def test_predict_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["predict", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.json").write_text(json.dumps({"splitlearn_version": "0.0.1", "finished": True}))
    assert main(["predict", str(run)]) == 2
    assert "written by splitlearn 0.0.1" in capsys.readouterr().err


def test_nopeek_lowers_reported_leakage(tmp_path):
    """Every run reports held-out DCOR(X, Z) per epoch; NoPeek lowers it."""
    leak = {}
    for a1 in ("0", "8"):
        out = tmp_path / a1
        args = ["train", "--epochs", "4", "--out", str(out), "--optimizer", "adam", "--lr", "0.003", "--nopeek-a1", a1]
        assert main(args) == 0
        epochs = json.loads((_run_dir(out) / "metrics.json").read_text())["epochs"]
        assert all(0.0 <= e["dcor"] <= 1.0 and e["collapsed"] is False for e in epochs)
        leak[a1] = epochs[-1]["dcor"]
    assert leak["8"] < leak["0"] - 0.1


def test_negative_nopeek_weight_is_refused(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), "--nopeek-a1", "-1"]) == 2
    assert "privacy.nopeek_a1 must be >= 0, got -1.0" in capsys.readouterr().err


def test_compressed_training_and_prediction(tmp_path, capsys):
    """--compression int8: one byte per gradient value on the wire, and predict (through the
    same compressed protocol) reproduces the final accuracy."""
    assert main(["train", "--epochs", "1", "--clients", "2", "--out", str(tmp_path), "--compression", "int8"]) == 0
    assert "int8 at the cut" in capsys.readouterr().out
    run = _run_dir(tmp_path)
    config = load_config(run / "config.json")
    assert (config.compression.codec, config.compression.topk_ratio) == ("int8", 0.1)
    built = runner.build(config)
    (client,) = built.split.modules_of("client").values()
    q = client(built.train.features[:1]).numel()  # smashed values per sample
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["bytes_by_kind"]["Gradient"] == q * len(built.train)  # one epoch, 1 byte a value
    assert main(["predict", str(run)]) == 0
    rows = list(csv.DictReader((run / "predictions-test.csv").open()))
    accuracy = sum(r["prediction"] == r["label"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(metrics["epochs"][-1]["test_accuracy"], abs=1e-9)


def test_python_dash_m_runs_the_command():
    done = subprocess.run([sys.executable, "-m", "splitlearn", "serve", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: splitlearn serve") and "--checkpoint-every" in done.stdout


def test_commands_start_without_importing_sklearn_or_matplotlib():
    # Together they took about 1 s of every command's start; serve and join need neither.
    code = "import sys, splitlearn.cli.app; print(sorted(m for m in ('sklearn', 'matplotlib') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
