"""A client that sends a hostile or broken message mid-training is cut off with a clear error;
the step is rolled back, the server keeps serving, and once the client rejoins, training ends
with the weights of an undisturbed run."""

import dataclasses
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable

import grpc
import pytest
import torch
from safetensors.torch import load_file

from splitlearn import deploy, runner
from splitlearn.cli.app import main
from splitlearn.config import load_config
from splitlearn.deploy.session import _wait_reachable
from splitlearn.split.cast import build_parties
from splitlearn.split.compression import Compressed, compress
from splitlearn.split.messages import Abort, Activation, Labels, Manifest, StartStep, StepDone, Weights
from splitlearn.split.state import pack_state
from splitlearn.transport.grpc import ClientTransport
from splitlearn.transport.proto import splitlearn_pb2_grpc as pb_grpc
from splitlearn.transport.serde import Limits, message_from_proto, message_to_proto

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


# -- an insider on a raw stream poisons a step -------------------------------------------------------


HANG_UP = object()
"""In an attack's list of Envelopes: the insider hangs up there."""


def _first_train_step(message) -> bool:
    return isinstance(message, StartStep) and message.mode == "train"


class _Insider:
    """``party``, holding its valid token, on a raw gRPC stream written from the ``.proto``: it
    announces its shard, answers roll backs, and sends ``attack(party, message)``'s Envelopes on
    the first message for which ``when(message)`` holds (``when(None)``: as soon as it has
    announced). Its stream should then be cut off; if it is not within ``patience`` s, it hangs up
    (so that on code that lets the attack through, the test fails on what happened next)."""

    def __init__(self, target: str, token: str, party, attack, *, when=_first_train_step, patience: float = 10.0) -> None:
        self.party, self.attack, self.when, self.patience = party, attack, when, patience
        self._channel = grpc.insecure_channel(target)
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self.call = pb_grpc.SplitLearningStub(self._channel).Session(
            iter(self._requests.get, None), metadata=[("authorization", f"Bearer {token}")], timeout=TIMEOUT)
        self.code = self.details = self.trigger = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _strike(self, message) -> None:
        self.code, self.trigger = "attacked", message
        for env in self.attack(self.party, message):
            if env is HANG_UP:
                self.call.cancel()
                return
            self._requests.put(env)
        threading.Timer(self.patience, self.call.cancel).start()

    def _run(self) -> None:
        name = self.party.name
        ids = {split: shard.sample_ids for split, shard in self.party.shards.items()}
        self._requests.put(message_to_proto(Manifest(name, "coordinator", -1, sample_ids=ids)))
        try:
            if self.when(None):
                self._strike(None)
            for env in self.call:
                message = message_from_proto(env)
                if isinstance(message, Abort):
                    self._requests.put(message_to_proto(StepDone(name, "coordinator", message.step, tag="abort")))
                if self.code is None and self.when(message):
                    self._strike(message)
        except grpc.RpcError as e:
            self.code, self.details = e.code(), e.details()
        finally:
            self._requests.put(None)
            self._channel.close()


def _honest_step(party, start):
    """client0's honest Labels and Activation for ``start`` (computed as its own join would)."""
    shard = party.shards[start.split]
    rows = shard.rows(start.sample_ids)
    (node,) = party.nodes.values()
    task = party.plan.root.heads[0].task
    with torch.no_grad():
        x = party.modules[node.name](shard.features[rows])
    labels = Labels("client0", "server", start.step, task=task, labels=shard.labels[task][rows], sample_ids=start.sample_ids)
    activation = Activation("client0", "server", start.step, mode="train", src=node.name, dst=party.plan.consumer(node.name).name,
                            tensor=x, sample_ids=start.sample_ids)
    return labels, activation


def _int8_huge_scale(party, start):
    labels, activation = _honest_step(party, start)
    env = message_to_proto(dataclasses.replace(activation, tensor=compress(activation.tensor, "int8")))
    env.activation.tensor.scale = 1e300  # finite as a double; (q - zero_point) * scale is Inf in float32
    return [message_to_proto(labels), env]


def _nan_soft_labels(party, start):
    labels, activation = _honest_step(party, start)
    soft = torch.full((len(start.sample_ids), 10), 0.1)
    soft[3, 7] = float("nan")
    return [message_to_proto(dataclasses.replace(labels, labels=soft)), message_to_proto(activation)]


def _huge_activations(party, start):
    labels, activation = _honest_step(party, start)
    return [message_to_proto(labels), message_to_proto(dataclasses.replace(activation, tensor=torch.full_like(activation.tensor, 3e38)))]


def _topk_512_mib(party, start):
    labels, activation = _honest_step(party, start)
    rows = len(start.sample_ids)
    huge = Compressed("topk", torch.float32, (rows, (1 << 27) // rows), torch.ones(1), torch.zeros(1, dtype=torch.int32))
    return [message_to_proto(labels), message_to_proto(dataclasses.replace(activation, tensor=huge))]


INSIDER_ATTACKS = {
    "topk declaring 512 MiB": (_topk_512_mib, r"Activation of step \d+ refused: server: topk Activation client -> server of step \d+ "
                                              r"from client0 declares shape \[16, 8388608\]; this edge carries \[16, 64\]$"),
    "int8 huge scale": (_int8_huge_scale, r"malformed message from client0: Activation\.tensor: int8 scale 1e\+300 with zero point \d+ "
                                          r"decodes beyond the finite range of torch\.float32"),
    "NaN soft labels": (_nan_soft_labels, r"malformed message from client0: Labels\.labels: holds NaN or Inf \(1 of 160 values"),
    "3e38 activations": (_huge_activations, r"Activation of step \d+ refused: server: step \d+ would make .* NaN or Inf; "
                                            r"refused and rolled back \(caused by the input of client0\)"),
}


@dataclasses.dataclass(frozen=True)
class Strike:
    """One insider connection: ``party`` sends ``make(party, message)``'s Envelopes on the first
    message for which ``when`` holds (``when(None)``, on connecting: ``message`` is then the
    previous insider's trigger). It must be cut off with ``code`` and a reason matching ``why``
    (None: it hangs up itself)."""

    party: str
    make: Callable
    why: str | None
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT
    when: Callable = _first_train_step


@dataclasses.dataclass
class _Session:
    """The insider tests' session: digits, 2 round-robin clients, batches of 16; its parties as
    every process builds them; a free loopback address. :meth:`start` runs serve or join on a
    thread, and its result (or exception) lands in ``results[name]``."""

    config: object
    cast: dict
    target: str
    certs: object
    results: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def new(cls, tmp_path, certs) -> "_Session":
        config = load_config(write_config(tmp_path / "config.json", data={"limit_train": 320, "limit_test": 64},
                                          train={"epochs": 1, "seed": 3, "batch_size": 16}), {"out": str(tmp_path / "runs")})
        built = runner.build(config)
        return cls(config, build_parties(built.split, **runner.party_options(built)).parties, f"localhost:{free_port()}", certs)

    def start(self, name, fn, **kw) -> threading.Thread:
        def run():
            try:
                self.results[name] = fn(self.config, certs=self.certs, insecure=True, **kw)
            except Exception as e:  # reported by the test thread
                self.results[name] = e
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t


def _attack_live_serve(tmp_path, certs, caplog, strikes: list[Strike]) -> list[tuple[grpc.StatusCode, str]]:
    """A live serve with the parties that do not strike joined honestly, and the insiders of
    ``strikes`` one after another on raw streams. Checks that the serve log names each insider cut
    off, every checkpoint stays finite, and the insiders' own joins on the same folders then bring
    the session to the weights of an undisturbed run; returns the status each insider's stream
    ended with (code, details), for the test to check against its strike."""
    session = _Session.new(tmp_path, certs)
    config, cast, target, results, start = session.config, session.cast, session.target, session.results, session.start

    caplog.set_level(logging.WARNING, logger="splitlearn.deploy")
    insiders = list(dict.fromkeys(s.party for s in strikes))
    threads = [start("server", deploy.serve, listen=target, join_timeout=20, timeout=20, rejoin_timeout=20)]
    threads += [start(c, deploy.join, server=target, party=c, out=tmp_path / "client") for c in ("client0", "client1") if c not in insiders]
    _wait_reachable(target, None, TIMEOUT)
    done: list[_Insider] = []
    for strike in strikes:
        make = lambda party, message, strike=strike: strike.make(party, message if message is not None or not done else done[-1].trigger)  # noqa: E731
        for _ in range(40):  # until the hub has seen the previous connection in this name end, it refuses a second one
            insider = _Insider(target, (certs / f"{strike.party}.token").read_text().strip(), cast[strike.party], make, when=strike.when)
            insider.thread.join(TIMEOUT)
            if insider.code is not grpc.StatusCode.ALREADY_EXISTS:
                break
            time.sleep(0.25)
        done.append(insider)
    threads += [start(c, deploy.join, server=target, party=c, out=tmp_path / "client") for c in insiders]
    for t in threads:
        t.join(TIMEOUT)
    assert isinstance(results["server"], deploy.ServeResult), results
    assert all(isinstance(results[c], deploy.JoinResult) for c in ("client0", "client1")), results
    cut = [r for r in caplog.records if getattr(r, "event", None) == "party_cut_off"]
    assert [(r.fields["party"], r.fields["reason"]) for r in cut] == [
        (s.party, i.details) for s, i in zip(strikes, done, strict=True) if s.why is not None]
    assert all(f"{r.fields['party']} was cut off: " in r.getMessage() for r in cut)
    tensors = [(p, k, t) for p in sorted(tmp_path.rglob("*.safetensors")) for k, t in load_file(p).items()]
    assert len({p.parent for p, _, _ in tensors}) >= 5  # server and client checkpoints, and the weights of all three
    assert [f"{p}: {k}" for p, k, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())] == []
    _check_matches_in_process(config, tmp_path)
    return [(i.code, i.details) for i in done]


def _assert_cut_off_as_struck(strikes: list[Strike], ended: list[tuple[grpc.StatusCode, str]]) -> None:
    for strike, (code, details) in zip(strikes, ended, strict=True):
        if strike.why is not None:
            assert code is strike.code and re.search(strike.why, details), (code, details)


@pytest.mark.parametrize("attack", list(INSIDER_ATTACKS))
def test_an_insider_poisoning_a_step_is_cut_off_and_nothing_nonfinite_is_committed(tmp_path, certs, caplog, attack):
    make, why = INSIDER_ATTACKS[attack]
    strikes = [Strike("client0", make, why)]
    ended = _attack_live_serve(tmp_path, certs, caplog, strikes)
    assert ended[0][0] is grpc.StatusCode.INVALID_ARGUMENT and re.search(why, ended[0][1]), ended


# -- an insider off the plan's edges -----------------------------------------------------------------


def _after_restart(message) -> bool:
    return isinstance(message, Abort)  # serve rolls every party back once all have joined: client0 is there


def _abort_client0(party, abort):
    return [message_to_proto(Abort("client1", "client0", abort.step + 1, restore_to=0))]


def _zero_weights_to_client0(party, abort):
    modules = party.make_modules()  # the shared segments, as client0 holds them at step 0
    state, meta = pack_state(modules, party.optimizer_spec.build([p for m in modules.values() for p in m.parameters()]))
    zeros = {k: torch.zeros_like(v) for k, v in state.items()}
    return [message_to_proto(Weights("client1", "client0", 0, destination="client0", state=zeros, meta=meta))]


def _fake_step(party, start):
    _, activation = _honest_step(party, start)
    return [message_to_proto(dataclasses.replace(activation, step=10_000_000))]


def _start_a_step(party, _):
    return [message_to_proto(StartStep("client1", "server", 1_000_000, mode="train", split="train", sample_ids=torch.arange(4)))]


OFF_THE_PLAN = {
    # attack 2: a client ends another's session
    "client1 aborts client0": [Strike("client1", _abort_client0, r"^client1 may not send Abort: only the coordinator does$",
                                      grpc.StatusCode.PERMISSION_DENIED, _after_restart)],
    # attack 2: a client overwrites another's checkpoint of step 0 with zeros
    "client1 sends client0 weights": [Strike("client1", _zero_weights_to_client0,
                                             r"^client1 sent weights outside any relay the coordinator started \(step 0\)$",
                                             grpc.StatusCode.PERMISSION_DENIED, _after_restart)],
    # attack 3: while serve waits for client0 to rejoin, a connection in its name starts a fake step at the server
    "a fake step while client0 is away": [
        Strike("client0", lambda party, start: [HANG_UP], None),
        Strike("client0", _fake_step, r"^client0 sent Activation for step 10000000, which the coordinator has not started$",
               grpc.StatusCode.PERMISSION_DENIED, lambda message: message is None)],
    # attack 4: a session in client1's name queues a message the server refuses, to be blamed on client1's next connection
    "client1 starts a step": [Strike("client1", _start_a_step, r"^client1 may not send StartStep: only the coordinator does$",
                                     grpc.StatusCode.PERMISSION_DENIED, lambda message: message is None)],
}


@pytest.mark.parametrize("attack", list(OFF_THE_PLAN))
def test_an_insider_off_the_plan_is_cut_off_and_the_others_finish_undisturbed(tmp_path, certs, caplog, attack):
    strikes = OFF_THE_PLAN[attack]
    ended = _attack_live_serve(tmp_path, certs, caplog, strikes)
    assert ended[-1][0] is grpc.StatusCode.PERMISSION_DENIED, ended  # the hub refused it: off the plan
    _assert_cut_off_as_struck(strikes, ended)


# -- an insider that talks but never works stalls the session ----------------------------------------


def _manifests_for(seconds: float):
    def attack(party, _):  # the manifest it announced, again and again: each one was enough to reset --timeout
        ids = {split: shard.sample_ids for split, shard in party.shards.items()}
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            yield message_to_proto(Manifest(party.name, "coordinator", -1, sample_ids=ids))
            time.sleep(0.25)
    return attack


def test_an_insider_that_only_repeats_its_manifest_stalls_the_session_which_stops_checkpointed(tmp_path, certs):
    session = _Session.new(tmp_path, certs)
    config, cast, target, results, start = session.config, session.cast, session.target, session.results, session.start

    serve_kw = dict(listen=target, join_timeout=20, timeout=20, rejoin_timeout=20, progress_timeout=3)
    server = start("server", deploy.serve, **serve_kw)
    honest = start("client0", deploy.join, server=target, party="client0", out=tmp_path / "client")
    _wait_reachable(target, None, TIMEOUT)
    # client1 answers roll backs, and when client0 relays it the shared segments, sends its manifest for 12 s instead
    insider = _Insider(target, (certs / "client1.token").read_text().strip(), cast["client1"], _manifests_for(12),
                       when=lambda message: isinstance(message, Weights))
    began = time.monotonic()
    server.join(TIMEOUT)
    stalled = results["server"]
    assert isinstance(stalled, deploy.DeployError), stalled
    assert re.search(r"^the session stalled: no progress for 3 s .*; stopped at step (\d+), which every party has checkpointed: "
                     r"run the same command to resume$", str(stalled)), stalled
    assert time.monotonic() - began < 12  # it stopped while the manifests still came
    step = int(re.search(r"stopped at step (\d+)", str(stalled)).group(1))
    assert step == 11  # the roll back at the start, then client0's turn: 160 samples in batches of 16
    run_dir = next((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "status.json").read_text())["state"] == "stalled"
    position = json.loads((tmp_path / "checkpoints" / "serve" / "position.json").read_text())
    assert position["coordinator"]["committed"] == step and position["finished"] is False
    tensors = [(p, k, t) for p in sorted(tmp_path.rglob("*.safetensors")) for k, t in load_file(p).items()]
    assert [f"{p}: {k}" for p, k, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())] == []
    insider.thread.join(TIMEOUT)
    # The same command again, and client1 joining honestly: the run ends with the undisturbed weights.
    server = start("server", deploy.serve, **serve_kw)
    client1 = start("client1", deploy.join, server=target, party="client1", out=tmp_path / "client")
    for t in (server, honest, client1):
        t.join(TIMEOUT)
    assert isinstance(results["server"], deploy.ServeResult), results
    assert all(isinstance(results[c], deploy.JoinResult) for c in ("client0", "client1")), results
    _check_matches_in_process(config, tmp_path)
