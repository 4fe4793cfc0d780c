import json
from dataclasses import fields

import pytest
import torch
from google.protobuf.descriptor import FieldDescriptor
from torch import nn

from splitlearn.accounting import FlopMeter, account, wire_bytes
from splitlearn.split import configs
from splitlearn.split.compression import Compressor
from splitlearn.split.simulation import Simulation
from splitlearn.split.state import OptimizerSpec
from splitlearn.transport.local import LocalTransport
from splitlearn.transport.serde import encode, message_to_proto

from .conftest import data


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))


def _tensor_bytes(message) -> int:
    """Bytes of every tensor a message carries, found field by field (dict fields too)."""
    total = 0
    for f in fields(message):
        value = getattr(message, f.name)
        for v in value.values() if isinstance(value, dict) else [value]:
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
    return total


def test_wire_bytes_equal_the_tensors_of_the_logged_messages():
    transport, seen = LocalTransport(), []
    transport.observers.append(seen.append)
    clients = [f"client{k}" for k in range(3)]
    sim = Simulation(configs.vanilla(mlp(), 2), train=data(24, 10), test=data(6, 10, seed=1), clients=3,
                     batch_size=5, transport=transport)
    sim.fit(2)
    summary = wire_bytes(sim.log.records, groups={"client": clients})
    assert len(seen) == len(sim.log.records)
    assert summary["total"] == sum(_tensor_bytes(m) for m in seen)
    for party in [*clients, "server", "coordinator"]:
        entry = summary["parties"][party]
        assert entry["sent"] == sum(_tensor_bytes(m) for m in seen if m.sender == party)
        assert entry["received"] == sum(_tensor_bytes(m) for m in seen if m.receiver == party)
        for kind, n in entry["sent_by_kind"].items():
            assert n == sum(_tensor_bytes(m) for m in seen if m.sender == party and m.kind == kind)
    assert summary["by_kind"]["Weights"] == sum(_tensor_bytes(m) for m in seen if m.kind == "Weights") > 0
    mean = summary["mean_per_party"]["client"]
    assert mean["sent_by_kind"]["StepDone"] == 0
    assert mean["sent"] == sum(summary["parties"][c]["sent"] for c in clients) / 3
    assert mean["received_by_kind"]["Gradient"] == sum(
        _tensor_bytes(m) for m in seen if m.kind == "Gradient" and m.receiver in clients
    ) / 3
    # The same summary from the messages themselves, with a pluggable size (here: 10 bytes framing).
    framed = wire_bytes(seen, size=lambda m: m.payload_bytes + 10)
    assert framed["total"] == summary["total"] + 10 * len(seen)


def _varint(n: int) -> int:
    """Bytes of ``n`` as a protobuf varint (negative int64: two's complement, 10 bytes)."""
    return max(1, ((n & (2**64 - 1)).bit_length() + 6) // 7)


def _sizes(msg) -> tuple[int, int]:
    """The encoded size of a protobuf message, from the proto3 encoding rules (each set field: a
    varint tag, then a varint, 8 bytes of a double, or a varint length and that many bytes), and
    how much of it is tensor data: the ``data`` and ``indices`` bytes of every ``Tensor``."""
    total = data = 0
    for fd, value in msg.ListFields():
        tag = _varint(fd.number << 3)
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value if fd.is_repeated else [value]:
                size, inner = _sizes(item)
                total, data = total + tag + _varint(size) + size, data + inner
        elif fd.is_repeated:  # packed varints (a shape)
            body = sum(map(_varint, value))
            total += tag + _varint(body) + body
        elif fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            n = len(value.encode() if isinstance(value, str) else value)
            total += tag + _varint(n) + n
            data += n if msg.DESCRIPTOR.name == "Tensor" else 0
        elif fd.type == FieldDescriptor.TYPE_DOUBLE:
            total += tag + 8
        else:  # int64, uint32 and enums
            total += tag + _varint(value)
    return total, data


@pytest.mark.parametrize("codec", [None, "fp16", "int8", "topk"])
def test_logged_bytes_are_the_tensor_bytes_of_the_serialised_messages(codec):
    """Every message of a real run (round robin with relays, training and evaluation, compressed
    or not): its serialised size is exactly the payload the log records plus the framing that
    the encoding rules give for its header, names, shapes, tags and lengths."""
    transport, seen = LocalTransport(), []
    transport.observers.append(seen.append)
    outbox = None if codec is None else dict.fromkeys(("client", "server"), Compressor(codec, 0.25))
    sim = Simulation(configs.vanilla(mlp(), 2), train=data(24, 10), test=data(6, 10, seed=1), clients=3,
                     batch_size=5, transport=transport, outbox=outbox)
    sim.fit(2)
    assert len(seen) == len(sim.log.records) and {m.kind for m in seen} >= {"Manifest", "Activation", "Gradient", "Weights", "Output"}
    framing = []
    for message, record in zip(seen, sim.log.records):
        size, tensor_data = _sizes(message_to_proto(message))
        assert len(encode(message)) == size  # the rules above are protobuf's
        assert record.payload_bytes == message.payload_bytes == tensor_data
        framing.append(size - tensor_data)
        assert len(encode(message)) == record.payload_bytes + framing[-1]
    # At the cut, tens of bytes a message whatever the tensor (Weights add key names and JSON).
    assert max(f for f, m in zip(framing, seen) if m.kind in ("Activation", "Gradient")) <= 100
    assert sum(len(encode(m)) for m in seen) == wire_bytes(sim.log.records)["total"] + sum(framing)


def test_memory_per_party_with_adam(tabular):
    b = len(tabular)
    meter = FlopMeter()
    sim = Simulation(configs.vanilla(mlp(), 2), train=tabular, batch_size=b, compute=meter,
                     optimizer=OptimizerSpec("adam", lr=1e-3))
    sim.fit(1)
    report = account(sim, meter)
    json.dumps(report)
    memory = report["memory"]
    params = {"client": (10 * 16 + 16) * 4, "server": (16 * 3 + 3) * 4}  # float32
    for role, n in params.items():
        assert memory[role]["parameters"] == memory[role]["gradients"] == n
        # Adam: exp_avg and exp_avg_sq per parameter, plus one float32 step per weight and bias.
        assert memory[role]["optimizer"] == 2 * n + 2 * 4
        assert memory[role]["total"] == sum(v for k, v in memory[role].items() if k != "total")
    # Saved for backward, weights excluded. Client: Linear's input (b x 10) and ReLU's output
    # (b x 16). Server: Linear's input, the received (b x 16) activation.
    assert memory["client"]["activations"] == (b * 10 + b * 16) * 4
    assert memory["server"]["activations"] == b * 16 * 4
    assert report["parties"] == {"client": ["client"], "server": ["server"]}
    assert report["bytes"]["parties"]["client"]["sent_by_kind"]["Activation"] == b * 16 * 4 + b * 8  # + sample ids
    assert report["flops"]["by_role"]["server"]["forward"] == 2 * b * 16 * 3


def test_batch_norm_statistics_are_buffers_not_activations(tabular):
    b = len(tabular)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    meter = FlopMeter()
    sim = Simulation(configs.vanilla(model, 3), train=tabular, batch_size=b, compute=meter)
    sim.fit(1)
    client = account(sim, meter)["memory"]["client"]
    assert client["buffers"] == 16 * 4 + 16 * 4 + 8  # running mean and var (float32), batch count (int64)
    assert client["optimizer"] == 0  # plain SGD keeps no state
    # Linear's input, its output (batch-norm's input), batch-norm's saved mean and inverse std
    # (16 floats each) and ReLU's output.
    assert client["activations"] == (b * 10 + b * 16 + 16 + 16 + b * 16) * 4
