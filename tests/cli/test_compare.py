"""``splitlearn compare`` end to end on a short digits job."""

import argparse
import json

import pytest

from splitlearn.cli import compare
from splitlearn.config import load_config


def test_compare_writes_json_and_figure_and_prints_three_methods_and_compression(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps its log lines to the terminal
    small = {"data.limit_train": 240, "data.limit_test": 100}  # a few seconds, not the full digits set
    monkeypatch.setattr(compare, "load_config", lambda path, overrides: load_config(path, overrides | small))
    parser = argparse.ArgumentParser()
    compare.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compare", "--clients", "2", "--epochs", "1", "--out", str(tmp_path),
                              "--compression", "int8,topk", "--topk-ratio", "0.05"])
    assert compare.run(args) == 0
    out = capsys.readouterr().out
    for label in ("split", "FedAvg", "large-batch", "SL int8", "SL topk 0.05", "Compression at the cut"):
        assert label in out
    # never silent: a line as each method starts, and one per epoch (FedAvg: round) of each with its figures
    for line in ("split: training", "split: epoch 1: train loss", "split int8: epoch 1: train loss", "split topk: epoch 1: train loss",
                 "fedavg: training 1 rounds", "fedavg: epoch 1: train loss", "large_batch_sgd: training 1 epochs",
                 "large_batch_sgd: epoch 1: train loss"):
        assert line in out, line
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["config"]["data"]["limit_train"] == 240
    assert saved["config"]["compression"] == {"codec": "none", "topk_ratio": 0.05}
    assert list(saved["summary"]) == ["split", "split int8", "split topk", "fedavg", "large_batch_sgd"]
    assert all(r["client_tflops"] > 0 and r["client_bytes"] > 0 and 0 <= r["test_accuracy"] <= 1 for r in saved["summary"].values())
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    costs = saved["compression"]
    assert list(costs) == ["none", "int8", "topk"] and costs["none"]["saving"] == 1.0
    for codec, c in costs.items():
        sl = saved["metrics"]["split" if codec == "none" else f"split {codec}"]
        assert sl["epochs"][-1]["test_accuracy"] == c["test_accuracy"]
        assert c["accuracy_change_points"] == 100 * (c["test_accuracy"] - costs["none"]["test_accuracy"])
        # Cut bytes: the clients' training Activation and Gradient messages, per client.
        per_client = sl["train_bytes"]["mean_per_party"]["client"]
        assert c["cut_bytes"] == per_client["sent_by_kind"]["Activation"] + per_client["received_by_kind"]["Gradient"]
        assert c["saving"] == costs["none"]["cut_bytes"] / c["cut_bytes"]
    # int8: 1 byte a value instead of 4, sample ids (8 bytes a sample, uncompressed) aside.
    assert 3.5 <= costs["int8"]["saving"] < 4
    # topk 0.05: 5% of the values, each with a 4-byte position: 10% of the bytes, ids aside.
    assert 8 < costs["topk"]["saving"] < 10


def test_compare_refuses_unknown_codecs(capsys):
    parser = argparse.ArgumentParser()
    compare.add_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["compare", "--compression", "int4"])
    assert "unknown codecs ['int4']; choose from fp16, int8, topk" in capsys.readouterr().err
