"""Codecs for the cut: error bounds against hand-derived oracles, and the protocol seeing the
agreed dtype and shape whatever travels."""

import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from splitlearn import runner
from splitlearn.config import load_config
from splitlearn.split import ProtocolError, configs
from splitlearn.split.compression import Compressed, Compressor, compress, decompress
from splitlearn.split.messages import Activation, Gradient, Labels, StepDone
from splitlearn.split.simulation import Simulation

from .conftest import mlp

PROPERTY = settings(max_examples=40, deadline=2000, derandomize=True)
shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4)


def _randn(shape, seed: int, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


# -- fp16 ------------------------------------------------------------------------------------------


@PROPERTY
@given(shapes, st.integers(0, 2**31), st.sampled_from([torch.float32, torch.float64]))
def test_fp16_is_exact_for_values_float16_represents(shape, seed, dtype):
    x = _randn(shape, seed, scale=100).half().to(dtype)  # representable by construction
    c = compress(x, "fp16")
    assert c.values.dtype is torch.float16 and c.nbytes == 2 * x.numel()
    out = c.decode()
    assert (out.dtype, out.shape) == (dtype, x.shape) and torch.equal(out, x)


def test_fp16_rounds_to_the_nearest_float16():
    x = torch.tensor([1 + 2**-12, 1 + 3 * 2**-12, 1e-3, -65504.0, 0.1])
    out = compress(x, "fp16").decode()
    # Halfway between 1 and 1 + 2^-10 ties to even (1); three quarters rounds up.
    assert out[:2].tolist() == [1.0, 1 + 2**-10]
    assert torch.all((out - x).abs() <= x.abs() * 2**-11)


def test_fp16_refuses_values_it_would_turn_into_inf():
    with pytest.raises(ValueError, match=r"fp16: a value of magnitude 7e\+04 overflows float16 \(largest: 65504\)"):
        compress(torch.tensor([1.0, -7e4]), "fp16")


# -- int8 ------------------------------------------------------------------------------------------


@PROPERTY
@given(shapes, st.integers(0, 2**31), st.floats(1e-6, 1e6), st.floats(-1, 1))
def test_int8_error_is_at_most_half_a_step(shape, seed, scale, shift):
    x = _randn(shape, seed) * scale + shift * scale
    c = compress(x, "int8")
    # Hand-derived: the range [min(x, 0), max(x, 0)] in 255 steps.
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    assert c.scale == pytest.approx((hi - lo) / 255, rel=1e-6)
    assert c.values.dtype is torch.uint8 and c.nbytes == x.numel()
    out = c.decode()
    assert (out.dtype, out.shape) == (x.dtype, x.shape)
    assert float((out - x).abs().max()) <= c.scale * (0.5 + 1e-4)


def test_int8_keeps_zeros_and_the_extremes_exact():
    x = torch.tensor([[0.0, 2.55, 1.0], [0.0, 0.0, 0.7]])  # as after a ReLU
    c = compress(x, "int8")
    out = c.decode()
    assert c.zero_point == 0 and torch.equal(out[x == 0], x[x == 0])
    assert out.max() == pytest.approx(2.55, abs=1e-6)
    assert torch.equal(compress(torch.zeros(3), "int8").decode(), torch.zeros(3))
    tiny = torch.tensor([1e-44, 0.0])  # a range float32 cannot divide into 255 steps
    assert compress(tiny, "int8").scale == 1.0 and float((compress(tiny, "int8").decode() - tiny).abs().max()) <= 0.5
    negative = torch.tensor([-1.0, -0.5])
    assert compress(negative, "int8").zero_point == 255 and compress(negative, "int8").decode()[0] == -1.0


def test_int8_of_float64_decodes_to_float64():
    x = _randn([5, 7], 3, dtype=torch.float64)
    c = compress(x, "int8")
    assert c.decode().dtype is torch.float64 and float((c.decode() - x).abs().max()) <= c.scale / 2 * (1 + 1e-9)


# -- topk ------------------------------------------------------------------------------------------


@PROPERTY
@given(shapes, st.integers(0, 2**31), st.floats(0.01, 1.0))
def test_topk_keeps_exactly_the_largest_magnitudes_of_each_sample(shape, seed, ratio):
    x = _randn(shape, seed)
    flat = x.flatten().tolist()
    n = len(flat) // shape[0]  # values per sample
    k = math.ceil(ratio * n)
    c = compress(x, "topk", ratio=ratio)
    # Oracle: per sample, sort positions by magnitude in plain Python (random normals: no ties).
    expected = [
        i for start in range(0, len(flat), n) for i in sorted(sorted(range(start, start + n), key=lambda i: -abs(flat[i]))[:k])
    ]
    assert c.indices.tolist() == expected
    assert c.values.tolist() == [flat[i] for i in expected]
    assert c.nbytes == shape[0] * k * (4 + 4)  # a float32 value and an int32 position each
    out = c.decode()
    assert (out.dtype, out.shape) == (x.dtype, x.shape)
    kept = torch.zeros(len(flat), dtype=torch.bool)
    kept[expected] = True
    assert torch.equal(out.flatten()[kept], x.flatten()[kept]) and not out.flatten()[~kept].any()


def test_topk_of_everything_is_lossless():
    x = _randn([4, 3], 1)
    assert torch.equal(compress(x, "topk", ratio=1.0).decode(), x)


def test_topk_keeps_samples_with_small_values_too():
    x = torch.tensor([[100.0, 90.0, 80.0, 70.0], [0.1, -0.4, 0.2, 0.3]])
    assert torch.equal(compress(x, "topk", ratio=0.25).decode(), torch.tensor([[100.0, 0, 0, 0], [0, -0.4, 0, 0]]))
    assert compress(torch.tensor(-2.5), "topk").decode() == -2.5  # a scalar is one sample of one value
    assert compress(torch.zeros(0, 3), "topk").nbytes == compress(torch.zeros(2, 0), "topk").nbytes == 0


# -- what cannot be compressed ---------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["fp16", "int8", "topk"])
def test_nonfinite_and_integer_tensors_are_refused(codec):
    with pytest.raises(ValueError, match=rf"{codec}: the tensor holds NaN or Inf"):
        compress(torch.tensor([1.0, math.nan]), codec)
    with pytest.raises(ValueError, match=rf"{codec} compresses floating tensors, not torch.int64"):
        compress(torch.arange(3), codec)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown codec 'zip'"):
        Compressor("zip")
    with pytest.raises(ValueError, match=r"topk ratio must lie in \(0, 1\], got 0"):
        Compressor("topk", 0)
    with pytest.raises(ValueError, match=r"topk ratio must lie in \(0, 1\], got 1.5"):
        compress(torch.ones(2), "topk", ratio=1.5)


@pytest.mark.parametrize(
    ("parts", "problem"),
    [
        (dict(codec="topk", values=torch.ones(2), indices=torch.tensor([3, 1], dtype=torch.int32)), "strictly increasing"),
        (dict(codec="topk", values=torch.ones(2), indices=torch.tensor([1, 1], dtype=torch.int32)), "strictly increasing"),
        (dict(codec="topk", values=torch.ones(1), indices=torch.tensor([6], dtype=torch.int32)), r"lie in \[0, 6\)"),
        (dict(codec="topk", values=torch.ones(1), indices=torch.tensor([-1], dtype=torch.int32)), r"lie in \[0, 6\)"),
        (dict(codec="topk", values=torch.ones(7), indices=torch.arange(7, dtype=torch.int32)), "keeps 7 values of a tensor of 6"),
        (dict(codec="topk", values=torch.ones(2), indices=torch.arange(1, dtype=torch.int32)), "1 positions but 2 values"),
        (dict(codec="topk", values=torch.ones(1), indices=torch.arange(1)), "1-D int32"),
        (dict(codec="int8", values=torch.zeros(2, 3, dtype=torch.uint8), scale=math.inf), "scale must be finite and > 0"),
        (dict(codec="int8", values=torch.zeros(2, 3, dtype=torch.uint8), scale=-1.0), "scale must be finite and > 0"),
        (dict(codec="int8", values=torch.zeros(2, 3, dtype=torch.uint8), scale=1.0, zero_point=256), r"zero point must lie in \[0, 255\]"),
        (dict(codec="int8", values=torch.zeros(6, dtype=torch.uint8), scale=1.0), r"must be torch.uint8 of shape \[2, 3\]"),
        (dict(codec="fp16", values=torch.zeros(2, 3)), r"must be torch.float16 of shape"),
        (dict(codec="fp16", values=torch.zeros(2, 3, dtype=torch.float16), scale=1.0), "carries no scale"),
        (dict(codec="fp16", values=torch.zeros(2, 3, dtype=torch.float16), indices=torch.zeros(1, dtype=torch.int32)), "no positions"),
    ],
)
def test_inconsistent_parts_are_refused(parts, problem):
    with pytest.raises(ValueError, match=problem):
        Compressed(dtype=torch.float32, shape=(2, 3), **parts)


@pytest.mark.parametrize(("dtype", "scale", "zero_point"), [
    (torch.float32, 1e300, 0),  # finite as a Python float, Inf as a float32
    (torch.float32, 3e36, 0),  # float32 scale, but 255 steps of it leave float32
    (torch.float32, 3e36, 255),  # the same below zero
    (torch.float16, 300.0, 0),  # 255 * 300 > 65504
    (torch.bfloat16, 1e37, 128),
    (torch.float64, 1e307, 0),
])
def test_int8_whose_range_leaves_the_dtype_is_refused(dtype, scale, zero_point):
    with pytest.raises(ValueError, match=rf"int8 scale .* with zero point {zero_point} decodes beyond the finite range of {dtype}"):
        Compressed("int8", dtype, (2, 3), torch.zeros(2, 3, dtype=torch.uint8), scale=scale, zero_point=zero_point)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_int8_of_the_dtypes_extremes_still_decodes(dtype):
    info = torch.finfo(dtype)
    for t in (torch.tensor([info.max, 0.0], dtype=dtype), torch.tensor([-info.max, 0.0], dtype=dtype),
              torch.tensor([-info.max / 2, info.max / 2], dtype=dtype)):
        back = compress(t, "int8").decode()
        assert bool(torch.isfinite(back).all()) and back.dtype is dtype


@pytest.mark.parametrize("codec", ["fp16", "int8", "topk"])
def test_decode_never_yields_nan_or_inf(codec):
    """Even a value built past the checks (as a hostile peer's decoder might) decodes bounded or not at all."""
    c = compress(torch.ones(2, 3), codec, ratio=0.5)
    if codec == "int8":
        object.__setattr__(c, "scale", 1e300)
    else:
        c.values[0] = math.inf
    with pytest.raises(ValueError, match=rf"{codec} data decodes to NaN or Inf \(\d+ of 6 values of torch.float32\)"):
        c.decode()


# -- as messages -----------------------------------------------------------------------------------


def test_compressor_compresses_cut_tensors_only():
    ids = torch.arange(4)
    act = Activation("c", "s", 1, mode="train", src="a", dst="b", tensor=_randn([4, 8], 0), sample_ids=ids)
    grad = Gradient("s", "c", 1, src="b", dst="a", tensor=_randn([4, 8], 1))
    labels = Labels("c", "s", 1, task="y", labels=torch.zeros(4), sample_ids=ids)
    int8 = Compressor("int8")
    for message in (act, grad):
        sent = int8(message)
        assert isinstance(sent.tensor, Compressed) and (sent.sender, sent.step) == (message.sender, message.step)
        assert sent.payload_bytes == message.payload_bytes - 3 * 32  # 32 values: 4 bytes -> 1
        assert set(sent.tensors()) == {"tensor.values"} | ({"sample_ids"} if message is act else set())
        back = decompress(sent)
        assert type(back) is type(message) and back.tensor.shape == (4, 8) and back.tensor.dtype is torch.float32
    assert int8(labels) is labels and decompress(labels) is labels
    assert int8(StepDone("c", "k", 1)) == StepDone("c", "k", 1)
    assert set(Compressor("topk", 0.25)(grad).tensors()) == {"tensor.values", "tensor.indices"}


def _fit(outbox, tabular, epochs=2):
    train, test = tabular
    sim = Simulation(configs.ushaped(mlp(), [1, 3]), train=train, test=test, clients=2, batch_size=16, outbox=outbox)
    seen = []
    sim.transport.observers.append(seen.append)
    sim.fit(epochs)
    return sim, seen


def test_lossless_codec_trains_exactly_like_raw_tensors(tabular):
    """topk keeping every value loses nothing: training through it equals training without, bit
    for bit, in a U-shaped split where both parties send smashed data and gradients."""
    raw, _ = _fit(None, tabular)
    every = Compressor("topk", 1.0)
    sim, seen = _fit(dict.fromkeys(("client", "server"), every), tabular)
    cut = [m for m in seen if m.kind in ("Activation", "Gradient")]
    assert cut and all(isinstance(m.tensor, Compressed) for m in cut)
    assert {(m.kind, m.sender[:6]) for m in cut} >= {("Activation", "client"), ("Activation", "server"), ("Gradient", "client"), ("Gradient", "server")}
    assert [h["train_loss"] for h in sim.history] == [h["train_loss"] for h in raw.history]
    assert sim.history[-1]["test_accuracy"] == raw.history[-1]["test_accuracy"]
    for name, party in raw.parties.items():
        mine, theirs = party.state()[0], sim.parties[name].state()[0]
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), name
    # Every value and its position: twice the raw bytes at the cut.
    assert sim.log.total_bytes(kind="Gradient") == 2 * raw.log.total_bytes(kind="Gradient")


@pytest.mark.parametrize(("codec", "per_value"), [("fp16", 2), ("int8", 1), ("topk", None)])
def test_each_message_carries_the_codecs_bytes(tabular, codec, per_value):
    raw, raw_seen = _fit(None, tabular, epochs=1)
    sim, seen = _fit(dict.fromkeys(("client", "server"), Compressor(codec, 0.3)), tabular, epochs=1)
    assert [(m.kind, m.sender, m.step) for m in seen] == [(m.kind, m.sender, m.step) for m in raw_seen]
    for m, r in zip(seen, raw_seen):
        if m.kind not in ("Activation", "Gradient"):
            assert m.payload_bytes == r.payload_bytes
            continue
        (n, width), ids = r.tensor.shape, (8 * len(r.sample_ids) if m.kind == "Activation" else 0)
        kept = n * width * per_value if per_value else n * math.ceil(0.3 * width) * (4 + 4)
        assert m.payload_bytes == kept + ids
        # The receiving party used a tensor of the agreed dtype and shape.
        assert (m.tensor.dtype, m.tensor.shape) == (r.tensor.dtype, tuple(r.tensor.shape))


def test_party_decodes_to_what_its_segment_expects(tabular):
    train, _ = tabular
    inputs = []
    sim = Simulation(configs.vanilla(mlp(), [2]), train=train, batch_size=16, outbox={"client": Compressor("int8")})
    sim.parties["server"].modules["server"].register_forward_pre_hook(lambda mod, args: inputs.append(args[0]))
    sim.fit(1)
    assert inputs and all(x.dtype is torch.float32 and x.shape[1:] == (16,) and x.requires_grad for x in inputs)


def _declared_off_the_edge(train, monkeypatch, outbox) -> tuple[Simulation, list]:
    """A vanilla run (cut 10 -> 4) whose ``outbox`` hooks corrupt what they send, and the list of
    compressed values decoded during it (none is, since decoding is stubbed out to record)."""
    sim = Simulation(configs.vanilla(nn.Sequential(nn.Linear(10, 4), nn.ReLU(), nn.Linear(4, 3)), [2]), train=train,
                     batch_size=16, outbox=outbox)
    decoded: list = []
    monkeypatch.setattr(Compressed, "decode", lambda self: decoded.append(self))
    return sim, decoded


def test_a_gradient_declaring_the_wrong_shape_is_refused_before_it_is_decoded(tabular, monkeypatch):
    wrong = lambda m: Gradient(m.sender, m.receiver, m.step, src=m.src, dst=m.dst, tensor=compress(m.tensor[:, :-1], "int8")) if m.kind == "Gradient" else m  # noqa: E731
    sim, decoded = _declared_off_the_edge(tabular[0], monkeypatch, {"server": wrong})
    with pytest.raises(ProtocolError, match=r"^client: int8 Gradient server -> client of step 1 from server declares shape \[16, 3\]; "
                                            r"this edge carries \[16, 4\]$"):
        sim.fit(1)
    assert decoded == []


def _declaring(shape):
    """An outbox hook for the client: its smashed data as 1 kept value of a topk tensor of ``shape``."""
    def hook(m):
        if m.kind != "Activation":
            return m
        return replace(m, tensor=Compressed("topk", torch.float32, shape, torch.ones(1), torch.zeros(1, dtype=torch.int32)))
    return hook


@pytest.mark.parametrize("shape", [
    (16, 1 << 23),  # 512 MiB if decoded, from a message of a few bytes: the per-sample shape is agreed
    (1 << 27, 1),  # more rows than sample ids
])
def test_smashed_data_declaring_a_shape_off_the_edge_is_refused_before_anything_is_allocated(tabular, monkeypatch, shape):
    sim, decoded = _declared_off_the_edge(tabular[0], monkeypatch, {"client": _declaring(shape)})
    assert sim.parties["server"]._shapes == {("client", "server"): (4,)}  # from the split's probe, before any step
    with pytest.raises(ProtocolError, match=rf"^server: topk Activation client -> server of step 1 from client declares shape "
                                            rf"\[{shape[0]}, {shape[1]}\]; this edge carries \[16, 4\]$"):
        sim.fit(1)
    assert decoded == []


def test_int8_on_digits_cuts_the_cut_bytes_4x_within_a_point_of_accuracy():
    """The issue's acceptance check: a converged small CNN on digits (8 epochs, one client), built
    from the run config as `splitlearn train --compression int8` builds it."""
    runs = {}
    for codec in ("none", "int8"):
        config = load_config(None, {"compression.codec": codec, "split.clients": 1, "train.epochs": 8, "train.lr": 0.05})
        sim = runner.simulation(runner.build(config))
        sim.fit(config.train.epochs)
        runs[codec] = sim
    cut = {codec: sum(sim.log.total_bytes(kind=k) for k in ("Activation", "Gradient")) for codec, sim in runs.items()}
    assert cut["none"] / cut["int8"] >= 3.5
    accuracy = {codec: sim.history[-1]["test_accuracy"] for codec, sim in runs.items()}
    assert accuracy["none"] > 0.95
    assert abs(accuracy["int8"] - accuracy["none"]) <= 0.01, accuracy
