"""Files planted in a run folder: every command that reads one refuses it in one line naming the
file and the field, and never with a traceback from deep inside (status, predict, attack, report).
The same for the server's position.json, whose run folder must lie inside the runs folder."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from splitlearn import deploy
from splitlearn.cli.app import main
from splitlearn.config import load_config
from splitlearn.runner import fingerprint

STATUS = {"state": "training", "updated": 1.0, "seconds": 2.0, "epoch": 1, "next_batch": 3, "step": 7, "holder": "client0",
          "clients": ["client0", "client1"], "connected": ["client0"], "absent": [], "connects": {"client0": 1},
          "bytes_sent": {"client0": 10}, "bytes_received": {"client0": 20}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--epochs", "1", "--clients", "1", "--out", str(out)]) == 0
    (run,) = out.iterdir()
    return run


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / trained.name
    shutil.copytree(trained, copy)
    return copy


def _refused(capsys, *argv) -> str:
    """Run the command; it must exit 2 with one line on stderr, which is returned."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _json(path, value) -> None:
    path.write_text(json.dumps(value))


def _edit_json(path, **changes) -> None:
    _json(path, json.loads(path.read_text()) | changes)


@pytest.mark.parametrize("status, field", [
    ({k: v for k, v in STATUS.items() if k != "updated"}, "'updated' is a required property"),  # was KeyError 'updated'
    (STATUS | {"updated": "yesterday"}, "field 'updated'"),
    (STATUS | {"clients": 5}, "field 'clients'"),  # was TypeError
    (STATUS | {"connects": {"client0": "many"}}, "field 'connects.client0'"),
    (STATUS | {"state": "x" * 5000}, "field 'state'"),
    ([STATUS], "the top level"),
])
def test_status_refuses_a_planted_status_file(run, capsys, status, field):
    _json(run / "status.json", status)
    err = _refused(capsys, "status", str(run))
    assert "status.json" in err and field in err and len(err) < 600


def test_status_prints_planted_markup_as_text(run, capsys):
    _json(run / "status.json", STATUS | {"state": "[/bold] done", "clients": ["[red]client0"]})  # was rich's MarkupError
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert "[/bold] done" in out and "[red]client0" in out


def test_status_of_a_folder_without_status_says_so(run, capsys):
    assert "status.json does not exist" in _refused(capsys, "status", str(run))


@pytest.mark.parametrize("metrics, field", [
    ({"splitlearn_version": "0.1.0", "finished": True, "epochs": "all"}, "field 'epochs'"),
    ({"splitlearn_version": "0.1.0", "finished": "yes", "epochs": []}, "field 'finished'"),  # was any truthy value
    ({"splitlearn_version": "0.1.0", "finished": True}, "'epochs' is a required property"),
    ({"splitlearn_version": 1, "finished": True, "epochs": []}, "field 'splitlearn_version'"),
    ([], "the top level"),  # was AttributeError: 'list' object has no attribute 'get'
])
@pytest.mark.parametrize("command", [["predict"], ["attack", "reconstruction"], ["report"]])
def test_commands_refuse_a_planted_metrics_file(run, capsys, metrics, field, command):
    _json(run / "metrics.json", metrics)
    err = _refused(capsys, *command, str(run))
    assert "metrics.json" in err and field in err


def test_report_names_a_bad_epoch_field(run, capsys):
    _edit_json(run / "metrics.json", epochs=[{"epoch": 1, "test_accuracy": 0.9, "dcor": "high"}])
    err = _refused(capsys, "report", str(run))
    assert "metrics.json: field 'epochs[0].dcor'" in err


@pytest.mark.parametrize("attacks, field", [
    ({"reconstruction MSE": "low"}, "field 'reconstruction MSE'"),
    ({"classes": 1.5}, "field 'classes'"),
    ("none", "the top level"),
])
@pytest.mark.parametrize("command", [["report"], ["attack", "reconstruction", "--aux", "200"]])
def test_commands_refuse_a_planted_attacks_file(run, capsys, attacks, field, command):
    _json(run / "attacks.json", attacks)
    err = _refused(capsys, *command, str(run))
    assert "attacks.json" in err and field in err


@pytest.mark.parametrize("config, text", [
    ([1, 2], "the top level must be a table of settings, got list"),
    ({"split": 5}, "split must be a table of settings"),  # was AttributeError or KeyError
    ({"train": {"lr": "fast"}}, "TrainConfig.lr must be float"),
    ({"privacy": {"nopeek_a1": "x" * 10_000}}, "more characters cut"),
])
@pytest.mark.parametrize("command", [["predict"], ["report"]])
def test_commands_refuse_a_planted_config(run, capsys, config, text, command):
    _json(run / "config.json", config)
    err = _refused(capsys, *command, str(run))
    assert "config.json" in err and text in err and len(err) < 700


def _weights(run):
    (path,) = (run / "weights").glob("client*.safetensors")
    return path


def _resave(path, change) -> None:
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(path))
    tensors, metadata = change(tensors, metadata)
    save_file(tensors, str(path), metadata=metadata)


def _first_weight(tensors):
    return next(k for k in tensors if k.startswith("model/") and k.endswith("weight"))


@pytest.mark.parametrize("change, text", [
    (lambda t, m: (t | {_first_weight(t): torch.zeros(3, 3)}, m), "the segment's is float32"),  # was a RuntimeError page
    (lambda t, m: (t | {(k := _first_weight(t)): t[k].double()}, m), "is float64"),
    (lambda t, m: (t | {"model/0/planted": torch.zeros(1)}, m), "belongs to none of this party's segments"),
    (lambda t, m: ({k: v for k, v in t.items() if k != _first_weight(t)}, m), "lacks 1 of the segments' tensors"),
    (lambda t, m: (t | {"optim/999/momentum_buffer": torch.zeros(1)}, m), "belongs to none of this party's segments"),
    (lambda t, m: (t, None), "not a weights file of splitlearn"),  # was TypeError: 'NoneType' is not subscriptable
    (lambda t, m: (t, m | {"meta": "{"}), "not a weights file of splitlearn"),
    (lambda t, m: (t, m | {"meta": json.dumps({"nodes": "all"})}), "state is for nodes 'all'"),
    (lambda t, m: (t, m | {"meta": json.dumps(json.loads(m["meta"]) | {"optim": {"param_groups": [{"lr": "fast"}], "scalars": {}}})}),
     "optimiser parameter group 0"),
])
def test_predict_refuses_planted_weights(run, capsys, change, text):
    path = _weights(run)
    _resave(path, change)
    err = _refused(capsys, "predict", str(run))
    assert path.name in err and text in err


def test_predict_refuses_weights_that_are_not_safetensors(run, capsys):
    _weights(run).write_bytes(b"\x00" * 64)
    assert "not a weights file of splitlearn" in _refused(capsys, "predict", str(run))


def test_untouched_copy_still_predicts(run, capsys):  # the checks refuse only what is wrong
    assert main(["predict", str(run)]) == 0
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("images, text", [
    ({"originals": torch.zeros(100_000, 1, 1, 1), "reconstructions": torch.zeros(100_000, 1, 1, 1)}, "not a batch of up to 64 images"),
    ({"originals": torch.zeros(4, 1, 8, 8)}, "holds no tensor 'reconstructions'"),
    ({"originals": torch.zeros(4, 1, 8, 8), "reconstructions": torch.zeros(4, 1, 9, 9)}, "like the originals"),
])
def test_report_refuses_planted_reconstructions(run, capsys, images, text):
    save_file(images, str(run / "attack-reconstruction.safetensors"))
    err = _refused(capsys, "report", str(run))
    assert "attack-reconstruction.safetensors" in err and text in err


# -- the server's position.json --------------------------------------------------------------------


@pytest.fixture
def served(tmp_path, certs_folder):
    config_path = tmp_path / "config.json"
    _json(config_path, {"data": {"name": "digits", "limit_train": 120, "limit_test": 40}, "model": {"name": "mlp"},
                        "split": {"configuration": "vanilla", "clients": 2}, "out": str(tmp_path / "runs")})
    config = load_config(config_path)
    position = tmp_path / "checkpoints" / "position.json"
    good = {"tag": fingerprint(config), "run_dir": str(tmp_path / "runs" / "20261207-000000-vanilla-digits"), "finished": False,
            "seconds": 1.0, "coordinator": {"step": 4, "committed": 4, "holder": "client0", "epoch": 1, "next_batch": 2},
            "history": []}

    def serve(position_value):
        position.parent.mkdir(exist_ok=True)
        _json(position, position_value)
        with pytest.raises((ValueError, RuntimeError)) as caught:
            deploy.serve(config, listen="127.0.0.1:0", certs=certs_folder, insecure=True, join_timeout=0.5,
                         checkpoints=position.parent)
        return caught.value

    return serve, good, tmp_path


@pytest.fixture(scope="module")
def certs_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("certs")
    assert main(["certs", "--out", str(out), "--server-name", "localhost", "--clients", "client0,client1"]) == 0
    return out


@pytest.mark.parametrize("edit, text", [
    (lambda p: {k: v for k, v in p.items() if k != "coordinator"}, "'coordinator' is a required property"),  # was KeyError
    (lambda p: p | {"coordinator": p["coordinator"] | {"step": "four"}}, "field 'coordinator.step'"),
    (lambda p: p | {"coordinator": p["coordinator"] | {"holder": "mallory"}}, "names holder 'mallory'"),
    (lambda p: p | {"history": [{"epoch": "one"}]}, "field 'history[0].epoch'"),
    (lambda p: p | {"epoch_losses": {"server": [["x", 1.0]]}}, "field 'epoch_losses.server[0][0]'"),
])
def test_serve_refuses_a_planted_position(served, edit, text):
    serve, good, _ = served
    error = serve(edit(good))
    assert "position.json" in str(error) and text in str(error), error


@pytest.mark.parametrize("run_dir", ["{tmp}/elsewhere/run", "{tmp}/runs/../elsewhere", "{tmp}/runs", "/etc"])
def test_serve_keeps_the_run_folder_inside_the_runs_folder(served, run_dir):
    serve, good, tmp = served  # before, serve wrote its run folder wherever position.json said
    error = serve(good | {"run_dir": run_dir.format(tmp=tmp)})
    assert "field 'run_dir'" in str(error) and "is not inside" in str(error), error
    assert not (tmp / "elsewhere").exists()
