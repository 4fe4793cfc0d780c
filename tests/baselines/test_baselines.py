"""FedAvg and large-batch SGD against centralised training, and their accounting."""

import copy

import pytest
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from splitlearn.baselines import ModelGradients, fedavg, large_batch_sgd
from splitlearn.data.dataset import ArrayDataset
from splitlearn.models.cnn import small_cnn
from splitlearn.split.coordinator import shuffled_batches
from splitlearn.split.messages import Weights
from splitlearn.split.state import OptimizerSpec


def _data(n: int, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    return ArrayDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return small_cnn(width=4)


def _state_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def test_fedavg_with_one_client_is_centralised_training(model):
    train, spec = _data(40), OptimizerSpec("sgd", lr=0.1)
    run = fedavg(model, train=train, clients=1, rounds=2, local_epochs=1, batch_size=16, optimizer=spec, seed=3)
    central = copy.deepcopy(model)
    for r in (1, 2):  # one local epoch per round, and a fresh optimiser per round as FedAvg's clients have
        opt = spec.build(central.parameters())
        for b in shuffled_batches(torch.arange(40), 16, key=(3, r, 0, 0)):
            opt.zero_grad()
            F.cross_entropy(central(train.features[b]), train.labels[b]).backward()
            opt.step()
    for (name, a), b in zip(run.model.state_dict().items(), central.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(run.model.state_dict()["features.0.weight"], model.state_dict()["features.0.weight"])


def test_one_synchronous_step_is_a_step_on_the_union_batch(model):
    train, spec = _data(32), OptimizerSpec("sgd", lr=0.1, momentum=0.9)
    # Two clients of 16 samples, batches of 16: one epoch is one step over both shards.
    run = large_batch_sgd(model, train=train, clients=2, epochs=1, batch_size=16, optimizer=spec)
    central = copy.deepcopy(model)
    opt = spec.build(central.parameters())
    F.cross_entropy(central(train.features), train.labels).backward()
    opt.step()
    for (name, a), b in zip(run.model.state_dict().items(), central.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    kinds = [r.kind for r in run.log.records]
    assert kinds == ["ModelGradients"] * 2 + ["Weights"] * 2


@pytest.mark.parametrize("method", [fedavg, large_batch_sgd])
def test_bytes_are_those_of_the_recorded_messages(model, method):
    rounds = {"rounds": 2} if method is fedavg else {"epochs": 2}
    run = method(model, train=_data(48), test=_data(20, seed=1), clients=3, batch_size=8, **rounds)
    acc = run.metrics["accounting"]
    records = run.log.records
    assert acc["bytes"]["total"] == sum(r.payload_bytes for r in records) > 0
    for party in ("client0", "client1", "client2", "server"):
        assert acc["bytes"]["parties"][party]["sent"] == sum(r.payload_bytes for r in records if r.sender == party)
    per_client = acc["bytes"]["mean_per_party"]["client"]
    state = _state_bytes(model)
    if method is fedavg:  # one download and one upload of the whole model per round
        assert per_client["sent"] == per_client["received"] == 2 * state
    else:  # 16 samples in batches of 8: two steps per epoch, each one gradient up and the weights down
        assert per_client["sent"] == per_client["received"] == 2 * 2 * state
    assert {r.kind for r in records} == ({"Weights"} if method is fedavg else {"Weights", "ModelGradients"})
    assert len(run.metrics["epochs"]) == 2 and 0 <= run.metrics["epochs"][-1]["test_accuracy"] <= 1
    assert set(acc["memory"]["client"]) == {"parameters", "buffers", "gradients", "optimizer", "activations", "total"}


def test_fedavg_client_flops_are_rounds_epochs_and_shard_times_per_sample(model):
    rounds, local_epochs, shard = 2, 2, 16
    run = fedavg(model, train=_data(4 * shard), clients=4, rounds=rounds, local_epochs=local_epochs, batch_size=5)
    x, y = _data(1).features, _data(1).labels
    probe = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(probe(x), y).backward()
    per_sample = counter.get_total_flops()
    flops = run.metrics["accounting"]["flops"]
    client = flops["mean_per_party"]["client"]
    assert client["forward"] + client["backward"] == rounds * local_epochs * per_sample * shard
    assert flops["by_role"]["server"]["total"] == 0 and flops["total"] == 4 * client["total"]


def test_messages_carry_what_was_sent():
    grads = ModelGradients("client0", "server", 1, grads={"w": torch.ones(3)}, samples=2)
    assert grads.kind == "ModelGradients" and grads.payload_bytes == 12
    assert Weights("server", "client0", 1, destination="client0", state={"w": torch.ones(2)}).payload_bytes == 8
