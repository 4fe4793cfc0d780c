"""DP noise on the smashed data: per-sample clipping and Gaussian noise at the client, trained
through exactly, and ε from opacus's accountant."""

import json
import math

import pytest
import torch
from torch import nn

from splitlearn.cli.app import main
from splitlearn.privacy import GaussianRelease, epsilon
from splitlearn.split import OptimizerSpec, configs
from splitlearn.split.simulation import Simulation

from ..split.conftest import centralised, mlp, tabular  # noqa: F401


def test_each_sample_is_clipped_then_noised_with_the_stated_spread():
    z = torch.randn(4000, 8) * torch.tensor([0.1, 5.0]).repeat_interleave(2000)[:, None]
    quiet = GaussianRelease(1e-9, 1.0, seed=0)(z)
    norms = quiet.norm(dim=1)
    small = z.norm(dim=1) < 1
    assert torch.allclose(quiet[small], z[small], atol=1e-6)  # inside the ball: unchanged
    assert torch.allclose(norms[~small], torch.ones(int((~small).sum())), atol=1e-5)  # outside: onto its surface
    noise = GaussianRelease(0.7, 2.0, seed=1)(z) - GaussianRelease(1e-9, 2.0, seed=1)(z)
    assert abs(float(noise.std()) - 0.7 * 2.0) < 0.03 and abs(float(noise.mean())) < 0.02
    again = GaussianRelease(0.7, 2.0, seed=1)(z)
    assert torch.equal(again, GaussianRelease(0.7, 2.0, seed=1)(z))  # a seed repeats the noise (tests only)
    assert not torch.equal(GaussianRelease(0.7, 2.0)(z), GaussianRelease(0.7, 2.0)(z))  # by default: secret, fresh
    with pytest.raises(ValueError, match="noise_multiplier must be > 0"):
        GaussianRelease(0.0, 1.0)


def test_split_training_with_the_release_equals_centralised_training_with_it_as_a_layer(tabular):  # noqa: F811
    """The client trains on what it released: the gradient flows through the clipping, exactly as
    through the same clipping and noise placed inside the unsplit model."""
    train, _ = tabular
    spec = OptimizerSpec("sgd", lr=0.05, momentum=0.9)

    class Released(nn.Module):
        def __init__(self):
            super().__init__()
            self.release = GaussianRelease(0.3, 0.5, seed=7)

        def forward(self, z):
            return self.release(z)

    model, same = mlp(), mlp()
    reference = nn.Sequential(*list(same)[:2], Released(), *list(same)[2:])
    sim = Simulation(configs.vanilla(model, [2], in_shape=(10,)), train=train, optimizer=spec, batch_size=16,
                     releases={"client": GaussianRelease(0.3, 0.5, seed=7)})
    batches = [b.sample_ids for e in (1, 2) for b in sim.coordinator.schedule(e)]
    sim.fit(2)
    ref, losses = centralised(reference, spec, batches, train.features, [(1.0, lambda ids: train.labels[ids])])
    assert [v for _, v in sorted(sim.parties["server"].losses)] == pytest.approx(losses, abs=1e-6)
    trained = [*sim.parties["client"].modules["client"].parameters(), *sim.parties["server"].modules["server"].parameters()]
    assert max(float((p - q).detach().abs().max()) for p, q in zip(trained, ref.parameters(), strict=True)) < 1e-6


def test_epsilon_is_opacus_rdp_accountant_for_one_release_per_epoch():
    from opacus.accountants.analysis import rdp as analysis

    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    for sigma, releases, delta in ((1.0, 10, 1e-5), (3.0, 1, 1 / 1437), (0.8, 30, 1e-3)):
        rdp = analysis.compute_rdp(q=1.0, noise_multiplier=sigma, steps=releases, orders=orders)
        expected, _ = analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
        assert epsilon(sigma, releases, delta=delta) == pytest.approx(float(expected), rel=1e-9)
    # One release of a Gaussian mechanism: within the classical bound's neighbourhood, and ε grows with releases.
    assert epsilon(3.0, 1, delta=1e-5) < math.sqrt(2 * math.log(1.25 / 1e-5)) / 3.0 + 0.5
    assert epsilon(1.0, 1, delta=1e-5) < epsilon(1.0, 2, delta=1e-5) < epsilon(0.5, 2, delta=1e-5)


def test_a_dp_run_prints_and_records_epsilon_each_epoch(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["train", "--model", "mlp", "--epochs", "2", "--clients", "2", "--dp-noise", "1.1", "--dp-clip", "2.0",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(next(tmp_path.iterdir()).joinpath("metrics.json").read_text())
    n = 1438  # digits: the training split
    for record in metrics["epochs"]:
        assert record["dp_delta"] == 1 / n
        assert record["dp_epsilon"] == pytest.approx(epsilon(1.1, record["epoch"], delta=1 / n), rel=1e-12)
        assert f"DP ε {record['dp_epsilon']:.2f} at δ {1 / n:.1e} (opacus RDP accountant)" in out
    assert metrics["epochs"][0]["dp_epsilon"] < metrics["epochs"][1]["dp_epsilon"]


def test_leakage_is_measured_on_what_the_receiver_is_given(tabular):  # noqa: F811
    """Held-out DCOR(X, Z) of a DP client is that of its noised release, not of its clean output."""
    from splitlearn.runner import party_leakage

    train, test = tabular
    sim = Simulation(configs.vanilla(mlp(), [2], in_shape=(10,)), train=train, test=test, batch_size=16,
                     releases={"client": GaussianRelease(20.0, 0.5, seed=0)})
    client = sim.parties["client"]
    noised, _ = party_leakage(client, batch_size=40)
    client.releases = {}
    clean, _ = party_leakage(client, batch_size=40)
    assert noised["client"] < clean["client"] - 0.1, (noised, clean)  # (at 40 samples DCOR is biased up: even independence scores about 0.7)


def test_a_deployment_with_dp_noise_reports_epsilon_each_epoch(tmp_path):
    """Each client clips and noises in its own process, from its own secret randomness; the
    server reports ε for the samples the clients announced."""
    from splitlearn import deploy
    from splitlearn.config import load_config

    from ..deploy.conftest import in_threads, write_config

    config = load_config(write_config(tmp_path / "config.json", privacy={"dp_noise_multiplier": 2.0, "dp_clip": 1.0}),
                         {"out": str(tmp_path / "runs")})
    assert main(["certs", "--out", str(tmp_path / "certs"), "--clients", "client0,client1"]) == 0
    results = in_threads(config, tmp_path / "certs", {c: dict(out=tmp_path / "clients") for c in ("client0", "client1")})
    assert isinstance(results["server"], deploy.ServeResult), results
    epochs = results["server"].metrics["epochs"]
    assert [e["dp_delta"] for e in epochs] == [1 / 240] * 2  # the 240 training samples the two clients hold
    assert [e["dp_epsilon"] for e in epochs] == [epsilon(2.0, k, delta=1 / 240) for k in (1, 2)]
