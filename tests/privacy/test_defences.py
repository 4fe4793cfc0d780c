"""Defences and their registry: max-norm noise defeats the gradient-norm label attack."""

import pytest
import torch
from torch import nn

from splitlearn.data import load_breast_cancer
from splitlearn.privacy.attacks.label_leakage import GradientRecorder, leak_auc, norm_scores
from splitlearn.privacy.defences import DEFENCES, MaxNormNoise, defence, register_defence
from splitlearn.split import OptimizerSpec, configs
from splitlearn.split.messages import Gradient
from splitlearn.split.simulation import Simulation


def _norm_leak(train, test, outbox):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))
    sim = Simulation(configs.ushaped(model, [3, 5], in_shape=(30,)), train=train, test=test, batch_size=32,
                     optimizer=OptimizerSpec("sgd", lr=0.05, momentum=0.9), outbox=outbox)
    recorder = GradientRecorder("server")
    sim.transport.observers.append(recorder)
    accuracy = sim.fit(3)[-1]["test_accuracy"]
    label_of = dict(zip(train.sample_ids.tolist(), train.labels.tolist()))
    ids, scores = norm_scores(recorder)
    return leak_auc(scores, torch.tensor([label_of[i] for i in ids.tolist()])), accuracy


def test_max_norm_noise_hides_the_minority_class_from_the_gradient_norm():
    """U-shaped on breast cancer with 25 malignant against 286 benign training samples (the
    imbalance under which the norm attack works): the server ranks samples by gradient norm
    (AUC 0.98); with the client's max-norm noise it is at chance, for under 3 points of accuracy."""
    train, test = load_breast_cancer()
    minority = int(torch.bincount(train.labels).argmin())
    train = train.subset(torch.cat([torch.nonzero(train.labels != minority).flatten(),
                                    torch.nonzero(train.labels == minority).flatten()[:25]]))
    leak, accuracy = _norm_leak(train, test, None)
    defended, defended_accuracy = _norm_leak(train, test, {"client": MaxNormNoise(seed=0)})
    assert leak >= 0.95 and defended <= 0.6, (leak, defended)
    assert defended_accuracy >= accuracy - 0.03, (accuracy, defended_accuracy)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_noise_hides_labels_from_the_direction_attack_on_breast_cancer(seed):
    """The runs ``splitlearn experiment nopeek`` reports: U-shaped MLP on the whole breast-cancer
    set, the server scoring each training sample by its cut gradient's direction. Undefended it
    tells the classes apart (AUC 1.00); with the client's gradient noise at scale 3 it is near
    chance (0.58, 0.51, 0.57 for seeds 0-2), for at most 0.9 points of test accuracy."""
    from splitlearn.runner.nopeek_study import _label_leak

    undefended, defended = _label_leak(seed=seed, device="cpu", noise=3.0)
    assert undefended["defence"] == "none" and defended["defence"] == "gradient noise x3"
    assert undefended["direction AUC"] >= 0.95 and defended["direction AUC"] <= 0.6, (undefended, defended)
    assert defended["test accuracy"] >= undefended["test accuracy"] - 0.02, (undefended, defended)


def test_max_norm_lifts_every_rows_expected_norm_to_the_largest():
    g = torch.cat([torch.randn(1, 64) * 5, torch.randn(2999, 64) * 0.1])
    noised = MaxNormNoise(seed=0)(Gradient("client", "server", 1, src="server", dst="client/head", tensor=g)).tensor
    squared = noised.pow(2).sum(1)
    assert float(squared[1:].mean()) == pytest.approx(float(g[0].pow(2).sum()), rel=0.05)
    assert torch.equal(noised[0], g[0])  # the largest row gets no noise


def test_one_registry_of_defences():
    assert sorted(DEFENCES) == ["gradient_noise", "max_norm", "nopeek", "smashed_dp"]
    assert {d.target for d in DEFENCES.values()} == {"inputs", "labels"}
    for d in DEFENCES.values():
        assert callable(d.build(1.0)) and d.where and d.method
    with pytest.raises(ValueError, match="defence 'max_norm' is already registered"):
        register_defence("max_norm", lambda s: None, target="labels", where="x", method="y")
    with pytest.raises(ValueError, match="unknown defence 'dropout'; known defences: gradient_noise, max_norm, nopeek, smashed_dp"):
        defence("dropout")


def test_label_noise_is_drawn_from_a_secret_unless_a_seed_is_given():
    """The receiver of the gradients must not be able to draw the noise again and subtract it."""
    from splitlearn.privacy.attacks.label_leakage import GradientNoise

    g = Gradient("client", "server", 5, src="server", dst="client/head", tensor=torch.randn(16, 8))
    for make in (lambda **kw: GradientNoise(1.0, **kw), lambda **kw: MaxNormNoise(**kw)):
        assert not torch.equal(make()(g).tensor, make()(g).tensor)
        assert torch.equal(make(seed=3)(g).tensor, make(seed=3)(g).tensor)
        hook = make()
        assert torch.equal(hook(g).tensor, hook(g).tensor)  # the same step again (after a roll back): the same noise
        assert "seed" not in repr(hook)
