"""gRPC + TLS on loopback against in-process: time per training step and wire bytes per raw byte.

One run trains the same config (Fashion-MNIST or digits, small CNN, vanilla, one client) in
process and over gRPC with mutual TLS on 127.0.0.1, with the machine's cores dealt out three ways:

* **Each side on cores of its own**, as at two sites. The physical cores are split in two
  halves. ``splitlearn serve`` runs on one half and ``splitlearn join`` on the other, as separate
  processes, each with as many compute threads as its cores; the in-process run gets one half
  and as many threads. Each party computes as fast as in process, so the ratio is what the
  protocol adds to a step at two sites whose machines are like the one the in-process run has.
  The protocol's work is spread over both halves, though, where the in-process run has one: see
  the next arm. It runs with serve's default checkpoints (every 20 steps) and with checkpoints
  only at epoch ends (the transport's own cost).
* **Both processes on the in-process run's cores**: serve and join as above, but both on the
  first half. The same cores in total as the in-process run.
* **Both sides sharing every core**: a trial on one machine. The in-process run uses every core.
  ``serve`` and ``join`` run on two threads of this process and share the cores: with checkpoints
  at epoch ends, every 20 steps and every step. To show where the extra time goes, the two sides
  also run on two threads without gRPC: messages passed by reference (what splitting one
  process's work over two threads costs), then through the wire encoding and its checks
  (``serde``, no network), then over gRPC without TLS.

Times are the median training time of an epoch (without its evaluation, epochs after the first).
In each setting the in-process run goes once before and once after the others, so that a load
that comes and goes hits every arm alike. Bytes are counted twice, untimed, over one epoch: the
exact protobuf encoding of every message over the raw tensor bytes those messages carry (in
process); and every byte on the TCP socket between join and serve (TLS records and handshakes,
HTTP/2 and gRPC framing, protobuf), through a counting relay, over the raw tensor bytes of the
messages that crossed it. All runs exchange the same messages, bit for bit.
Targets: <= 1.5x time, <= 1.02x bytes.

    python benchmarks/grpc_overhead.py [--dataset fashion_mnist|digits] [--epochs 4] [--batch-size 64]
                                       [--settings own,shared] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch
from _two_threads import on_threads

from splitlearn import deploy, runner
from splitlearn.config import DataConfig, ModelConfig, RunConfig, SplitConfig, TrainConfig, load_config
from splitlearn.transport.serde import wire_size

OWN, SHARED = "own", "shared"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in_process(config: RunConfig) -> list[float]:
    """Training seconds of each epoch after the first, with every party in this process."""
    sim = runner.simulation(runner.build(config))
    return [r["train_seconds"] for r in sim.fit(config.train.epochs)][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist (6400 training images) or digits")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...: where every party computes")
    parser.add_argument("--settings", default=f"{OWN},{SHARED}",
                        help=f"{OWN} (each side on cores of its own), {SHARED} (both sides on every core), or both")
    parser.add_argument("--in-process-only", metavar="CONFIG", help=argparse.SUPPRESS)  # a child run of the own-cores setting
    args = parser.parse_args()
    if args.in_process_only:
        print(json.dumps(_in_process(load_config(args.in_process_only))))
        return
    if args.epochs < 2:
        parser.error("--epochs must be 2 or more: the first epoch (warm-up) is not timed")
    settings = [s.strip() for s in args.settings.split(",")]
    if not settings or set(settings) - {OWN, SHARED}:
        parser.error(f"--settings takes {OWN}, {SHARED} or both, got {args.settings!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    if OWN in settings and not hasattr(os, "sched_setaffinity"):
        parser.error(f"the {OWN} setting pins processes to cores, which needs Linux; use --settings {SHARED}")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if OWN in settings and len(cores) < 2:
        parser.error(f"the {OWN} setting needs 2 or more cores; this process may use {len(cores)}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = RunConfig(
            data=DataConfig(name=args.dataset, limit_train=6400, limit_test=1000), model=ModelConfig(name="small_cnn"),
            split=SplitConfig(configuration="vanilla", clients=1),
            train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device), out=str(tmp / "runs"),
        )
        steps = len(runner.simulation(runner.build(config)).coordinator.schedule(1))
        certs = tmp / "certs"  # the development CA and certificates of every session
        deploy.make_certs(certs, server_name="localhost", clients=["client"])
        results = {}
        if OWN in settings:
            results[OWN] = _own_cores(config, tmp / OWN, certs, cores, steps)
        if SHARED in settings:
            results[SHARED] = _shared_cores(config, tmp / SHARED, certs, steps)
        raw, wire = _bytes(config)
        on_socket, crossed = _socket_bytes(config, tmp / "bytes", certs)

    print(f"{args.dataset}, small CNN, vanilla, 1 client, batch {args.batch_size}, {steps} steps an epoch, {args.epochs} epochs, "
          f"on {args.device}")
    for setting, (title, local, arms) in results.items():
        in_process = statistics.median(local)
        print(f"\n{title}\n{'ms per training step':<58} {'ms':>8} {'ratio':>7}")
        print(f"{'in-process':<58} {1e3 * in_process / steps:>8.2f} {1.0:>7.3f}")
        for label, seconds in arms.items():
            median = statistics.median(seconds)
            print(f"{label:<58} {1e3 * median / steps:>8.2f} {median / in_process:>7.3f}")
    print(f"\n{'bytes (one epoch)':<58} {'raw':>14} {'wire':>14} {'ratio':>7}")
    print(f"{'every message, tensors vs their protobuf encoding':<58} {raw:>14,} {wire:>14,} {wire / raw:>7.4f}")
    print(f"{'on the TCP socket (TLS, HTTP/2, gRPC) vs tensors crossing it':<58} {crossed:>14,} {on_socket:>14,} "
          f"{on_socket / crossed:>7.4f}")


def _own_cores(config: RunConfig, tmp: Path, certs: Path, cores: list[int], steps: int) -> tuple[str, list[float], dict[str, list[float]]]:
    """In-process on one half of the cores, against serve and join as processes on a half each."""
    server_cores, client_cores = _halves(cores)
    tmp.mkdir(parents=True)
    path = tmp / "config.json"
    path.write_text(json.dumps(config.override({"out": str(tmp / "runs")}).to_dict()))

    def in_process() -> list[float]:
        with _children() as children:
            child = children.start([__file__, "--in-process-only", str(path)], server_cores, tmp / "in-process.log")
            return json.loads(children.output(child, "the in-process run").splitlines()[-1])  # after any warning

    local = in_process()
    arms = {
        "gRPC + TLS, checkpoints every 20 steps (serve's default)": _processes(path, tmp / "every-20", certs, server_cores, client_cores, 20),
        "gRPC + TLS, checkpoints at epoch ends": _processes(path, tmp / "every-epoch", certs, server_cores, client_cores, steps),
        "gRPC + TLS, every 20 steps, both on the in-process CPUs": _processes(path, tmp / "same-cores", certs, server_cores,
                                                                               server_cores, 20),
    }
    local += in_process()
    n = len(server_cores)
    title = (f"Each side on cores of its own, as at two sites: serve on CPUs {_span(server_cores)}, join on CPUs "
             f"{_span(client_cores)}, separate processes; in-process on CPUs {_span(server_cores)}; {n} thread(s) each")
    return title, local, arms


def _halves(cores: list[int]) -> tuple[list[int], list[int]]:
    """Two equal sets of ``cores`` on different physical cores (hyperthreads of one core stay together)."""
    groups: dict[str, list[int]] = {}
    for cpu in cores:
        try:
            key = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip()
        except OSError:
            key = str(cpu)
        groups.setdefault(key, []).append(cpu)
    physical = sorted(groups.values())
    half = len(physical) // 2
    if half == 0:
        raise SystemExit(f"the {OWN} setting needs 2 or more physical cores; CPUs {_span(cores)} are one core's threads")
    return [c for g in physical[:half] for c in g], [c for g in physical[half:2 * half] for c in g]


def _span(cores: list[int]) -> str:
    return ",".join(map(str, cores))


# Pins itself to the CPUs in argv[1] ("-": leaves them be) before anything starts a thread, then
# runs argv[2] (a script path or a module name) with the rest as its arguments.
_PINNED = (
    "import os, runpy, sys; sys.argv[1] == '-' or os.sched_setaffinity(0, [int(c) for c in sys.argv[1].split(',')]); "
    "target = sys.argv[2]; sys.argv = sys.argv[2:]; script = target.endswith('.py'); "
    "script and sys.path.insert(0, os.path.dirname(os.path.abspath(target))); "
    "runpy.run_path(target, run_name='__main__') if script else runpy.run_module(target, run_name='__main__', alter_sys=True)"
)


class _children:
    """Child processes pinned to CPUs, their output in files; any still running at exit are killed."""

    def __enter__(self) -> _children:
        self.running: list[tuple[subprocess.Popen, Path]] = []
        return self

    def __exit__(self, *exc) -> None:
        for process, _ in self.running:
            if process.poll() is None:
                process.kill()
                process.wait()

    def start(self, argv: list[str], cores: list[int] | None, log: Path) -> subprocess.Popen:
        """Run ``argv`` (a script path or module, and its arguments) on ``cores`` with as many
        compute threads (``None``: wherever the OS likes, with the default threads)."""
        env = dict(os.environ) if cores is None else dict(os.environ, OMP_NUM_THREADS=str(len(cores)), MKL_NUM_THREADS=str(len(cores)))
        with open(log, "w") as out:
            process = subprocess.Popen([sys.executable, "-c", _PINNED, "-" if cores is None else _span(cores), *argv], env=env,
                                       stdout=out, stderr=subprocess.STDOUT, text=True)
        self.running.append((process, log))
        return process

    def output(self, process: subprocess.Popen, what: str, timeout: float = 1800) -> str:
        """Wait for ``process``; its output, or exit with it if it failed."""
        log = next(path for p, path in self.running if p is process)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"{what} did not finish within {timeout:g} s; its output is in {log}") from None
        if code:
            raise SystemExit(f"{what} exited with {code}:\n{log.read_text()[-3000:]}")
        return log.read_text()


def _processes(path: Path, tmp: Path, certs: Path, server_cores: list[int], client_cores: list[int], every: int) -> list[float]:
    """Training seconds per epoch (after the first) of ``splitlearn serve`` and ``splitlearn join``
    as processes on their cores, checkpointing every ``every`` steps."""
    tmp.mkdir(parents=True)
    serve, join = _session_argv(path, tmp, certs, f"localhost:{_free_port()}", every=every)
    with _children() as children:
        server = children.start(serve, server_cores, tmp / "serve.log")
        client = children.start(join, client_cores, tmp / "join.log")
        children.output(server, "splitlearn serve")  # on failure, the client is killed on the way out
        children.output(client, "splitlearn join", timeout=60)
    (metrics,) = (tmp / "runs").glob("*/metrics.json")
    return [r["train_seconds"] for r in json.loads(metrics.read_text())["epochs"]][1:]


def _session_argv(path: Path, tmp: Path, certs: Path, listen: str, *, every: int, server: str | None = None) -> tuple[list[str], list[str]]:
    """The serve and join command lines of a one-client session in ``tmp`` (join dials ``server``,
    by default the address serve listens on); join gives up soon if serve goes away."""
    common = ["--config", str(path), "--certs", str(certs), "--log-format", "json"]
    serve = ["splitlearn", "serve", *common, "--listen", listen, "--out", str(tmp / "runs"),
             "--checkpoints", str(tmp / "checkpoints"), "--checkpoint-every", str(every), "--join-timeout", "120"]
    join = ["splitlearn", "join", *common, "--server", server or listen, "--party", "client", "--out", str(tmp / "client"),
            "--connect-timeout", "120", "--reconnect-timeout", "5"]
    return serve, join


def _socket_bytes(config: RunConfig, tmp: Path, certs: Path) -> tuple[int, int]:
    """One epoch of serve and join as processes, join dialling serve through a counting TCP relay:
    the bytes that crossed the socket (TLS, HTTP/2 and gRPC framing, protobuf), and the raw
    tensor bytes of the messages that crossed it."""
    tmp.mkdir(parents=True)
    path = tmp / "config.json"
    path.write_text(json.dumps(config.override({"out": str(tmp / "runs"), "train": {"epochs": 1}}).to_dict()))
    port = _free_port()
    relay = _Relay(("127.0.0.1", port))
    serve, join = _session_argv(path, tmp, certs, f"localhost:{port}", every=10**9, server=f"localhost:{relay.port}")
    try:
        with _children() as children:
            server = children.start(serve, None, tmp / "serve.log")
            client = children.start(join, None, tmp / "join.log")
            children.output(server, "splitlearn serve (bytes run)")
            children.output(client, "splitlearn join (bytes run)", timeout=60)
    finally:
        relay.close()
    (metrics,) = (tmp / "runs").glob("*/metrics.json")
    metrics = json.loads(metrics.read_text())
    return relay.total, metrics["bytes_sent"]["client"] + metrics["bytes_received"]["client"]


class _Relay:
    """Accepts on a free loopback port and relays each connection to ``target``, counting the
    bytes both ways (``total``)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.total, self._lock = target, 0, threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._pumps: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                outbound = socket.create_connection(self.target)
            except OSError:  # serve not listening yet: the client retries
                inbound.close()
                continue
            for a, b in ((inbound, outbound), (outbound, inbound)):
                pump = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                pump.start()
                self._pumps.append(pump)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        buffer = bytearray(1 << 20)
        try:
            while n := src.recv_into(buffer):
                dst.sendall(memoryview(buffer)[:n])
                with self._lock:
                    self.total += n
        except OSError:
            pass
        finally:
            for end in (src, dst):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            src.close()

    def close(self) -> None:
        """Stop accepting; wait for the connections to end (the processes have exited), so that
        ``total`` is complete."""
        self._listener.close()
        for pump in self._pumps:
            pump.join(10)


def _shared_cores(config: RunConfig, tmp: Path, certs: Path, steps: int) -> tuple[str, list[float], dict[str, list[float]]]:
    """Every arm on every core: in-process, then the two sides on two threads of this process."""
    local = _in_process(config)
    arms = {
        "two threads, messages by reference": on_threads(config, encode=False),
        "two threads, wire encoding, no network": on_threads(config, encode=True),
        "gRPC without TLS, checkpoints at epoch ends": _over_grpc(config, tmp / "insecure", certs, steps, insecure=True),
        "gRPC + TLS, checkpoints at epoch ends": _over_grpc(config, tmp / "every-epoch", certs, steps),
        "gRPC + TLS, checkpoints every 20 steps": _over_grpc(config, tmp / "every-20", certs, 20),
        "gRPC + TLS, checkpoints every step": _over_grpc(config, tmp / "every-1", certs, 1),
    }
    local += _in_process(config)  # once more, after: a fairer median on a busy machine
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    title = f"Both sides sharing every core (a trial on one machine): {n} cores, two threads of one process"
    return title, local, arms


def _bytes(config: RunConfig) -> tuple[int, int]:
    """Raw tensor bytes and their wire size over one in-process epoch."""
    raw = wire = 0

    def count(message) -> None:
        nonlocal raw, wire
        raw += message.payload_bytes
        wire += wire_size(message)

    counted = runner.simulation(runner.build(config))
    counted.transport.observers.append(count)
    counted.fit(1)
    return raw, wire


def _over_grpc(config: RunConfig, tmp: Path, certs: Path, every: int, *, insecure: bool = False) -> list[float]:
    """Training seconds per epoch (after the first) of ``config`` as serve + join on two threads,
    checkpointing every ``every`` steps."""
    target, seconds, errors = f"localhost:{_free_port()}", [], []
    config = config.override({"out": str(tmp / "runs")})

    def run(fn, **kw) -> None:
        try:
            fn(config, certs=certs, insecure=insecure, **kw)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [
        threading.Thread(target=run, args=(deploy.serve,), kwargs=dict(listen=target, checkpoint_every=every,
                                                                       checkpoints=tmp / "checkpoints",
                                                                       on_epoch=lambda r: seconds.append(r["train_seconds"]))),
        threading.Thread(target=run, args=(deploy.join,), kwargs=dict(server=target, party="client", out=tmp / "client")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"the gRPC run failed: {errors[0]}")
    return seconds[1:]


if __name__ == "__main__":
    main()
