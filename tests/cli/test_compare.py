"""``splitlearn compare`` end to end on a short digits job."""

import argparse
import json

from splitlearn.cli import compare
from splitlearn.config import load_config


def test_compare_writes_json_and_figure_and_prints_three_methods(tmp_path, capsys, monkeypatch):
    small = {"data.limit_train": 240, "data.limit_test": 100}  # a few seconds, not the full digits set
    monkeypatch.setattr(compare, "load_config", lambda path, overrides: load_config(path, overrides | small))
    parser = argparse.ArgumentParser()
    compare.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compare", "--clients", "2", "--epochs", "1", "--out", str(tmp_path)])
    assert compare.run(args) == 0
    out = capsys.readouterr().out
    for label in ("split", "FedAvg", "large-batch"):
        assert label in out
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["config"]["data"]["limit_train"] == 240
    assert list(saved["summary"]) == ["split", "fedavg", "large_batch_sgd"]
    assert all(r["client_tflops"] > 0 and r["client_bytes"] > 0 and 0 <= r["test_accuracy"] <= 1 for r in saved["summary"].values())
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
