import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from splitlearn.accounting import FlopMeter
from splitlearn.models.cnn import small_cnn
from splitlearn.split import configs
from splitlearn.split.simulation import Simulation

from .conftest import data


def mlp(*widths: int) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*layers[:-1])


def train(split, ds, *, epochs=1, **kw) -> tuple[Simulation, FlopMeter]:
    meter = FlopMeter()
    sim = Simulation(split, train=ds, compute=meter, **kw)
    sim.fit(epochs)
    return sim, meter


def test_mlp_flops_match_hand_count(tabular):
    b = 8
    sim, meter = train(configs.vanilla(mlp(10, 16, 3), 2), tabular, test=data(5, 10, seed=1), batch_size=b)
    flops = meter.summary(sim.plan)
    # Client: Linear(10, 16). Its input is raw data, so backward computes only the weight grad.
    assert flops["by_node"]["client"] == {
        "forward": 2 * b * 10 * 16,
        "backward": 2 * b * 10 * 16,  # grad weight
        "eval": 2 * 5 * 10 * 16,  # forward of the 5 test samples
    }
    # Server: Linear(16, 3) on a received activation, which needs its gradient.
    assert flops["by_node"]["server"] == {
        "forward": 2 * b * 16 * 3,
        "backward": 2 * b * 16 * 3 + 2 * b * 16 * 3,  # grad input + grad weight
        "eval": 2 * 5 * 16 * 3,
    }
    assert flops["total"] == sum(sum(p.values()) for p in flops["by_node"].values())
    json.dumps(flops)


def test_conv_flops_match_hand_count():
    n, c_in, c_out, h, k = 4, 2, 5, 6, 3
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(c_in, c_out, k), nn.ReLU(), nn.Flatten(), nn.Linear(c_out * 4 * 4, 3))
    sim, meter = train(configs.vanilla(model, 2), data(n, c_in, h, h), batch_size=n)
    h_out = h - k + 1
    conv = 2 * n * c_out * h_out * h_out * c_in * k * k
    assert meter.flops["client"] == {"forward": conv, "backward": conv, "eval": 0}  # backward: grad weight only
    linear = 2 * n * (c_out * h_out * h_out) * 3
    assert meter.flops["server"] == {"forward": linear, "backward": 2 * linear, "eval": 0}


def _centralised(model: nn.Module, ds) -> int:
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(ds.features), ds.labels).backward()
    return counter.get_total_flops()


def _vertical():
    torch.manual_seed(0)
    return configs.Vertical([nn.Linear(5, 8), nn.Linear(5, 8)], nn.Sequential(nn.ReLU(), nn.Linear(16, 3)))


def _cnn():
    torch.manual_seed(0)
    return small_cnn(in_channels=1, image_size=6, width=2, num_classes=3)


@pytest.mark.parametrize(
    ("make", "shape", "kw"),
    [
        (lambda: (m := mlp(10, 16, 16, 3), configs.vanilla(m, 2)), (10,), {"clients": 3}),
        (lambda: (m := mlp(10, 16, 16, 3), configs.ushaped(m, [2, 4])), (10,), {}),
        (lambda: (m := mlp(10, 16, 16, 8, 3), configs.multihop(m, [2, 4])), (10,), {}),
        (lambda: (m := _vertical(), configs.vertical(m)), (10,), {}),
        (lambda: (m := _cnn(), configs.vanilla(m, "features.1")), (1, 6, 6), {}),  # a conv on each side
    ],
    ids=["vanilla-3-clients", "ushaped", "multihop", "vertical", "cnn"],
)
def test_split_flops_sum_to_centralised(make, shape, kw):
    model, split = make()
    ds = data(24, *shape)
    sim, meter = train(split, ds, epochs=2, batch_size=5, **kw)
    flops = meter.summary(sim.plan)
    # FLOPs are linear in the batch size, so two epochs of any batching are twice one full batch.
    assert flops["total"] == 2 * _centralised(model, ds)
    assert flops["total"] == sum(r["forward"] + r["backward"] for r in flops["by_role"].values())


def test_round_robin_clients_share_a_role_and_average():
    ds = data(24, 10)
    sim, meter = train(configs.vanilla(mlp(10, 16, 3), 2), ds, clients=4, batch_size=4)
    flops = meter.summary(sim.plan, parties={"client": 4})
    client = flops["by_role"]["client"]
    assert client["forward"] == 2 * 24 * 10 * 16
    assert flops["mean_per_party"]["client"] == {k: v / 4 for k, v in client.items()}
    assert flops["mean_per_party"]["server"] == flops["by_role"]["server"]


def test_disabled_meter_is_a_shared_no_op():
    meter = FlopMeter(enabled=False)
    assert meter("forward", "a") is meter("backward", "b")
    with meter("forward", "a"):
        nn.Linear(3, 3)(torch.ones(2, 3))
    assert not meter.flops and not meter.saved


def test_reused_counts_equal_counting_every_step(tabular):
    """Counts are reused per (phase, node, batch size): the totals equal counting every call."""
    totals = []
    for reuse in (True, False):
        meter = FlopMeter()
        hook = meter if reuse else (lambda phase, node, batch: meter(phase, node))
        sim = Simulation(configs.ushaped(mlp(10, 16, 8, 3), [2, 4]), train=tabular, test=data(7, 10, seed=2),
                         batch_size=6, compute=hook)
        sim.fit(2)  # the last batch of each epoch is smaller, so two batch sizes are in play
        totals.append(meter.summary(sim.plan)["by_node"])
    assert totals[0] == totals[1]
    assert len({k[2] for k in meter._known}) == 0  # the counting-every-call meter stored nothing
