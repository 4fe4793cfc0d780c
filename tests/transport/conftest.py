"""Hypothesis strategies for messages and tensors of every whitelisted dtype and layout."""

from dataclasses import fields

import torch
from hypothesis import settings
from hypothesis import strategies as st

from splitlearn.split import messages as m
from splitlearn.split.compression import CODECS, FLOATS, Compressed, compress

PROPERTY = settings(max_examples=60, deadline=2000, derandomize=True)
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.int32, torch.uint8, torch.bool]


def random_tensor(shape: list[int], dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g, dtype=torch.float64) * 100).to(dtype)
    if dtype is torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=g, dtype=dtype)


@st.composite
def tensors(draw, dtypes=st.sampled_from(DTYPES)) -> torch.Tensor:
    """Scalars, zero-size and non-contiguous (transposed or strided) tensors included."""
    dtype, shape = draw(dtypes), draw(st.lists(st.integers(0, 4), max_size=4))
    layout = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    seed = draw(st.integers(0, 2**32 - 1))
    if layout == "strided" and shape:
        return random_tensor([*shape[:-1], 2 * shape[-1]], dtype, seed)[..., ::2]
    t = random_tensor(shape, dtype, seed)
    return t.transpose(0, -1) if layout == "transposed" and t.dim() >= 2 else t


@st.composite
def cut_tensors(draw) -> torch.Tensor | Compressed:
    """What may cross the cut: any tensor, or a floating one compressed by any codec."""
    t = draw(tensors())
    if t.dtype not in FLOATS or not draw(st.booleans()):
        return t
    return compress(t, draw(st.sampled_from(CODECS)), ratio=draw(st.floats(0.01, 1.0)))


names = st.text(min_size=1, max_size=8)
steps = st.integers(-(2**63), 2**63 - 1)
sample_ids = st.lists(st.integers(-(2**63), 2**63 - 1), max_size=16).map(lambda v: torch.tensor(v, dtype=torch.int64))
modes = st.sampled_from(["train", "eval"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _message(cls, **body):
    return st.builds(cls, names, names, steps, **body)


messages = st.one_of(
    _message(m.Manifest, sample_ids=st.dictionaries(names, sample_ids, max_size=3)),
    _message(m.StartStep, mode=modes, split=names, sample_ids=sample_ids, bindings=st.dictionaries(names, names, max_size=3)),
    _message(m.Activation, mode=modes, src=names, dst=names, tensor=cut_tensors(), sample_ids=sample_ids),
    _message(m.Gradient, src=names, dst=names, tensor=cut_tensors()),
    _message(m.Labels, task=names, labels=tensors(), sample_ids=sample_ids),
    _message(m.Output, task=names, tensor=tensors(), sample_ids=sample_ids),
    _message(m.StepDone, tag=st.sampled_from(["step", "relay", "abort"])),
    st.integers(1, 2**40).flatmap(lambda step: st.builds(m.Abort, names, names, st.just(step), restore_to=st.integers(0, step - 1))),
    _message(m.RelayRequest, destination=names, route=st.sampled_from(["peer", "server"])),
    _message(m.Weights, destination=names, state=st.dictionaries(names, tensors(), max_size=3),
             meta=st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
    _message(m.ScoreRequest, split=names),
    _message(m.Scores, split=names, meta=st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
)


def assert_same_tensor(s: torch.Tensor | Compressed, t: torch.Tensor | Compressed) -> None:
    if isinstance(s, Compressed):
        assert isinstance(t, Compressed)
        assert (s.codec, s.dtype, s.shape, s.scale, s.zero_point) == (t.codec, t.dtype, t.shape, t.scale, t.zero_point)
        assert list(s.parts()) == list(t.parts())
        for k in s.parts():
            assert_same_tensor(s.parts()[k], t.parts()[k])
        return
    assert (s.dtype, s.shape) == (t.dtype, t.shape) and torch.equal(s, t)


def assert_same(a: m.Message, b: m.Message) -> None:
    """Same kind and header, identical tensors (dtype, shape, values, dict order), equal other fields."""
    assert type(a) is type(b) and (a.sender, a.receiver, a.step) == (b.sender, b.receiver, b.step)
    for f in fields(a)[3:]:
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, (torch.Tensor, Compressed)):
            assert_same_tensor(x, y)
        elif f.name in ("sample_ids", "state"):  # tensor maps
            assert list(x) == list(y)
            for k in x:
                assert_same_tensor(x[k], y[k])
        else:
            assert x == y and (not isinstance(x, dict) or list(x) == list(y))
