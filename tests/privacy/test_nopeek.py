"""NoPeek: the penalty's schedule, collapse detection, and its effect on digits."""

import pytest
import torch

from splitlearn.data import load_digits
from splitlearn.models import build_model
from splitlearn.privacy import NoPeek, detect_collapse, distance_correlation, leakage
from splitlearn.split import OptimizerSpec, configs
from splitlearn.split.simulation import Simulation

BATCH = 64  # the one batch size at which held-out dCor is compared


def test_weight_ramps_linearly_then_stays():
    nopeek = NoPeek(4.0, a2=2.0, ramp_epochs=4)
    weights = []
    for epoch in range(1, 7):
        nopeek.set_epoch(epoch)
        weights.append(nopeek.weight)
    assert weights == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 2.0])  # a1 / a2 = 2
    assert NoPeek(3.0).weight == 3.0
    x = torch.randn(8, 5)
    z = x[:, :2].tanh()
    assert float(nopeek(x, z)) == pytest.approx(2.0 * float(distance_correlation(x, z)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"a1": -0.1}, "a1 must be"),
        ({"a1": float("nan")}, "a1 must be"),
        ({"a1": 1.0, "a2": 0.0}, "a2 must be"),
        ({"a1": 1.0, "ramp_epochs": -1}, "ramp_epochs"),
        ({"a1": 1.0, "ramp_epochs": 1.5}, "ramp_epochs"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoPeek(**kwargs)


def test_bad_epoch_and_batch():
    nopeek = NoPeek(1.0)
    with pytest.raises(ValueError, match="epoch must be"):
        nopeek.set_epoch(0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        nopeek(torch.randn(1, 3), torch.randn(1, 2))
    with pytest.raises(ValueError, match="at least 2 samples"):
        detect_collapse(torch.randn(1, 3))


def test_detect_collapse_criterion():
    z = torch.randn(50, 8, 2, 2)
    assert not detect_collapse(z)
    assert detect_collapse(torch.zeros_like(z))
    assert detect_collapse(torch.full_like(z, -3.0) + 1e-7 * torch.randn_like(z))
    one_feature = torch.zeros_like(z)
    one_feature[:, 0, 0, 0] = torch.randn(50)
    assert not detect_collapse(one_feature)  # one informative feature is enough


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _train(digits, nopeek, epochs):
    train, test = digits
    torch.manual_seed(0)
    model = build_model("small_cnn", in_shape=(1, 8, 8), num_classes=10)
    split = configs.vanilla(model, "features.4", in_shape=(1, 8, 8))  # Z: (32, 4, 4) after the pool
    sim = Simulation(
        split, train=train, test=test, batch_size=BATCH, optimizer=OptimizerSpec("adam", lr=3e-3),
        penalties={"client": nopeek},
    )
    history = sim.fit(epochs, on_epoch=lambda record: nopeek.set_epoch(record["epoch"] + 1))
    client = split.modules["client"]
    with torch.no_grad():
        z = client(test.features)
    return history[-1]["test_accuracy"], leakage(client, test.features, batch_size=BATCH), z


def test_nopeek_lowers_leakage_and_huge_a1_collapses(digits):
    acc_plain, dcor_plain, z_plain = _train(digits, NoPeek(0.0), epochs=4)
    acc_nopeek, dcor_nopeek, z_nopeek = _train(digits, NoPeek(8.0, ramp_epochs=2), epochs=4)
    acc_huge, dcor_huge, z_huge = _train(digits, NoPeek(1000.0), epochs=4)
    # Measured: dCor 0.97 / accuracy 0.95 (a1 = 0), 0.77 / 0.83 (a1 = 8), 0.0 / 0.10 (a1 = 1000).
    assert dcor_plain > 0.9 and acc_plain > 0.9
    assert dcor_nopeek < dcor_plain - 0.1  # clearly less leakage ...
    assert acc_nopeek > 0.7  # ... at a reasonable accuracy
    assert not detect_collapse(z_plain) and not detect_collapse(z_nopeek)
    assert detect_collapse(z_huge)  # the client gave up: constant Z,
    assert dcor_huge < 0.05 and acc_huge < 0.2  # nothing leaks and nothing is learned
