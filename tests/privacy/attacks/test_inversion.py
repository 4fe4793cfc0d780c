"""Inversion without auxiliary data (UnSplit): from smashed data alone the server rebuilds digits
far better than a data-blind guess, and no better than one when the smashed data is shuffled."""

import doctest

import pytest
import torch
from torch import nn

from splitlearn.data import load_digits
from splitlearn.models import build_model
from splitlearn.privacy.attacks import inversion as inversion_module
from splitlearn.privacy.attacks.inversion import fresh_surrogate, inversion_attack, invert, total_variation
from splitlearn.privacy.attacks.reconstruction import ActivationRecorder, score_reconstruction
from splitlearn.split import configs
from splitlearn.split.simulation import Simulation

VICTIMS = 200  # test images attacked; 1000 joint steps on them take about 2 s on one core


@pytest.fixture(scope="module")
def undefended():
    """A vanilla split of small_cnn on digits, cut after its first conv and ReLU (the client
    sends 16x8x8 values per image), trained 3 epochs; the server records the test images'
    smashed data."""
    train, test = load_digits()
    torch.manual_seed(0)
    model = build_model("small_cnn", in_shape=(1, 8, 8), num_classes=10)
    sim = Simulation(configs.vanilla(model, ["features.1"], in_shape=(1, 8, 8)), train=train, test=test, batch_size=32)
    sim.fit(3)
    recorder = ActivationRecorder("server")
    sim.transport.observers.append(recorder)
    sim.evaluate()
    ids, victim_z = recorder.smashed()
    victim_x = test.features[torch.argsort(test.sample_ids)]
    client = sim.parties["client"].modules["client"]
    # Data-blind guesses: the mean training image for everyone, and uniform noise.
    mean = train.features.mean(0, keepdim=True).expand(VICTIMS, -1, -1, -1).contiguous()
    noise = torch.rand(VICTIMS, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    blind = {"mean": score_reconstruction(mean, victim_x[:VICTIMS]), "noise": score_reconstruction(noise, victim_x[:VICTIMS])}
    return client, victim_z[:VICTIMS], victim_x[:VICTIMS], blind


def test_server_inverts_digits_without_auxiliary_data(undefended):
    client, victim_z, victim_x, blind = undefended
    before = {k: v.clone() for k, v in client.state_dict().items()}
    result = inversion_attack(victim_z, client, victim_x, steps=1000)
    # Measured: SSIM 0.993 and MSE 0.0015 (seeds 1 and 2 of the attack: SSIM 0.947 and 0.855),
    # against SSIM 0.375 / MSE 0.074 for the mean image and SSIM 0.006 / MSE 0.263 for noise.
    assert result.ssim >= blind["mean"].ssim + 0.3
    assert result.ssim >= blind["noise"].ssim + 0.6
    assert result.mse <= 0.5 * blind["mean"].mse
    assert result.originals.shape == result.reconstructions.shape == (8, 1, 8, 8)
    assert all(torch.equal(v, before[k]) for k, v in client.state_dict().items())  # the client is untouched


def test_inversion_of_shuffled_smashed_data_is_no_better_than_a_blind_guess(undefended):
    """Smashed data paired with other samples' inputs (Z independent of X): the attack scores no
    better than the mean image (measured SSIM 0.235 and MSE 0.142, against 0.375 and 0.074)."""
    client, victim_z, victim_x, blind = undefended
    shuffled = victim_z[torch.randperm(len(victim_z), generator=torch.Generator().manual_seed(1))]
    result = inversion_attack(shuffled, client, victim_x, steps=1000)
    assert result.ssim <= blind["mean"].ssim
    assert result.mse >= blind["mean"].mse


def test_surrogate_keeps_none_of_the_clients_weights():
    torch.manual_seed(3)
    client = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    with torch.no_grad():
        for p in client.parameters():
            p.add_(5.0)  # "trained" weights, far from any initialisation
    surrogate = fresh_surrogate(client, seed=0)
    for (name, p), q in zip(client.named_parameters(), surrogate.parameters()):
        assert not torch.allclose(p, q), name
    again = fresh_surrogate(client, seed=0)
    assert all(torch.equal(p, q) for p, q in zip(surrogate.parameters(), again.parameters()))  # seeded

    class Raw(nn.Module):  # a parameter no reset_parameters() would touch
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.w

    with pytest.raises(ValueError, match="would keep the client's weights"):
        fresh_surrogate(Raw())


def test_total_variation_and_doctests():
    x = torch.zeros(1, 1, 3, 3)
    x[..., 1, 1] = 1.0  # one bright pixel: 2 of 6 vertical and 2 of 6 horizontal differences are 1
    assert float(total_variation(x)) == pytest.approx(2 / 6 + 2 / 6)
    result = doctest.testmod(inversion_module)
    assert result.attempted > 0 and result.failed == 0


def test_bad_input():
    conv = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())
    z = torch.rand(4, 2, 8, 8)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        invert(z, conv, in_shape=(1, 8, 8), steps=0)
    with pytest.raises(ValueError, match="needs image inputs"):
        invert(torch.rand(4, 2), nn.Linear(6, 2), in_shape=(6,), steps=1)
    with pytest.raises(ValueError, match="low < high"):
        invert(z, conv, in_shape=(1, 8, 8), steps=1, input_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="but the smashed data is"):
        invert(torch.rand(4, 3, 8, 8), conv, in_shape=(1, 8, 8), steps=1)
    with pytest.raises(ValueError, match="do not match the private inputs"):
        score_reconstruction(torch.rand(4, 1, 8, 8), torch.rand(3, 1, 8, 8))
    flat = invert(torch.rand(4, 2), nn.Linear(6, 2), in_shape=(6,), steps=2, tv=0)
    assert flat.shape == (4, 6) and 0 <= float(flat.min()) and float(flat.max()) <= 1
