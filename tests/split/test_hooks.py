"""Hooks compose in a Chain, on the send side (noise, then a codec) and on the receive side."""

import dataclasses

import pytest
import torch
from torch import nn

from splitlearn.privacy.attacks.label_leakage import GradientNoise
from splitlearn.split import configs
from splitlearn.split.compression import Compressed, Compressor, decompress
from splitlearn.split.hooks import Chain
from splitlearn.split.messages import Activation, Gradient
from splitlearn.split.simulation import Simulation


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


def _halve(msg):
    """Halve the smashed data a message carries (exact in fp16 too)."""
    return dataclasses.replace(msg, tensor=msg.tensor * 0.5) if isinstance(msg, Activation) else msg


def test_an_inbox_hook_sees_what_arrived_decoded_and_composes_with_the_senders_codec(tabular):
    """Halving the smashed data at the receiver, after the fp16 codec, trains exactly as halving it
    at the sender before the codec: the inbox chain gets tensors, not encodings."""
    train, test = tabular

    def run(**hooks):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
        sim = Simulation(configs.vanilla(model, [2], in_shape=(10,)), train=train, test=test, batch_size=16, **hooks)
        sim.fit(1)
        return sim.parties["server"].losses

    at_sender = run(outbox={"client": Chain(_halve, Compressor("fp16"))})
    at_receiver = run(outbox={"client": Compressor("fp16")}, inbox={"server": Chain(_halve)})
    assert at_sender == at_receiver and at_sender != run(outbox={"client": Compressor("fp16")})


def test_an_inbox_hook_must_keep_the_header(tabular):
    train, _ = tabular
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    forged = lambda msg: dataclasses.replace(msg, sender="someone") if isinstance(msg, Activation) else msg  # noqa: E731
    sim = Simulation(configs.vanilla(model, [2], in_shape=(10,)), train=train, batch_size=16, inbox={"server": forged})
    with pytest.raises(TypeError, match="server's inbox hook turned Activation client -> server of step 1 into Activation someone"):
        sim.fit(1)
    with pytest.raises(ValueError, match=r"inbox names roles \['nobody'\]"):
        Simulation(configs.vanilla(model, [2], in_shape=(10,)), train=train, inbox={"nobody": forged})
