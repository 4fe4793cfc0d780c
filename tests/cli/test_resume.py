"""Ctrl-C in ``splitlearn train`` leaves a resumable run folder; ``--resume`` goes on from its last
checkpoint to the weights of an uninterrupted run, bit for bit."""

import json

import pytest
from safetensors.torch import load_file

from splitlearn.cli.app import main
from splitlearn.split.party import Party

ARGS = ["--epochs", "2", "--clients", "2", "--seed", "5"]


def _weights(run):
    return {p.name: load_file(p) for p in sorted((run / "weights").glob("*.safetensors"))}


def _epochs(run):
    keep = ("epoch", "train_loss", "test_accuracy", "test_loss", "dcor")
    return [{k: e[k] for k in keep} for e in json.loads((run / "metrics.json").read_text())["epochs"]]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    assert main(["train", *ARGS, "--out", str(out)]) == 0
    (run,) = out.iterdir()
    return run


def _interrupt_at(monkeypatch, call: int) -> None:
    """Ctrl-C in the middle of a step: as a client takes in the ``call``-th cut gradient."""
    receive, calls = Party._receive_gradient, [0]

    def interrupted(self, *args):
        calls[0] += 1
        if calls[0] == call:
            raise KeyboardInterrupt
        return receive(self, *args)

    monkeypatch.setattr(Party, "_receive_gradient", interrupted)


@pytest.mark.parametrize("call", [1, 60])  # before the first checkpoint; in epoch 2, between checkpoints
def test_ctrl_c_then_resume_reaches_the_uninterrupted_weights(uninterrupted, tmp_path, monkeypatch, capsys, call):
    _interrupt_at(monkeypatch, call)
    assert main(["train", *ARGS, "--out", str(tmp_path)]) == 130
    (run,) = tmp_path.iterdir()
    out = capsys.readouterr().out
    assert f"splitlearn train --resume {run}" in out.replace("\n", "")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finished"] is False and not (run / "weights").exists()
    position = run / "checkpoints" / "position.json"
    assert position.exists() == (call > 1)  # the first checkpoint after step 0 comes at step 20
    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0
    assert "resuming" in capsys.readouterr().out
    expected, got = _weights(uninterrupted), _weights(run)
    assert sorted(got) == sorted(expected)
    for name, tensors in expected.items():
        assert tensors.keys() == got[name].keys()
        assert all(t.equal(got[name][k]) for k, t in tensors.items()), f"{name}: weights differ"
    assert _epochs(run) == _epochs(uninterrupted)  # losses, accuracy and leakage too
    resumed_at = json.loads((run / "metrics.json").read_text()).get("resumed_at_step")
    assert resumed_at is None if call == 1 else resumed_at > 45  # went on from a checkpoint in epoch 2, not from the start
    assert not (run / "checkpoints").exists()  # removed once finished


def test_resume_refuses_what_it_cannot_resume(uninterrupted, tmp_path, capsys):
    assert main(["train", "--resume", str(uninterrupted)]) == 2
    assert "has finished: there is nothing to resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(uninterrupted), "--epochs", "3"]) == 2
    assert "--resume goes on with the run's own config.json; drop --epochs" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "is not a run folder: it has no config.json" in capsys.readouterr().err
