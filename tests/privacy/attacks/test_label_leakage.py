"""Label leakage from cut gradients: the attacks work undefended and lose their edge under noise."""

import pytest
import torch
from torch import nn

from splitlearn.data import load_breast_cancer, load_digits
from splitlearn.privacy.attacks.label_leakage import (
    GradientNoise,
    GradientRecorder,
    cluster_accuracy,
    direction_scores,
    leak_auc,
    norm_scores,
)
from splitlearn.split import OptimizerSpec, Vertical, configs
from splitlearn.split.compression import Compressor, compress
from splitlearn.split.messages import Gradient, StartStep
from splitlearn.split.simulation import Simulation


@pytest.fixture(scope="module")
def cancer():
    return load_breast_cancer()


def _ushaped(cancer, scale):
    train, test = cancer
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))
    sim = Simulation(
        configs.ushaped(model, [3, 5], in_shape=(30,)), train=train, test=test, batch_size=32,
        optimizer=OptimizerSpec("sgd", lr=0.05, momentum=0.9), outbox={"client": GradientNoise(scale)},
    )
    recorder = GradientRecorder("server")
    sim.transport.observers.append(recorder)
    history = sim.fit(3)
    label_of = dict(zip(train.sample_ids.tolist(), train.labels.tolist()))
    return recorder, (lambda ids: torch.tensor([label_of[i] for i in ids.tolist()])), history[-1]["test_accuracy"]


def test_ushaped_server_infers_labels_and_noise_defends(cancer):
    recorder, labels, accuracy = _ushaped(cancer, 0.0)
    ids, scores = direction_scores(recorder)
    undefended = leak_auc(scores, labels(ids))
    assert undefended >= 0.9 and accuracy >= 0.95
    assert len(ids) == 3 * len(cancer[0])  # every training sample of every epoch was seen

    recorder, labels, defended_accuracy = _ushaped(cancer, 3.0)
    ids, scores = direction_scores(recorder)
    defended = leak_auc(scores, labels(ids))
    assert defended <= undefended - 0.25  # the defence removes most of the leak...
    assert defended_accuracy >= accuracy - 0.03  # ...at a small accuracy cost
    ids, scores = norm_scores(recorder)
    assert 0.5 <= leak_auc(scores, labels(ids)) <= 1.0


def test_vertical_feature_client_infers_labels(cancer):
    """A client holding features but no labels learns them from the gradients it receives."""
    train, _ = cancer
    torch.manual_seed(1)
    model = Vertical([nn.Linear(15, 8), nn.Linear(15, 8)], nn.Sequential(nn.ReLU(), nn.Linear(16, 2)))
    sim = Simulation(configs.vertical(model, in_shape=(30,)), train=train, clients=2, batch_size=32)
    recorder = GradientRecorder("client1")
    sim.transport.observers.append(recorder)
    sim.fit(2)
    label_of = dict(zip(train.sample_ids.tolist(), train.labels.tolist()))
    ids, scores = direction_scores(recorder)
    assert leak_auc(scores, torch.tensor([label_of[i] for i in ids.tolist()])) >= 0.9


def test_multiclass_cluster_attack_beats_chance():
    train, _ = load_digits()
    train = train.subset(torch.arange(480))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
    sim = Simulation(configs.ushaped(model, [3, 5], in_shape=(1, 8, 8)), train=train, batch_size=48)
    recorder = GradientRecorder("server")
    sim.transport.observers.append(recorder)
    sim.fit(1)
    label_of = dict(zip(train.sample_ids.tolist(), train.labels.tolist()))
    accuracy = cluster_accuracy(recorder, lambda ids: torch.tensor([label_of[i] for i in ids.tolist()]), 10)
    assert accuracy >= 0.5  # chance is 0.1


def test_bad_input():
    with pytest.raises(ValueError, match="noise scale must be >= 0"):
        GradientNoise(-1.0)
    with pytest.raises(ValueError, match="received no gradients"):
        norm_scores(GradientRecorder("nobody"))
    with pytest.raises(ValueError, match="binary labels"):
        leak_auc(torch.rand(4), torch.tensor([0, 1, 2, 1]))


def test_recorder_sees_compressed_gradients_as_the_receiver_decodes_them():
    g = torch.randn(4, 3)
    recorder = GradientRecorder("client")
    recorder(StartStep("coordinator", "client", 1, mode="train", split="train", sample_ids=torch.arange(4)))
    recorder(Compressor("int8")(Gradient("server", "client", 1, src="top", dst="bottom", tensor=g)))
    ids, grads = recorder.gradients()
    assert torch.equal(ids, torch.arange(4)) and torch.equal(grads, compress(g, "int8").decode())
