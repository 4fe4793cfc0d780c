"""Attacks and the report on a finished run folder, through the CLI."""

import json

import pytest

from splitlearn.cli.app import main
from tests.report.test_leakage import _Page


@pytest.fixture(scope="module")
def ushaped_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--configuration", "ushaped", "--clients", "2", "--epochs", "3", "--out", str(out)]) == 0
    (run,) = out.iterdir()
    return run


def test_attacks_then_report(ushaped_run, capsys):
    assert main(["attack", "reconstruction", str(ushaped_run), "--aux", "400"]) == 0
    assert main(["attack", "labels", str(ushaped_run)]) == 0
    out = capsys.readouterr().out  # each attack says whose view it takes
    assert "server's view: it receives client's smashed data (the output of " in out  # the clients, collapsed to the holder
    assert "and holds 400 training inputs passed through client's segment; it reconstructs client's test inputs" in out
    assert "server's view: it receives the gradients that client, which holds the labels, sends back at the cut" in out
    results = json.loads((ushaped_run / "attacks.json").read_text())
    assert 0 < results["reconstruction MSE"] < 0.05 and results["reconstruction SSIM"] > 0.5
    assert results["label attack accuracy"] > 0.5  # ten classes: chance is about 0.1
    # Without auxiliary data: the server knows the client segment's architecture only.
    assert main(["attack", "inversion", str(ushaped_run), "--victims", "32", "--steps", "400"]) == 0
    out = capsys.readouterr().out
    assert "knows only the architecture of that segment, no data and no weights; it inverts the smashed data of 32" in out
    inverted = json.loads((ushaped_run / "attacks.json").read_text())
    assert inverted["reconstruction SSIM"] == results["reconstruction SSIM"]  # the earlier results are kept
    assert 0 < inverted["inversion MSE"] and -1 <= inverted["inversion SSIM"] <= 1
    assert "inverting the smashed data leaves inputs" in out
    # Model completion: the server knows 10 labels per class of the training samples it saw.
    assert main(["attack", "completion", str(ushaped_run)]) == 0
    out = capsys.readouterr().out
    assert "and knows the labels of 100 of them (10 per class); it infers the labels of the rest" in out
    completed = json.loads((ushaped_run / "attacks.json").read_text())
    assert completed["completion accuracy"] > 0.5 and completed["completion majority share"] < 0.2  # chance: 0.10
    assert "Labels leak by model completion" in out
    assert main(["report", str(ushaped_run)]) == 0
    assert "inversion SSIM" in (ushaped_run / "report.html").read_text()
    page = _Page()
    page.feed((ushaped_run / "report.html").read_text())
    assert set(page.figures) == {"accuracy", "dcor", "reconstructions"}
    assert page.tables == ["attacks", "config"]


def test_refusals(ushaped_run, tmp_path, capsys):
    out = tmp_path / "vanilla"
    assert main(["train", "--epochs", "1", "--out", str(out)]) == 0
    (run,) = out.iterdir()
    assert main(["attack", "labels", str(run)]) == 2
    assert "receives the labels themselves" in capsys.readouterr().err
    assert main(["attack", "completion", str(run)]) == 2
    assert "here the server computes the loss, and so receives the labels themselves (this is a vanilla run)" in capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps(metrics | {"splitlearn_version": "0.0.9"}))
    assert main(["attack", "reconstruction", str(run)]) == 2
    assert "written by splitlearn 0.0.9" in capsys.readouterr().err
