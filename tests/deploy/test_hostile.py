"""A client that sends a hostile or broken message mid-training is cut off with a clear error;
the step is rolled back, the server keeps serving, and once the client rejoins, training ends
with the weights of an undisturbed run."""

import dataclasses
import threading

import pytest
import torch

from splitlearn import deploy
from splitlearn.cli.app import main
from splitlearn.config import load_config
from splitlearn.split.messages import Activation
from splitlearn.transport.grpc import ClientTransport
from splitlearn.transport.serde import Limits

from .conftest import TIMEOUT, free_port, write_config
from .test_deploy import _check_matches_in_process


def _replay(message, previous):
    return dataclasses.replace(previous, tensor=previous.tensor.clone())  # an earlier step's activation, resent


def _wrong_shape(message, previous):
    return dataclasses.replace(message, tensor=torch.cat([message.tensor, message.tensor[:, :1]], dim=1))


def _wrong_dtype(message, previous):
    return dataclasses.replace(message, tensor=message.tensor.double())


def _too_few_rows(message, previous):
    return dataclasses.replace(message, tensor=message.tensor[:-1])


def _nan(message, previous):
    t = message.tensor.clone()
    t[0, 0] = float("nan")
    return dataclasses.replace(message, tensor=t)


def _oversize(message, previous):
    return dataclasses.replace(message, tensor=torch.zeros(len(message.sample_ids), 1 << 15))  # 2 MiB, over the 1 MiB limit


CASES = {
    "replayed old step": (_replay, "Activation of step"),
    "wrong shape": (_wrong_shape, "per-sample shape (65,); this edge carries torch.float32 (64,)"),
    "wrong dtype": (_wrong_dtype, "is torch.float64"),
    "rows vs sample ids": (_too_few_rows, "for 16 sample ids"),
    "NaN": (_nan, "NaN"),
    "oversize": (_oversize, "RESOURCE_EXHAUSTED"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_message_is_refused_and_training_is_unchanged(tmp_path, monkeypatch, case, device):
    corrupt, why = CASES[case]
    config = load_config(write_config(tmp_path / "config.json", data={"limit_train": 320, "limit_test": 64},
                                      train={"epochs": 1, "seed": 3, "batch_size": 16, "device": str(device)}),
                         {"out": str(tmp_path / "runs")})
    assert main(["certs", "--out", str(tmp_path / "certs"), "--clients", "client0,client1"]) == 0
    target, results = f"localhost:{free_port()}", {}
    sent, done = [], threading.Event()
    send = ClientTransport.send

    def hostile_send(self, message):
        if isinstance(message, Activation) and message.sender == "client0" and message.mode == "train":
            sent.append(message)
            if len(sent) == 4 and not done.is_set():
                done.set()
                message = corrupt(message, sent[1])
        return send(self, message)

    monkeypatch.setattr(ClientTransport, "send", hostile_send)

    def run(name, fn, **kw):
        try:
            results[name] = fn(config, certs=tmp_path / "certs", insecure=True, **kw)
        except Exception as e:  # reported by the test thread
            results[name] = e

    def start(name, fn, **kw):
        t = threading.Thread(target=run, args=(name, fn), kwargs=kw, daemon=True)
        t.start()
        return t

    server = start("server", deploy.serve, listen=target, join_timeout=20, timeout=20, rejoin_timeout=20,
                   limits=Limits(max_message_bytes=1 << 20))
    clients = [start(c, deploy.join, server=target, party=c, out=tmp_path / "client") for c in ("client0", "client1")]
    clients[0].join(TIMEOUT)
    refused = results.get("client0")
    assert isinstance(refused, deploy.DeployError) and why in str(refused), refused
    assert "\n" not in str(refused)
    again = start("client0", deploy.join, server=target, party="client0", out=tmp_path / "client")
    for t in (server, clients[1], again):
        t.join(TIMEOUT)
    assert isinstance(results["server"], deploy.ServeResult), results
    assert all(isinstance(results[c], deploy.JoinResult) for c in ("client0", "client1")), results
    _check_matches_in_process(config, tmp_path)
