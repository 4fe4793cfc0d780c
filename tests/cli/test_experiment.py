"""``splitlearn experiment nopeek`` end to end on digits, kept short."""

import json

from splitlearn.cli.app import main
from tests.report.test_leakage import _Page


def test_nopeek_experiment_writes_report_and_readme(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps its log lines to the terminal
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- nopeek-results:start -->\nold\n<!-- nopeek-results:end -->\ntail\n")
    out = tmp_path / "study"
    args = ["experiment", "nopeek", "--dataset", "digits", "--epochs", "3", "--sweep", "0,2",
            "--out", str(out), "--update-readme", str(readme)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for epoch in (1, 2, 3):  # never silent: each run's epochs as they end
        assert f"vanilla SplitNN: epoch {epoch}: train loss" in printed and f"NoPeek a1=8: epoch {epoch}: train loss" in printed
    assert "leakage DCOR(X, Z)" in printed and "a1=2: epoch 3" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "digits" and [p["a1"] for p in summary["sweep"]] == [0.0, 2.0, 8.0]
    assert summary["nopeek"]["dcor"] < summary["vanilla"]["dcor"]
    # The undefended label attack leaks; the defence lowers it.
    undefended, defended = summary["label_leakage"]
    assert undefended["direction AUC"] >= 0.9 and defended["direction AUC"] < undefended["direction AUC"] - 0.2
    page = _Page()
    page.feed((out / "report.html").read_text())
    assert set(page.figures) == {"accuracy", "dcor", "reconstructions", "tradeoff"}
    assert set(page.tables) == {"sweep", "attacks", "dcor_estimates", "label_leakage", "config"}
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("tail\n") and "old" not in text
    v, n = summary["vanilla"], summary["nopeek"]
    assert v["dcor_batch"] == n["dcor_batch"] == 64  # the digits preset reads DCOR in batches of 64
    assert v["dcor_by_batch"]["64"]["dcor"] == v["dcor"] and v["dcor_floor"] < v["dcor"]
    assert f"| held-out DCOR(X, Z), batches of 64 | {v['dcor']:.3f} | {n['dcor']:.3f} |" in text
    assert f"| floor at batches of 64 (Z shuffled) | {v['dcor_floor']:.3f} | {n['dcor_floor']:.3f} |" in text


def test_bad_a1_is_refused(tmp_path, capsys):
    assert main(["experiment", "nopeek", "--dataset", "digits", "--a1", "-2", "--out", str(tmp_path)]) == 2
    assert "needs a1 > 0" in capsys.readouterr().err


def test_nopeek_over_seeds_reports_each_seed_and_the_spread(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- nopeek-results:start -->\n<!-- nopeek-results:end -->\n")
    out = tmp_path / "seeds"
    args = ["experiment", "nopeek", "--dataset", "digits", "--epochs", "2", "--seeds", "0,1", "--out", str(out),
            "--update-readme", str(readme)]
    assert main(args) == 0
    assert "seed 1 (2 of 2)" in capsys.readouterr().out
    seeds = json.loads((out / "seeds.json").read_text())
    runs = [json.loads((out / f"seed-{k}" / "summary.json").read_text()) for k in (0, 1)]
    assert seeds["seeds"] == [0, 1] and [r["dcor_reduction"] for r in seeds["runs"]] == [r["dcor_reduction"] for r in runs]
    assert runs[0]["vanilla"]["test_accuracy"] != runs[1]["vanilla"]["test_accuracy"]  # the seeds differ
    reductions = [r["dcor_reduction"] for r in runs]
    assert seeds["dcor_reduction"] == {"mean": sum(reductions) / 2, "min": min(reductions), "max": max(reductions)}
    text = readme.read_text()
    assert "Measured by `splitlearn experiment nopeek --seeds 0,1`" in text
    assert f"DCOR reduction {sum(reductions) / 2:.2f}x on average ({min(reductions):.2f}x to {max(reductions):.2f}x)" in text
    assert f"seed 1: {runs[1]['vanilla']['dcor']:.3f} -> {runs[1]['nopeek']['dcor']:.3f}" in text
    assert (out / "seed-0" / "report.html").exists() and (out / "seed-1" / "report.html").exists()


def test_seeds_are_for_nopeek_only(tmp_path, capsys):
    assert main(["experiment", "privacy", "--seeds", "0,1", "--out", str(tmp_path)]) == 2
    assert "--seeds" in capsys.readouterr().err
