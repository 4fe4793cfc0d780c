"""The talk's tables recomputed: AlexNet exactly, analytic scaling, FLOPs checked against FlopCounterMode."""

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from splitlearn.efficiency import alexnet_rows, bandwidth_table, comm_model, compute_table, profile, training_flops
from splitlearn.models import build_model, fc_parameter_share
from splitlearn.split.segments import split_model

CIFAR = (3, 32, 32)


@pytest.fixture(scope="module")
def vgg():
    return profile("vgg16", in_shape=CIFAR, num_classes=10, cut="features.4")


@pytest.fixture(scope="module")
def resnet():
    return profile("resnet50", in_shape=CIFAR, num_classes=100, cut="relu")


def test_alexnet_rows_equal_the_talk():
    rows = alexnet_rows()
    assert all(talk == ours for talk, ours in rows)
    ours = [o for _, o in rows]
    assert sum(r.parameters for r in ours) == 62_378_344
    assert (ours[1].output_size, ours[1].parameters) == ("55x55x96", 34_944)
    assert (ours[9].layer, ours[9].weights, ours[9].biases) == ("FC-1", 37_748_736, 4_096)
    assert round(fc_parameter_share(ours), 2) == 0.94


def test_training_flops_by_hand():
    with torch.device("meta"):
        layer = nn.Linear(4, 3)
    # forward x @ W^T: 2 * 4 * 3 per sample; backward: only dW (the input needs no gradient), the same again.
    assert training_flops(layer, (4,), batch=2) == 48


def test_client_flops_match_flop_counter_on_a_real_segment(vgg):
    torch.manual_seed(0)
    client, _ = split_model(build_model("vgg16", in_shape=CIFAR, num_classes=10), "features.4")
    with FlopCounterMode(display=False) as counter:
        client(torch.randn(1, *CIFAR)).sum().backward()
    assert vgg.flops_client == counter.get_total_flops()
    assert vgg.cut_values == 64 * 16 * 16 and vgg.params_client == sum(p.numel() for p in client.parameters())


def test_compute_table_scales_analytically(vgg):
    table = compute_table(vgg, epochs=30)
    sgd, fl, split = table.rows
    assert table.clients == (100, 500) and [r.talk for r in table.rows] == [(29.4, 5.89), (29.4, 5.89), (0.1548, 0.03)]
    assert sgd.ours == fl.ours
    for row in table.rows:
        assert row.ours[1] == pytest.approx(row.ours[0] / 5)
    assert sgd.ours[0] == pytest.approx(vgg.flops_model * 500 * 30 / 1e12)
    assert split.ours[0] == pytest.approx(vgg.flops_client * 500 * 30 / 1e12)
    assert compute_table(vgg, epochs=60).rows[2].ours[0] == pytest.approx(2 * split.ours[0])
    assert sgd.ours[0] / split.ours[0] == pytest.approx(vgg.flops_model / vgg.flops_client)


def test_bandwidth_table_formulas(resnet):
    n, q = resnet.params_model, resnet.cut_values
    assert q == 64 * 32 * 32 and resnet.params_client == 3 * 64 * 9 + 2 * 64
    assert n == sum(p.numel() for p in build_model("resnet50", in_shape=CIFAR, num_classes=100).parameters())
    table = bandwidth_table(resnet, epochs=10, batch_size=64)
    sgd, fl, split = table.rows
    gb = 4 * 10 / 1e9
    assert sgd.ours == pytest.approx((math.ceil(500 / 64) * 2 * n * gb, math.ceil(100 / 64) * 2 * n * gb))
    assert fl.ours == pytest.approx((2 * n * gb, 2 * n * gb))
    assert split.ours == pytest.approx(tuple((2 * 50_000 / k * q + resnet.params_client) * gb for k in (100, 500)))
    # Per-client SplitNN traffic less the relay scales exactly as 1/K.
    relay = resnet.params_client * gb
    assert split.ours[1] - relay == pytest.approx((split.ours[0] - relay) / 5)
    k_star = comm_model.crossover(p=50_000, q=q, n=n, eta=resnet.eta)
    assert 100 < k_star < 500  # SplitNN loses to FL at 100 clients and wins at 500, as in the talk
    assert split.ours[0] > fl.ours[0] and split.ours[1] < fl.ours[1]
