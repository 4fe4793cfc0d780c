"""Feature-space hijacking (FSHA) by a malicious server, and the client's fake-batch check."""

import json

import pytest
import torch
from torch import nn

from splitlearn.data.embedded import load_digits
from splitlearn.models.cnn import small_cnn
from splitlearn.privacy.attacks.hijacking import (
    FakeBatchCheck,
    FakeBatchGuard,
    HijackingServer,
    HijackingServerHooks,
    HijackSuspected,
    TaskServer,
    hijack,
)
from splitlearn.privacy.attacks.reconstruction import ssim
from splitlearn.split.messages import Gradient, Labels


@pytest.fixture(scope="module")
def digits():
    """Private training inputs and labels, the server's public inputs (disjoint), and held-out
    private inputs the attack is scored on."""
    train, test = load_digits()
    x, y = train.features, train.labels
    return x[:800], y[:800], x[800:], test.features[:128]


def _client(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return small_cnn().features


def _server(public, **kw) -> HijackingServer:
    return HijackingServer(public, (32, 4, 4), architecture=small_cnn().features, hidden=256, lr=3e-4, **kw)


def test_a_hijacking_server_reconstructs_private_inputs_it_never_saw(digits):
    private_x, private_y, public, victims = digits
    chance = float(ssim(private_x.mean(0, keepdim=True).expand_as(victims), victims).mean())
    run = hijack(_client(), _server(public), private_x, private_y, victims, steps=600, lr=3e-4, every=200)
    assert run.steps == 600 and run.stopped_at is None
    assert [s for s, _, _ in run.history] == [200, 400, 600]
    # The mean private image scores about 0.37; the hijacked client's smashed data decodes far better.
    assert run.result.ssim > chance + 0.2, (run.result.ssim, chance)
    assert run.history[-1][1] > run.history[0][1]


def test_the_fake_batch_check_stops_a_hijacking_before_it_reconstructs(digits):
    private_x, private_y, public, victims = digits
    chance = float(ssim(private_x.mean(0, keepdim=True).expand_as(victims), victims).mean())
    check = FakeBatchCheck(probability=0.1, min_fakes=5, seed=1)
    run = hijack(_client(), _server(public), private_x, private_y, victims, steps=600, lr=3e-4, check=check)
    assert run.stopped_at is not None and run.stopped_at < 200, run
    assert check.fakes == 5 and abs(run.score) < 0.05  # the labels made no difference to the server
    assert run.result.ssim < chance + 0.1, (run.result.ssim, chance)


def test_the_fake_batch_check_lets_an_honest_server_train(digits):
    private_x, private_y, public, victims = digits
    torch.manual_seed(0)
    top = nn.Sequential(nn.Flatten(), nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 10))
    check = FakeBatchCheck(probability=0.1, seed=1)
    client = _client()
    run = hijack(client, TaskServer(top), private_x, private_y, victims, steps=600, lr=1e-3, check=check, every=100)
    assert run.stopped_at is None and run.steps == 600 and run.result is None
    # Fake labels turn an honest server's gradient around: the score stays far above the threshold.
    assert check.fakes >= 30 and run.score > 0.5, run
    assert all(score > check.threshold for _, _, score in run.history[1:]), run.history
    with torch.no_grad():  # and the client learnt its task
        accuracy = float((top(client.eval()(private_x)).argmax(1) == private_y).float().mean())
    assert accuracy > 0.9


def test_bad_setups_are_refused_with_what_is_wrong(digits):
    _, _, public, _ = digits
    with pytest.raises(ValueError, match="one of the two"):
        HijackingServer(public, (32, 4, 4))
    with pytest.raises(ValueError, match=r"pilot maps inputs to \(32, 4, 4\), but the smashed data is \(16, 4, 4\)"):
        HijackingServer(public, (16, 4, 4), architecture=small_cnn().features)
    server = _server(public)
    with pytest.raises(ValueError, match=r"smashed data of shape \(8,\), expected \(32, 4, 4\)"):
        server.gradient(torch.zeros(2, 8))
    with pytest.raises(ValueError, match="probability"):
        FakeBatchCheck(probability=1.0)
    with pytest.raises(ValueError, match="labels sent"):
        TaskServer(nn.Linear(2, 2)).gradient(torch.zeros(1, 2))


# -- in the running split: the client's guard as hooks, and a hijacking server made of hooks ------

def _simulation(digits, clients=1, **hooks):
    from splitlearn.data.dataset import ArrayDataset
    from splitlearn.split import OptimizerSpec, configs
    from splitlearn.split.simulation import Simulation

    private_x, private_y, _, _ = digits
    torch.manual_seed(0)
    split = configs.vanilla(small_cnn(), [5], in_shape=(1, 8, 8))  # cut after the features: (32, 4, 4)
    train = ArrayDataset(private_x, private_y)
    return Simulation(split, train=train, clients=clients, batch_size=32, optimizer=OptimizerSpec("adam", lr=3e-4), **hooks)


def _guard_hooks(guard, extra_inbox=None, extra_outbox=None):
    inbox, outbox = {"client": guard.inbox}, {"client": guard.outbox}
    return dict(inbox=inbox | (extra_inbox or {}), outbox=outbox | (extra_outbox or {}))


def test_in_a_running_split_the_guard_stops_a_hijacking_server(digits):
    _, _, public, _ = digits
    hostile = HijackingServerHooks(_server(public))
    guard = FakeBatchGuard(num_classes=10, seed=0)
    sim = _simulation(digits, **_guard_hooks(guard, {"server": hostile.inbox}, {"server": hostile.outbox}))
    with pytest.raises(HijackSuspected, match=r"client: the gradients server sends do not depend on the labels: after 10 batches"):
        sim.fit(5)
    check = guard.checks["client"]
    assert check.fakes == 10 and abs(check.score) < 0.1


def test_in_a_running_split_the_guard_lets_an_honest_server_train(digits):
    guard = FakeBatchGuard(num_classes=10, seed=0)
    sim = _simulation(digits, **_guard_hooks(guard))
    sim.fit(8)  # 200 steps: about twenty fake batches
    check = guard.checks["client"]
    assert check.fakes >= 10 and check.score > 0.6, (check.fakes, check.score)
    unguarded = _simulation(digits)
    unguarded.fit(8)
    # the fakes cost the server a tenth of its steps, trained on random labels: a few points at most
    assert sim.evaluate("train")["accuracy"] > unguarded.evaluate("train")["accuracy"] - 0.06


def test_a_hijacking_server_in_the_running_split_reconstructs_an_unaware_clients_inputs(digits):
    _, _, public, victims = digits
    chance = float(ssim(digits[0].mean(0, keepdim=True).expand_as(victims), victims).mean())
    hostile = HijackingServerHooks(_server(public))
    sim = _simulation(digits, inbox={"server": hostile.inbox}, outbox={"server": hostile.outbox})
    sim.fit(16)  # 400 steps
    client = sim.parties["client"]
    segment = client.modules[next(iter(client.nodes))].eval()
    with torch.no_grad():
        recon = hostile.hijacker.reconstruct(segment(victims))
    assert float(ssim(recon, victims).mean()) > chance + 0.15


def test_the_guard_refuses_soft_labels_and_bad_options():
    with pytest.raises(ValueError, match="probability"):
        FakeBatchGuard(num_classes=10, probability=0.0)
    guard = FakeBatchGuard(num_classes=3, seed=0)
    soft = Labels("client", "server", 1, task="y", labels=torch.full((4, 3), 1 / 3), sample_ids=torch.arange(4))
    with pytest.raises(ValueError, match="needs class labels; client sends soft labels for task 'y'"):
        guard.outbox(soft)


def test_the_cli_runs_the_guard_against_an_honest_server_and_refuses_it_where_labels_stay(tmp_path, capsys):
    from splitlearn.cli.app import main
    from splitlearn.config import PrivacyConfig

    assert main(["train", "--epochs", "3", "--clients", "1", "--hijack-check", "0.2", "--out", str(tmp_path)]) == 0
    run = next(tmp_path.iterdir())
    assert '"hijack_check": 0.2' in (run / "config.json").read_text()
    # every epoch says how the check stands: fakes sent, and a score far above the alarm (honest server)
    epochs = json.loads((run / "metrics.json").read_text())["epochs"]
    checked = [e["hijack_check"]["client"] for e in epochs]
    assert [c["fakes"] for c in checked] == sorted(c["fakes"] for c in checked) and checked[-1]["fakes"] >= 5
    assert checked[-1]["score"] > 0.3
    out = capsys.readouterr().out
    assert "hijack check client score" in " ".join(out.split())  # (the console wraps long lines)
    assert main(["train", "--configuration", "ushaped", "--hijack-check", "0.1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "privacy.hijack_check is for vanilla splits" in err and "Traceback" not in err and "epoch 1" not in err
    with pytest.raises(ValueError, match=r"privacy.hijack_check is the share of fake batches, in \[0, 1\)"):
        PrivacyConfig(hijack_check=1.0)


def test_the_config_puts_the_guard_on_every_client_of_a_deployment_too():
    """``privacy.hijack_check`` reaches the parties through ``party_options``, which both the
    in-process run and a deployment's processes build their parties from."""
    from splitlearn import runner
    from splitlearn.config import RunConfig

    config = RunConfig().override({"privacy.hijack_check": 0.1, "compression.codec": "int8", "data.limit_train": 64})
    options = runner.party_options(runner.build(config))
    inbox, outbox = options["inbox"]["client"], options["outbox"]["client"]
    assert isinstance(inbox.__self__, FakeBatchGuard) and inbox.__self__._options["probability"] == 0.1
    assert outbox.hooks[0] == inbox.__self__.outbox and type(outbox.hooks[-1]).__name__ == "Compressor"  # the codec last
    assert set(options["inbox"]) == {"client"} and "server" not in options["inbox"]


def test_one_guard_checks_each_round_robin_client_on_its_own(digits):
    guard = FakeBatchGuard(num_classes=10, seed=0, min_fakes=3)
    sim = _simulation(digits, clients=2, inbox={"client": guard.inbox}, outbox={"client": guard.outbox})
    sim.fit(8)  # honest: no alarm for either client
    assert sorted(guard.checks) == ["client0", "client1"]
    assert all(check.fakes >= 3 and check.score > 0.3 for check in guard.checks.values()), guard.checks


def test_a_gradient_for_a_step_whose_labels_were_sent_again_is_not_compared():
    """A step rolled back and begun again (or aborted) leaves no stale decision behind: only the
    gradient of the step whose labels went out last is compared, with those labels."""
    guard = FakeBatchGuard(num_classes=3, seed=0)
    ids = torch.arange(4)

    def labels(step, n=4):
        return Labels("client", "server", step, task="y", labels=torch.arange(n) % 3, sample_ids=ids[:n])

    def gradient(step, n=4):
        return Gradient("server", "client", step, src="server", dst="client", tensor=torch.randn(n, 5))

    guard.outbox(labels(1))
    guard.outbox(labels(2, n=2))  # step 1 never got its gradient; step 2 is a smaller batch
    stale = gradient(1)
    assert guard.inbox(stale) is stale and guard.checks["client"]._last is None  # not compared
    guard.outbox(labels(3))
    guard.inbox(gradient(3))
    assert guard.checks["client"]._last is not None and guard.checks["client"]._last.shape == (3 * 5,)
