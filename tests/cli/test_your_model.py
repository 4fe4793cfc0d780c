"""The CLI trains a model of the user's own, named as package.module:factory, and predicts with it."""

import csv
import json
from pathlib import Path

import pytest
from torch import nn

from splitlearn.cli.app import main

FACTORY = "tests.cli.test_your_model:tiny_net"


class TinyNet(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(4 * width, 10)

    def forward(self, x):
        return self.head(self.pool(self.stem(x)).flatten(1))


def tiny_net(width: int = 8) -> nn.Module:
    return TinyNet(width)


def _config(tmp_path: Path, **data) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"data": {"limit_train": 256, "limit_test": 128, **data}}))
    return str(path)


def _train(tmp_path, *args) -> Path:
    out = tmp_path / "runs"
    assert main(["train", "--config", _config(tmp_path), "--epochs", "1", "--clients", "2", "--out", str(out), *args]) == 0
    (run,) = out.iterdir()
    return run


def test_factory_model_trains_and_predicts(tmp_path, capsys):
    run = _train(tmp_path, "--model", FACTORY, "--model-kwargs", '{"width": 6}', "--cut", "stem")
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == {"name": FACTORY, "cut": ["stem"], "kwargs": {"width": 6}}
    assert json.loads((run / "metrics.json").read_text())["finished"]
    assert main(["predict", str(run)]) == 0
    rows = list(csv.DictReader((run / "predictions-test.csv").open()))
    assert len(rows) == 128


def test_monai_densenet_trains_and_predicts(tmp_path):
    pytest.importorskip("monai")
    kwargs = '{"spatial_dims": 2, "in_channels": 1, "out_channels": 10}'
    run = _train(tmp_path, "--model", "monai.networks.nets:DenseNet121", "--model-kwargs", kwargs,
                 "--cut", "features.denseblock2", "--image-size", "32")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finished"] and metrics["epochs"][0]["train_loss"] > 0
    assert main(["predict", str(run)]) == 0
    assert (run / "predictions-test.csv").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "no_such_pkg.nets:Net", "--cut", "a"], "cannot import 'no_such_pkg.nets'"),
    (["--model", "tests.cli.test_your_model:nothing", "--cut", "a"], "has no 'nothing'"),
    (["--model", FACTORY, "--model-kwargs", '{"depth": 3}', "--cut", "stem"], "with arguments {\"depth\": 3} failed: TypeError"),
    (["--model", FACTORY], "give --cut"),
    (["--model", FACTORY, "--cut", "stm"], "names no module of TinyNet; close names: stem"),
    (["--model", FACTORY, "--cut", "head"], "is the end of TinyNet"),
])
def test_factory_errors_are_one_line(tmp_path, capsys, args, message):
    assert main(["train", "--config", _config(tmp_path), "--epochs", "1", "--out", str(tmp_path / "runs"), *args]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_model_kwargs_must_be_a_json_object(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--model-kwargs", "[1, 2]"])
    assert "must be a JSON object" in capsys.readouterr().err


def test_image_size_resizes_the_data():
    from splitlearn.config import load_config
    from splitlearn.runner import assembly

    train, test = assembly._load(load_config(overrides={"data.image_size": 12, "data.limit_train": 64}), None)
    assert train.sample_shape == (1, 12, 12) and test.sample_shape == (1, 12, 12)
    assert float(train.features.std()) > 0.1  # resized images, not zeros
    with pytest.raises(ValueError, match="applies to images"):
        assembly._load(load_config(overrides={"data.image_size": 12, "data.name": "breast_cancer"}), None)


def test_a_model_file_in_the_working_folder_is_found(tmp_path, monkeypatch):
    (tmp_path / "site_models_7f3a.py").write_text(
        "from torch import nn\n"
        "def make(width=4):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))\n"
    )
    monkeypatch.chdir(tmp_path)
    run = _train(tmp_path, "--model", "site_models_7f3a:make", "--model-kwargs", '{"width": 12}')
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["kwargs"] == {"width": 12} and json.loads((run / "metrics.json").read_text())["finished"]
