"""Feature-space hijacking (FSHA) by a malicious server, and the client's fake-batch check."""

import pytest
import torch
from torch import nn

from splitlearn.data.embedded import load_digits
from splitlearn.models.cnn import small_cnn
from splitlearn.privacy.attacks.hijacking import FakeBatchCheck, HijackingServer, TaskServer, hijack
from splitlearn.privacy.attacks.reconstruction import ssim


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
