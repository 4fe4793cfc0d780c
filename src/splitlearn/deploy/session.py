"""One process per site: ``serve`` hosts the coordinator and the non-client parties on a gRPC hub;
``join`` runs one client party against it. Both rebuild the same parties from the same config
(:func:`~splitlearn.split.cast.build_parties` is deterministic) and keep only their own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import torch

from splitlearn import __version__, runner
from splitlearn.checkpoint import CheckpointError, FolderCheckpoints, write_json_atomic
from splitlearn.config import RunConfig, load_config
from splitlearn.deploy.certs import DeployError, client_credentials, read_token, read_tokens, server_credentials, tls_problem
from splitlearn.runner.files import METRICS, POSITION, STATUS, VERSIONED, RunFileError, check, confined, read_checked
from splitlearn.split.cast import Cast, build_parties
from splitlearn.split.messages import Message, ProtocolError, RelayRequest, StartStep
from splitlearn.split.party import Party
from splitlearn.split.simulation import Simulation
from splitlearn.split.transport import ByteTotals, PartyLost
from splitlearn.split.weights import load_party_weights, save_party_weights
from splitlearn.transport.grpc import ClientTransport, HubTransport, Stalled, StreamClosed
from splitlearn.transport.serde import Limits

__all__ = ["JoinResult", "PredictResult", "ServeResult", "is_loopback", "join", "log_event", "predict", "read_status", "serve"]


_log = logging.getLogger("splitlearn.deploy")


def log_event(event: str, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one operational event: a readable message plus machine-readable fields (see
    :mod:`splitlearn.cli._logging` for the JSON lines ``--log-format json`` writes)."""
    _log.log(level, message, extra={"event": event, "fields": fields})


def _manifest_digests(sim: Simulation) -> dict[str, str]:
    """Per data party, a hash of the sample ids it announced: a session resumes only on the same data."""
    out = {}
    for party, splits in sorted(sim.coordinator.manifests.items()):
        h = hashlib.sha256()
        for split, ids in sorted(splits.items()):
            h.update(split.encode() + b"\0" + torch.sort(ids).values.numpy().tobytes())
        out[party] = h.hexdigest()[:16]
    return out


def _alignment(sim: Simulation, config: RunConfig) -> dict[str, Any] | None:
    """Vertical parties that announced different samples: how many all of them hold, and how many
    each dropped (as ``train`` reports for tables read in one process)."""
    c = sim.coordinator
    if c.group_role is not None or not any(c.dropped.values()):
        return None
    rows = {p: sum(len(ids) for ids in c.manifests[p].values()) for p in c.data_parties}
    samples = sum(len(ids) for ids in c.aligned.values())
    drops = ", ".join(f"{p} {c.dropped[p]} of {rows[p]}" for p in c.data_parties)
    return {"id_column": config.data.id_column, "samples": samples, "rows": rows, "dropped": dict(c.dropped),
            "summary": f"aligned {samples} samples across {len(rows)} parties; rows dropped: {drops}"}


class _Stopped(Exception):
    """Raised between steps when the server was asked to stop (SIGTERM)."""


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` names this machine only (127.0.0.0/8, ::1 or localhost)."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _remote(config: RunConfig) -> tuple[runner.Built, Cast, list[str]]:
    """The built config, its parties, and the names of the client parties (one process each)."""
    if config.privacy.nopeek_a1:
        raise DeployError("privacy.nopeek_a1 > 0 is not supported in a deployment yet; train it in-process")
    built = runner.build(config)
    cast = build_parties(built.split, **runner.party_options(built))
    for party in cast.parties.values():  # what a data party reports of its leakage when the server asks
        party.leakage = runner.party_leakage
    data_roles = built.split.plan.data_roles
    return built, cast, [n for n, p in cast.parties.items() if p.role in data_roles]


# -- server ------------------------------------------------------------------------------------


def _hub(built: runner.Built, remote: Sequence[str], certs: str | Path, *, insecure: bool, timeout: float,
         progress_timeout: float, limits: Limits = Limits()) -> tuple[HubTransport, grpc.ServerCredentials | None]:
    """The server's hub for the client parties ``remote``, and its TLS credentials (None: ``insecure``)."""
    tokens = read_tokens(certs)
    missing = [n for n in remote if n not in tokens]
    if missing:
        raise DeployError(f"{Path(certs) / 'tokens.json'} has no token for {', '.join(missing)}")
    credentials = None if insecure else server_credentials(certs)
    hub = (HubTransport if insecure else _Hub)({tokens[n]: n for n in remote}, plan=built.split.plan, timeout=timeout,
                                               progress_timeout=progress_timeout, limits=limits)
    return hub, credentials


def _listen(hub: HubTransport, listen: str, credentials: grpc.ServerCredentials | None,
            on_ready: Callable[[int, Sequence[str]], None] | None, remote: Sequence[str]) -> None:
    """Start ``hub`` on ``listen``; ``on_ready(port, clients)`` once it listens."""
    try:
        port = hub.start(listen, credentials)
    except RuntimeError as e:
        raise DeployError(f"cannot listen on {listen}: {e}") from None
    if on_ready is not None:
        on_ready(port, remote)


def _hosted(built: runner.Built, cast: Cast, remote: Sequence[str], hub: HubTransport) -> Simulation:
    """The coordinator and the parties the server hosts, on ``hub``."""
    c = built.config
    # A record per message would grow without bound: running totals instead.
    return Simulation(built.split, parties=cast, transport=hub, local=set(cast.parties) - set(remote), relay=c.split.relay,
                      batch_size=c.train.batch_size, seed=c.train.seed, log=ByteTotals())


class _Hub(HubTransport):
    """A hub that also requires each stream's client certificate CN to be the party its token names."""

    def _authenticate(self, context: grpc.ServicerContext) -> str:
        name = super()._authenticate(context)
        cns = [cn.decode() for cn in context.auth_context().get("x509_common_name", [])]
        if cns != [name]:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"the token is {name}'s but the client certificate is for {cns or 'nobody'}")
        return name


@dataclass
class ServeResult:
    run_dir: Path
    metrics: dict[str, Any]
    weights: dict[str, Path]
    finished: bool = True


def serve(
    config: RunConfig,
    *,
    listen: str,
    certs: str | Path,
    insecure: bool = False,
    join_timeout: float = 300.0,
    timeout: float = 300.0,
    progress_timeout: float = 600.0,
    checkpoints: str | Path | None = None,
    checkpoint_every: int = 20,
    rejoin_timeout: float = 600.0,
    limits: Limits = Limits(),
    stop: threading.Event | None = None,
    on_ready: Callable[[int, Sequence[str]], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> ServeResult:
    """Host the coordinator and the non-client parties on ``listen``; wait up to ``join_timeout``
    s for every client party; train ``config.train.epochs`` epochs as ``Simulation.fit`` does;
    write the run folder (config.json, metrics.json, status.json, weights/ of the hosted
    parties); end every stream. TLS with client certificates and per-party tokens from ``certs``,
    unless ``insecure`` (loopback only). ``on_ready(port, clients)`` is called once listening.

    Every ``checkpoint_every`` training steps (and at the end of each client's turn and epoch)
    every party checkpoints, and the training position is saved in ``checkpoints`` (default
    ``checkpoints/serve`` beside ``<out>``): a server started again with the same config goes on
    from there, running again the steps since the last checkpoint (a checkpoint of every step
    would cost a write and an fsync of each party's state per step). A client lost mid-step is waited for up to ``rejoin_timeout`` s
    when a step needs it; the step is rolled back everywhere and run again. ``limits`` bounds
    what clients may send (message size, tensor size). Setting ``stop``
    ends the session at the next checkpoint, which it brings forward to the step after the one in
    progress; the clients wait to reconnect.

    ``timeout`` bounds a wait without any message; ``progress_timeout`` one without progress (no
    step, relay or roll back finished, whatever messages come meanwhile, as when a party sends its
    manifest again and again): then the session stops as at ``stop``, at the last step every
    party checkpointed, and :class:`DeployError` says so; the same command resumes it."""
    if insecure and not is_loopback(listen):
        raise DeployError(f"--insecure is refused on {listen}: only a loopback address may go without TLS")
    if checkpoint_every < 1:
        raise DeployError(f"--checkpoint-every must be >= 1, got {checkpoint_every}")
    if not progress_timeout > 0:
        raise DeployError(f"--progress-timeout must be > 0 seconds, got {progress_timeout:g}")
    built, cast, remote = _remote(config)
    hub, credentials = _hub(built, remote, certs, insecure=insecure, timeout=timeout, progress_timeout=progress_timeout, limits=limits)
    c = built.config
    sim = _hosted(built, cast, remote, hub)
    sim.leakage_batch_size = c.privacy.leakage_batch_size
    tag = runner.fingerprint(config)
    folder = Path(checkpoints) if checkpoints is not None else Path(config.out).parent / "checkpoints" / "serve"
    position_file = folder / "position.json"
    try:
        state = read_checked(position_file, POSITION) if position_file.exists() else None
    except RunFileError as e:
        raise DeployError(str(e)) from None
    if state is not None and state["tag"] != tag:
        raise DeployError(f"{folder} holds checkpoints of another run configuration; remove it or pass --checkpoints")
    if state is not None and state["finished"]:
        state = None  # that session finished: start a new one
    try:
        sim.checkpoint_to(folder, tag=tag, fresh=state is None)
    except CheckpointError as e:
        raise DeployError(str(e)) from None
    if state is not None:
        run_dir = confined(state["run_dir"], config.out, source=position_file, field="run_dir")
        try:
            sim.go_on_from(state)
        except ValueError as e:
            raise DeployError(f"{position_file}: field 'coordinator': {e}") from None
        co = sim.coordinator
        log_event("resume", f"resuming {run_dir.name} at epoch {co.epoch}, batch {co.next_batch} (step {co.committed})",
               run=str(run_dir), epoch=co.epoch, batch=co.next_batch, step=co.committed)
    else:
        run_dir = runner.new_run_dir(config)
    log_event("run_folder", f"run folder: {run_dir} (config.json, metrics.json, status.json; `splitlearn status {run_dir}` "
                            "shows progress once every client has joined)", run=str(run_dir))
    start = time.perf_counter() - (state or {}).get("seconds", 0.0)
    last_status = [0.0]
    data: dict[str, str] = {}  # the clients' manifest digests, once they have announced
    about: dict[str, Any] = {"remote_parties": list(remote)}  # metrics.json's own keys

    def save_position(*, finished: bool) -> float:
        seconds = time.perf_counter() - start
        write_json_atomic(position_file, {"tag": tag, "run_dir": str(run_dir), "finished": finished, "seconds": seconds,
                                          "data": data} | sim.position())
        return seconds

    def commit() -> None:
        seconds = save_position(finished=False)
        if time.monotonic() - last_status[0] > 0.5:
            last_status[0] = time.monotonic()
            _write_status(run_dir, sim, hub, remote, seconds, "training")
        if stop is not None and stop.is_set():
            raise _Stopped()

    def rejoin(party: str) -> None:
        log_event("party_lost", f"{party} was lost; waiting up to {rejoin_timeout:g} s for it to rejoin", level=logging.WARNING,
               party=party, step=sim.coordinator.committed)
        _write_status(run_dir, sim, hub, remote, time.perf_counter() - start, f"waiting for {party}")
        hub.wait_for_parties([party], timeout=rejoin_timeout)
        hub.progressed()  # waiting for a lost party is not a stall
        log_event("party_back", f"{party} is back", party=party)

    def lost(e: PartyLost) -> None:
        if e.expelled:
            log_event("party_cut_off", f"{e.party} was cut off: {e.reason}", level=logging.WARNING,
                      party=e.party, reason=e.reason, step=sim.coordinator.committed)

    def halt(state: str) -> dict[str, Any]:
        """End the session short of its epochs, at the last checkpoint: unfinished metrics, the
        streams closed with "resume", and ``state`` in status.json."""
        seconds = time.perf_counter() - start
        metrics = runner.write_metrics(run_dir, sim, seconds, finished=False, **about)
        hub.stop(resume=True)
        _write_status(run_dir, sim, hub, remote, seconds, state)
        return metrics

    sim.coordinator.rejoin, sim.coordinator.on_commit, sim.coordinator.on_lost = rejoin, commit, lost
    sim.coordinator.on_progress = hub.progressed
    sim.coordinator.checkpoint_every = checkpoint_every
    try:
        _listen(hub, listen, credentials, on_ready, remote)
        joined_by = time.monotonic() + join_timeout
        while True:  # a party cut off (or gone) before training may join again, within the join timeout
            try:
                try:
                    hub.wait_for_parties(remote, timeout=max(0.0, joined_by - time.monotonic()))
                except TimeoutError:
                    missing = sorted(set(remote) - set(hub.connected()))
                    raise DeployError(f"parties {missing} did not connect within {join_timeout:g} s") from None
                hub.progressed()  # from now on, the session must move on within progress_timeout
                sim.coordinator.collect_manifests()
                break
            except PartyLost as e:
                lost(e)
                sim.coordinator.manifests.pop(e.party, None)  # what its next connection announces counts
        data.update(_manifest_digests(sim))
        if a := _alignment(sim, config):
            about["alignment"] = a
            log_event("aligned", a["summary"], **{k: v for k, v in a.items() if k != "summary"})
        if state is not None and "data" in state:
            changed = sorted(p for p, d in data.items() if state["data"].get(p) != d)
            if changed:
                raise DeployError(f"{', '.join(changed)} announced other samples than before the restart: their data changed, "
                                  f"so the saved position means nothing now; to start afresh, remove {folder}")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
        sim.coordinator.restart()  # every party back to the last step all finished (step 0 when new)

        def epoch_done(record: dict[str, Any]) -> None:
            record |= sim.remote_leakage()  # each client's DCOR(X, Z) on its own held-out data, as train reports it
            record |= runner.privacy_spent(config, sim, record["epoch"])
            commit()
            runner.write_metrics(run_dir, sim, time.perf_counter() - start, finished=False, **about)
            if on_epoch is not None:
                on_epoch(record)

        def step_done(i: int, n: int) -> None:
            if stop is not None and stop.is_set():
                sim.coordinator.checkpoint_every = 1  # checkpoint (and so stop) at the next step issued

        remaining = config.train.epochs - len(sim.history)
        if remaining > 0:
            sim.fit(remaining, on_step=step_done, on_epoch=epoch_done)
        weights = save_party_weights(list(sim.parties.values()), run_dir / "weights")
        seconds = save_position(finished=True)
        metrics = runner.write_metrics(run_dir, sim, seconds, finished=True, **about)
        hub.stop()  # the last status shows the streams ended
        _write_status(run_dir, sim, hub, remote, seconds, "finished")
    except _Stopped:
        return ServeResult(run_dir, halt("stopped"), {}, finished=False)
    except Stalled as e:
        halt("stalled")
        committed = sim.coordinator.committed
        log_event("stalled", f"stalled: {e}", level=logging.WARNING, step=committed)
        raise DeployError(f"the session stalled: {e}; stopped at step {committed}, which every party has checkpointed: "
                          "run the same command to resume") from None
    except (TimeoutError, ConnectionError, ProtocolError, CheckpointError) as e:
        raise DeployError(str(e)) from None
    finally:
        # Unless the session ended above (the streams are closed already), the clients are told the
        # server went away, not that training is over: they reconnect to a restarted serve.
        hub.stop(resume=True)
    return ServeResult(run_dir, metrics, weights)


@dataclass
class PredictResult:
    run_dir: Path
    scores: dict[str, dict[str, float]]  # who predicted ("all", or each round-robin client on its own data) -> its scores
    path: Path | None  # the server's predictions CSV, for tasks whose labels the server holds


def _trained_run(run_dir: Path) -> RunConfig:
    """The config of a finished run folder of ``serve``; :class:`DeployError` unless it is one."""
    for name in ("config.json", "metrics.json"):
        if not (run_dir / name).is_file():
            raise DeployError(f"{run_dir} is not a run folder: it has no {name}")
    try:
        metrics = read_checked(run_dir / "metrics.json", VERSIONED)
        if metrics["splitlearn_version"] != __version__:
            raise DeployError(f"{run_dir} was written by splitlearn {metrics['splitlearn_version']}, this is {__version__}: retrain it")
        check(metrics, METRICS, run_dir / "metrics.json")
        if not metrics["finished"]:
            raise DeployError(f"{run_dir} holds an unfinished run (no final weights): finish it with serve first")
        return load_config(run_dir / "config.json")
    except (RunFileError, ValueError) as e:
        raise DeployError(str(e)) from None


def predict(
    run_dir: str | Path,
    *,
    listen: str,
    certs: str | Path,
    split: str = "test",
    insecure: bool = False,
    join_timeout: float = 300.0,
    timeout: float = 300.0,
    on_ready: Callable[[int, Sequence[str]], None] | None = None,
) -> PredictResult:
    """Predict ``split`` with what a served run trained, through the protocol it trained with.

    The server hosts its parties with their weights from ``<run>/weights``; each client joins
    with ``join(..., predict=split)`` (``splitlearn join --predict``), holding its own weights from
    its ``--out`` folder, its own data and, where it owns them, the labels; the party scoring a
    task writes the predictions at its own site. No segment leaves its owner. Round-robin clients
    with their own data (``data.sites = "own"``) each predict their own split in turn, the segments
    relayed to each as in training; with dealt data the client holding the segments predicts the
    shared split once. Writes ``<run>/predictions-<split>.json`` (the scores) and, for tasks whose
    labels the server holds, ``<run>/predictions-<split>.csv``."""
    run_dir = Path(run_dir)
    if split not in ("train", "test"):
        raise DeployError(f"split must be 'train' or 'test', got {split!r}")
    if insecure and not is_loopback(listen):
        raise DeployError(f"--insecure is refused on {listen}: only a loopback address may go without TLS")
    config = _trained_run(run_dir)
    built, cast, remote = _remote(config)
    hub, credentials = _hub(built, remote, certs, insecure=insecure, timeout=timeout, progress_timeout=timeout)
    sim = _hosted(built, cast, remote, hub)
    co = sim.coordinator
    try:
        sim.load_weights(run_dir / "weights")
    except (FileNotFoundError, CheckpointError) as e:
        raise DeployError(str(e)) from None
    if co.group_role is not None:
        holder = read_status(run_dir).get("holder")
        if holder not in co.clients:
            raise DeployError(f"{run_dir / 'status.json'} does not name the client that holds the trained segments")
        co.holder = holder
    scores: dict[str, dict[str, float]] = {}
    outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    try:
        _listen(hub, listen, credentials, on_ready, remote)
        log_event("predict", f"predicting the {split} split with {run_dir}; waiting for {', '.join(remote)} (join --predict)",
                  run=str(run_dir), split=split)
        try:
            hub.wait_for_parties(remote, timeout=join_timeout)
        except TimeoutError:
            missing = sorted(set(remote) - set(hub.connected()))
            raise DeployError(f"parties {missing} did not connect within {join_timeout:g} s") from None
        co.collect_manifests()
        turns = list(co.clients) if co.group_role is not None and config.data.sites == "own" else [None]
        for client in turns:
            out, got = sim.predict(split, client=client)
            scores[client or "all"] = got
            shown = ", ".join(f"{k} {v:.4f}" for k, v in got.items()) or "scored where the labels are, and not shared"
            log_event("predicted", f"{client or split}: {shown}", party=client, **got)
            for task, pair in out.items():
                outputs.setdefault(task, []).append(pair)
        path = None
        if outputs:
            owners = sim.label_owners()
            merged = {task: (torch.cat([i for i, _ in pairs]), torch.cat([o for _, o in pairs])) for task, pairs in outputs.items()}
            labels = {task: dict(zip(owners[task].shards[split].sample_ids.tolist(), owners[task].shards[split].labels[task].tolist()))
                      for task in merged}
            path = runner.write_predictions(run_dir / f"predictions-{split}.csv", merged, labels)
        write_json_atomic(run_dir / f"predictions-{split}.json", {"split": split, "scores": scores})
        hub.stop()  # the session is over: every client writes what it predicted
    except PartyLost as e:
        raise DeployError(f"{e.party} was lost during prediction: run the same commands again") from None
    except (TimeoutError, ConnectionError, ProtocolError, ValueError) as e:
        raise DeployError(str(e)) from None
    finally:
        hub.stop(resume=True)
    return PredictResult(run_dir, scores, path)


def _write_status(run_dir: Path, sim: Simulation, hub: HubTransport, remote: Sequence[str], seconds: float, state: str) -> None:
    c = sim.coordinator
    status = {"state": state, "updated": time.time(), "seconds": seconds, "epoch": c.epoch, "next_batch": c.next_batch,
              "step": c.committed, "holder": c.holder, "clients": list(remote), "connected": hub.connected(),
              "absent": sorted(c.absent), "connects": dict(hub.connects),
              "bytes_sent": sim.log.bytes_by("sender"), "bytes_received": sim.log.bytes_by("receiver")}
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "status.json", status)


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """What ``status.json`` in a served run folder says; :class:`DeployError` if there is none."""
    path = Path(run_dir) / "status.json"
    if not path.exists():
        raise DeployError(f"{path} does not exist: is {run_dir} a run folder of splitlearn serve?")
    try:
        return read_checked(path, STATUS)
    except RunFileError as e:
        raise DeployError(str(e)) from None


# -- client ------------------------------------------------------------------------------------


@dataclass
class JoinResult:
    party: str
    weights: Path | None  # None when the party holds no segments at the end (it relayed them on)
    losses: list[tuple[int, float]]  # (step, loss) of the heads scored here
    predictions: Path | None = None  # join --predict: the CSV of what this party scored


class _EpochLines:
    """What ``join`` logs of each epoch as its party sees it, once its part of the epoch is over
    (it hands the segments on, or the evaluation begins): the training steps it ran, the mean
    loss it scored (where it computes the loss) and DCOR(X, Z) of its segment on its own held-out
    data. A party's watcher: it sees every message the party acts on."""

    def __init__(self, party: Party, *, leakage_batch_size: int) -> None:
        self.party, self.leakage_batch_size = party, leakage_batch_size
        self.epoch: int | None = None
        self.steps = self.first_step = self.last_step = 0

    def __call__(self, msg: Message) -> None:
        if isinstance(msg, StartStep) and msg.mode == "train":
            if msg.epoch != self.epoch:
                self.flush()
                self.epoch, self.steps, self.first_step = msg.epoch, 0, msg.step
            if msg.step > self.last_step:  # a step begun after the one before it is seen again then
                self.steps, self.last_step = self.steps + 1, msg.step
        elif isinstance(msg, RelayRequest) or isinstance(msg, StartStep):  # its turn, or the epoch's training, is over
            self.flush()

    def flush(self) -> None:
        if self.epoch is None:
            return
        p, fields = self.party, {"epoch": self.epoch, "steps": self.steps}
        text = f"{p.name}: epoch {self.epoch}: {self.steps} training steps here"
        losses = [v for s, v in p.losses if s >= self.first_step]
        if losses:
            fields["train_loss"] = sum(losses) / len(losses)
            text += f", train loss {fields['train_loss']:.4f}"
        by_node, collapsed = runner.party_leakage(p, batch_size=self.leakage_batch_size)
        if by_node:
            fields["dcor"] = sum(by_node.values()) / len(by_node)
            text += f", leakage DCOR(X, Z) {fields['dcor']:.3f} on its held-out data" + (" (collapsed)" if collapsed else "")
        log_event("epoch", text, party=p.name, **fields)
        self.epoch = None


_REJECTED = {grpc.StatusCode.UNAUTHENTICATED: "rejected credentials", grpc.StatusCode.PERMISSION_DENIED: "rejected credentials",
             grpc.StatusCode.ALREADY_EXISTS: "refused"}


def _wait_reachable(target: str, credentials: grpc.ChannelCredentials | None, timeout: float,
                    tls: Callable[[], str | None] = lambda: None) -> None:
    """Retry a connection (TCP and TLS handshake) with exponential backoff for ``timeout`` s. A
    handshake that fails for a reason retrying cannot mend (the certificate names another host, or
    another CA signed it) ends at once, saying so: ``tls`` finds that reason."""
    deadline, delay = time.monotonic() + timeout, 0.2
    while True:
        channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
        try:
            grpc.channel_ready_future(channel).result(timeout=max(0.1, min(delay, deadline - time.monotonic())))
            return
        except grpc.FutureTimeoutError:
            problem = tls() if credentials else None
            if problem:
                raise DeployError(f"TLS handshake with server {target} failed: {problem}") from None
            if time.monotonic() >= deadline:
                raise DeployError(f"server {target} unreachable (or the TLS handshake failed) for {timeout:g} s") from None
        finally:
            channel.close()
        delay = min(delay * 2, 5.0)


_RECONNECT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
              grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}


def join(
    config: RunConfig,
    *,
    server: str,
    party: str,
    certs: str | Path,
    out: str | Path,
    insecure: bool = False,
    connect_timeout: float = 60.0,
    reconnect_timeout: float = 600.0,
    share_scores: bool | None = None,
    data_root: str | Path | None = None,
    predict: str | None = None,
) -> JoinResult:
    """Run client party ``party`` of ``config`` against the hub at ``server`` until it ends the
    session; write ``<out>/<party>.safetensors``. Its token is ``<certs>/<party>.token``; TLS
    trusts ``<certs>/ca.pem`` and presents ``<certs>/<party>.pem``, unless ``insecure`` (loopback only).

    The party checkpoints when the server says so in ``<out>/checkpoints/<party>`` and starts from its
    newest checkpoint; the server rolls it back as needed. If the connection breaks (the server
    restarts), it reconnects with exponential backoff for up to ``reconnect_timeout`` s.

    A party that scores the test split reports its totals over each pass (counts and summed loss,
    nothing per sample) to the server if ``share_scores``; by default (``None``) it does when it
    sends its labels to the server for training anyway (vanilla), and not when they never leave
    it (U-shaped).

    With ``data.sites = "own"`` the party trains on its own files at ``data_root`` (the configured
    data set's format), which no other process sees; otherwise it keeps the shard of the
    configured data set dealt to it, and ``data_root`` must be ``None``.

    With ``predict`` ("test" or "train"), the party takes part in the server's prediction of that
    split (:func:`predict`, ``splitlearn predict RUN --listen``) with the weights it trained,
    ``<out>/<party>.safetensors`` (a round-robin client without that file holds no segments until
    they are relayed to it), and writes ``<out>/<party>-predictions-<split>.csv`` for what it scores. It
    neither checkpoints nor writes weights, and a broken connection ends it: run both again."""
    if insecure and not is_loopback(server):
        raise DeployError(f"--insecure is refused for {server}: only a loopback address may go without TLS")
    built, cast, remote = _remote(config)
    if party not in remote:
        raise DeployError(f"unknown party {party!r}: this config's client parties are {', '.join(remote)}")
    if config.data.sites == "own":
        if data_root is None:
            raise DeployError(f"data.sites = 'own': give {party} its data with --data-root (files of data set {config.data.name!r})")
        try:
            cast.parties[party].shards = runner.own_shards(built, cast.parties[party].role, data_root)
        except (ValueError, OSError) as e:
            raise DeployError(f"{party}'s own data: {e}") from None
    elif data_root is not None:
        raise DeployError("--data-root is for data.sites = 'own'; with data.sites = 'dealt' every process deals itself "
                          f"its shard of data set {config.data.name!r}")
    me = cast.parties[party]
    if predict is not None:
        _ready_to_predict(me, Path(out), predict)
    token = read_token(certs, party)
    credentials = None if insecure else client_credentials(certs, party)
    if share_scores is not None:
        me.share_scores = share_scores
    epochs = _EpochLines(me, leakage_batch_size=config.privacy.leakage_batch_size)
    if predict is None:
        me.watchers.append(epochs)
        try:
            me.checkpoints = FolderCheckpoints(Path(out) / "checkpoints" / party, tag=runner.fingerprint(config))
            if step := me.resume():
                log_event("resume", f"{party}: starting from its checkpoint of step {step}", party=party, step=step)
        except CheckpointError as e:
            raise DeployError(str(e)) from None
    wait = connect_timeout
    while True:
        _wait_reachable(server, credentials, wait, tls=lambda: tls_problem(server, certs, party))
        transport = ClientTransport()
        me.connect(transport)
        try:
            transport.connect(server, name=party, token=token, credentials=credentials)
            log_event("connected", f"{party}: connected to {server}", party=party, server=server)
            if party in cast.data_parties:
                me.announce()
            transport.serve()
            break
        except StreamClosed as e:
            if predict is not None:
                raise DeployError(f"the prediction session ended early ({e.code.name}: {e.details}): run it again") from None
            if e.code not in _RECONNECT:
                raise DeployError(f"{_REJECTED.get(e.code, 'session failed')}: {e.code.name}: {e.details}") from None
            log_event("reconnect", f"{party}: connection lost ({e.code.name}: {e.details}); reconnecting", level=logging.WARNING,
                   party=party, code=e.code.name)
            wait = reconnect_timeout
        except ProtocolError as e:
            raise DeployError(f"session failed: {e}") from None
        finally:
            transport.close()
    if predict is not None:
        return JoinResult(party, None, me.losses, _write_own_predictions(me, Path(out), predict))
    epochs.flush()
    return JoinResult(party, save_party_weights([me], Path(out)).get(party), me.losses)


def _ready_to_predict(me: Party, out: Path, split: str) -> None:
    """``me`` with the weights it trained, keeping what it predicts."""
    if split not in ("train", "test"):
        raise DeployError(f"--predict takes 'train' or 'test', got {split!r}")
    if split not in me.shards and me.shards:
        raise DeployError(f"{me.name} holds no {split!r} samples to predict")
    path = out / f"{me.name}.safetensors"
    if me.nodes:
        if path.is_file():
            try:
                load_party_weights(me, path)
            except CheckpointError as e:
                raise DeployError(str(e)) from None
        elif me.make_modules is not None:
            me.hold_segments(False)  # a round-robin client: the segments are relayed to it
        else:
            raise DeployError(f"no weights at {path}: --predict uses the weights this site trained (join --out of that session)")
    me.keep_predictions, me.predictions = True, {}


def _write_own_predictions(me: Party, out: Path, split: str) -> Path | None:
    """``<out>/<party>-predictions-<split>.csv`` of what ``me`` scored, with its own labels; None if it scored nothing."""
    if not me.predictions:
        return None
    shard = me.shards[split]
    outputs = {task: (torch.cat([i for i, _ in pairs]), torch.cat([o for _, o in pairs])) for task, pairs in me.predictions.items()}
    labels = {task: dict(zip(shard.sample_ids.tolist(), shard.labels[task].tolist())) for task in outputs}
    path = runner.write_predictions(out / f"{me.name}-predictions-{split}.csv", outputs, labels)
    log_event("predictions", f"{me.name}: predictions of its {split} samples are in {path}", party=me.name, path=str(path))
    return path
