"""Simulation takes a TensorDataset or any map-style Dataset of (x, y) pairs, and names a bad sample."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import splitlearn as sl
from splitlearn.data.dataset import as_array_dataset


class Pairs(Dataset):
    """A user's own data set: numpy features, numpy integer labels."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _xy(n=160, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def _train(train, test):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2))
    sim = sl.Simulation(sl.vanilla(model, 2, in_shape=(10,)), train=train, test=test, clients=2, batch_size=16,
                        optimizer=sl.OptimizerSpec("sgd", lr=0.1, momentum=0.9))
    return sim.fit(5)[-1]["test_accuracy"]


def test_tensor_dataset_and_a_custom_dataset_train_alike():
    x, y = _xy()
    tensors = _train(TensorDataset(x[:120], y[:120]), TensorDataset(x[120:], y[120:]))
    custom = _train(Pairs(x[:120].numpy(), y[:120].numpy()), Pairs(x[120:].numpy(), y[120:].numpy()))
    arrays = _train(sl.ArrayDataset(x[:120], y[:120]), sl.ArrayDataset(x[120:], y[120:], torch.arange(120, 160)))
    assert tensors == custom == arrays and tensors >= 0.85


def test_conversion_keeps_values_order_and_dtype():
    x, y = _xy(8)
    ds = as_array_dataset(Pairs(x.double().numpy(), y.tolist()), name="train")
    assert ds.features.dtype == torch.float32 and torch.equal(ds.features, x) and torch.equal(ds.labels, y)
    assert torch.equal(ds.sample_ids, torch.arange(8))
    same = sl.ArrayDataset(x, y)
    assert as_array_dataset(same) is same


@pytest.mark.parametrize(("data", "message"), [
    (Pairs([np.zeros(3)] * 2, [0, 1.5]), r"train\[1\]: y must be an integer class, got 1.5"),
    (Pairs([np.zeros(3), np.zeros(4)], [0, 1]), r"train\[1\]: x has shape \(4,\), but train\[0\] has \(3,\)"),
    (Pairs(["abc", "def"], [0, 1]), r"train\[0\]: x must be a tensor or an array, got str"),
    (TensorDataset(torch.zeros(2, 3)), r"train\[0\] must be an \(x, y\) pair, got tuple of length 1"),
    (Pairs([np.zeros(3)], [-1]), r"train\[0\]: y must be a class index >= 0"),
    (Pairs([], []), r"train is empty"),
    (42, r"train must be an ArrayDataset or a map-style Dataset"),
])
def test_bad_samples_are_named_by_index(data, message):
    with pytest.raises(ValueError, match=message):
        as_array_dataset(data, name="train")


def test_your_data_reaches_a_run_folder_and_the_report(tmp_path):
    import json

    from splitlearn.cli.app import main

    x, y = _xy()
    config = sl.load_config(overrides={"model.name": "mlp", "train.epochs": 2, "split.clients": 2, "out": str(tmp_path),
                                       "privacy.leakage_batch_size": 20})
    run = sl.train(config, data=(TensorDataset(x[:120], y[:120]), Pairs(x[120:].numpy(), y[120:].numpy())))
    assert run.run_dir.parent == tmp_path and run.run_dir.name.endswith("-vanilla-own-data")
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert metrics["finished"] and all(0 < e["dcor"] <= 1 for e in metrics["epochs"])
    assert json.loads((run.run_dir / "config.json").read_text())["data"]["name"] == "own-data"
    assert main(["report", str(run.run_dir)]) == 0 and (run.run_dir / "report.html").stat().st_size > 1000
