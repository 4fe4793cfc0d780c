"""Outbox hooks compose in a Chain: noise, then a codec."""

import pytest
import torch
from torch import nn

from splitlearn.privacy.attacks.label_leakage import GradientNoise
from splitlearn.simulation import Simulation
from splitlearn.split import configs
from splitlearn.split.compression import Compressed, Compressor, decompress
from splitlearn.split.hooks import Chain
from splitlearn.split.messages import Gradient


def _gradient(step=3):
    g = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    return Gradient("client", "server", step, src="server/body", dst="client/head", tensor=g)


def test_noise_then_codec_is_the_codec_of_the_noised_gradient():
    noise, codec = GradientNoise(2.0, seed=1), Compressor("int8")
    sent = Chain(noise, codec)(_gradient())
    assert isinstance(sent.tensor, Compressed)
    expected = decompress(codec(noise(_gradient())))
    torch.testing.assert_close(decompress(sent).tensor, expected.tensor, rtol=0, atol=0)
    assert not torch.equal(decompress(sent).tensor, decompress(codec(_gradient())).tensor)  # the noise is there


def test_chains_flatten_and_a_codec_must_come_last():
    inner = Chain(GradientNoise(1.0))
    assert Chain(inner, Compressor("fp16")).hooks[0] is inner.hooks[0]
    with pytest.raises(ValueError, match="codec must be the last hook"):
        Chain(Compressor("int8"), GradientNoise(1.0))
    with pytest.raises(ValueError, match="codec must be the last hook"):
        Chain(Compressor("int8"), Compressor("fp16"))
    with pytest.raises(TypeError, match="must be callable"):
        Chain(3)


def test_noise_after_a_codec_says_where_to_put_it():
    encoded = Compressor("int8")(_gradient())
    with pytest.raises(TypeError, match=r"put it before the codec, as in Chain\(GradientNoise"):
        GradientNoise(1.0)(encoded)


def test_a_chained_outbox_trains(tabular):
    train, test = tabular
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    sim = Simulation(configs.ushaped(model, [2, 4], in_shape=(10,)), train=train, test=test, batch_size=16,
                     outbox={"client": Chain(GradientNoise(0.5), Compressor("int8"))})
    seen = []
    sim.transport.observers.append(seen.append)
    history = sim.fit(2)
    kinds = {(m.kind, type(m.tensor).__name__) for m in seen if m.kind in ("Activation", "Gradient") and m.sender == "client"}
    assert kinds == {("Activation", "Compressed"), ("Gradient", "Compressed")}  # the tail's gradient: noised, then int8
    assert history[-1]["test_accuracy"] > 0.4
