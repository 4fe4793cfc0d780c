"""Reconstruction from smashed data beats a data-blind guess; SSIM matches a naive reference."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from splitlearn.data import load_digits
from splitlearn.models import build_model
from splitlearn.privacy.attacks.reconstruction import ActivationRecorder, reconstruction_attack, ssim
from splitlearn.split import configs
from splitlearn.split.compression import Compressor
from splitlearn.split.messages import Activation
from splitlearn.split.simulation import Simulation


def _naive_ssim(x: np.ndarray, y: np.ndarray, window: int, sigma: float = 1.5) -> float:
    """SSIM by explicit loops over every valid window position, one channel."""
    r = np.arange(window) - (window - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for i in range(x.shape[0] - window + 1):
        for j in range(x.shape[1] - window + 1):
            a, b = x[i:i + window, j:j + window], y[i:i + window, j:j + window]
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * a * a).sum() - ma**2, (w * b * b).sum() - mb**2
            cov = (w * a * b).sum() - ma * mb
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


@settings(max_examples=20, deadline=None, derandomize=True)
@given(size=st.integers(3, 12), seed=st.integers(0, 1000))
def test_ssim_matches_naive_reference(size, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, size, size, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(1, 1, size, size, generator=g, dtype=torch.float64)).clamp(0, 1)
    window = min(7, size) - (1 - min(7, size) % 2)
    expected = _naive_ssim(x[0, 0].numpy(), y[0, 0].numpy(), window)
    assert float(ssim(x, y)) == pytest.approx(expected, abs=1e-9)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-12)


def test_ssim_bad_input():
    with pytest.raises(ValueError, match="too small"):
        ssim(torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2))
    with pytest.raises(ValueError, match="of one shape"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))


def test_server_reconstructs_digits_from_smashed_data():
    train, test = load_digits()
    torch.manual_seed(0)
    model = build_model("small_cnn", in_shape=(1, 8, 8), num_classes=10)
    sim = Simulation(configs.vanilla(model, ["features.4"], in_shape=(1, 8, 8)), train=train, test=test, batch_size=32)
    sim.fit(3)
    recorder = ActivationRecorder("server")
    sim.transport.observers.append(recorder)
    sim.evaluate()  # the victim's test images cross the cut as smashed data
    ids, victim_z = recorder.smashed()
    assert torch.equal(ids, torch.sort(test.sample_ids).values)
    victim_x = test.features[torch.argsort(test.sample_ids)]
    # Auxiliary pairs: 400 training images (disjoint from the victim's) through the client segment.
    client = sim.parties["client"].modules["client"]
    aux_x = train.features[:400]
    with torch.no_grad():
        aux_z = client(aux_x)
    result = reconstruction_attack(aux_z, aux_x, victim_z, victim_x, epochs=30)
    # Baseline that ignores the smashed data: the mean auxiliary image for everyone.
    blind = aux_x.mean(0, keepdim=True).expand_as(victim_x)
    blind_mse = float(((blind - victim_x) ** 2).mean())
    blind_ssim = float(ssim(blind.contiguous(), victim_x).mean())
    assert result.mse < 0.5 * blind_mse
    assert result.ssim > blind_ssim + 0.3
    assert result.originals.shape == result.reconstructions.shape == (8, 1, 8, 8)


def test_recorder_sees_compressed_smashed_data_as_the_receiver_decodes_it():
    z = torch.randn(4, 6)
    recorder = ActivationRecorder("server")
    recorder(Compressor("fp16")(Activation("client", "server", 1, mode="eval", src="a", dst="b", tensor=z, sample_ids=torch.arange(4))))
    ids, smashed = recorder.smashed()
    assert torch.equal(ids, torch.arange(4)) and torch.equal(smashed, z.half().float())
