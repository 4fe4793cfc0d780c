"""gRPC + TLS on loopback against in-process: time per training step and wire bytes per raw byte.

One run trains the same config (Fashion-MNIST or digits, small CNN, vanilla, one client) in
process and over gRPC with mutual TLS on 127.0.0.1, in two settings of the machine's cores:

* **Each side on cores of its own**, as at two sites. The machine's cores are split in two
  halves. ``splitlearn serve`` runs on one half and ``splitlearn join`` on the other, as separate
  processes, each with as many compute threads as its cores. The in-process run gets one half
  and as many threads. Both ways, each party computes with one site's cores. This is the
  deployment the transport is for: the ratio is the price of the protocol, not of the hardware.
  It runs with serve's default checkpoints (every 20 steps) and with checkpoints only at epoch
  ends (the transport's own cost).
* **Both sides sharing every core**: a trial on one machine. The in-process run uses every core.
  ``serve`` and ``join`` run on two threads of this process and share the cores: with checkpoints
  at epoch ends, every 20 steps and every step. To show where the extra time goes, the two sides
  also run on two threads without gRPC: messages passed by reference (what splitting one
  process's work over two threads costs), then through the wire encoding and its checks
  (``serde``, no network), then over gRPC without TLS.

Times are the median training time of an epoch (without its evaluation, epochs after the first).
In each setting the in-process run goes once before and once after the others, so that a load
that comes and goes hits every arm alike. The byte ratio is the size of the exact protobuf
encoding of every message (what the gRPC transport sends) over the raw tensor bytes those
messages carry, counted in one more in-process epoch, untimed; all runs exchange the same
messages, bit for bit. Targets: <= 1.5x time, <= 1.02x bytes.

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

from splitlearn import deploy, experiment
from splitlearn.config import DataConfig, ModelConfig, RunConfig, SplitConfig, TrainConfig, load_config
from splitlearn.transport.serde import wire_size

OWN, SHARED = "own", "shared"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in_process(config: RunConfig) -> list[float]:
    """Training seconds of each epoch after the first, with every party in this process."""
    sim = experiment.simulation(experiment.build(config))
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
        steps = len(experiment.simulation(experiment.build(config)).coordinator.schedule(1))
        deploy.make_certs(tmp / "certs", server_name="localhost", clients=["client"])
        results = {}
        if OWN in settings:
            results[OWN] = _own_cores(config, tmp / OWN, cores, steps)
        if SHARED in settings:
            results[SHARED] = _shared_cores(config, tmp / SHARED, steps)
        raw, wire = _bytes(config)

    print(f"{args.dataset}, small CNN, vanilla, 1 client, batch {args.batch_size}, {steps} steps an epoch, {args.epochs} epochs, "
          f"on {args.device}")
    for setting, (title, local, arms) in results.items():
        in_process = statistics.median(local)
        print(f"\n{title}\n{'ms per training step':<58} {'ms':>8} {'ratio':>7}")
        print(f"{'in-process':<58} {1e3 * in_process / steps:>8.2f} {1.0:>7.3f}")
        for label, seconds in arms.items():
            median = statistics.median(seconds)
            print(f"{label:<58} {1e3 * median / steps:>8.2f} {median / in_process:>7.3f}")
    print(f"\n{'bytes':<58} {'raw':>14} {'wire':>14} {'ratio':>7}")
    print(f"{'tensors vs their protobuf encoding':<58} {raw:>14,} {wire:>14,} {wire / raw:>7.4f}")


def _own_cores(config: RunConfig, tmp: Path, cores: list[int], steps: int) -> tuple[str, list[float], dict[str, list[float]]]:
    """In-process on one half of the cores, against serve and join as processes on a half each."""
    half = len(cores) // 2
    server_cores, client_cores = cores[:half], cores[half:2 * half]
    tmp.mkdir(parents=True)
    path = tmp / "config.json"
    path.write_text(json.dumps(config.override({"out": str(tmp / "runs")}).to_dict()))

    def in_process() -> list[float]:
        done = _child([sys.executable, __file__, "--in-process-only", str(path)], server_cores, capture=True)
        return json.loads(done.stdout)

    local = in_process()
    arms = {
        "gRPC + TLS, checkpoints every 20 steps (serve's default)": _processes(path, tmp / "every-20", server_cores, client_cores, 20),
        "gRPC + TLS, checkpoints at epoch ends": _processes(path, tmp / "every-epoch", server_cores, client_cores, steps),
    }
    local += in_process()
    title = (f"Each side on cores of its own, as at two sites: serve on cores {_span(server_cores)}, join on cores "
             f"{_span(client_cores)}, separate processes; in-process on cores {_span(server_cores)}; {half} thread(s) each")
    return title, local, arms


def _span(cores: list[int]) -> str:
    return ",".join(map(str, cores))


def _child(argv: list[str], cores: list[int], *, capture: bool = False, wait: bool = True):
    """Run ``argv`` on ``cores`` only, with as many compute threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(len(cores)), MKL_NUM_THREADS=str(len(cores)))
    kw = dict(env=env, preexec_fn=lambda: os.sched_setaffinity(0, cores),
              stdout=subprocess.PIPE if capture else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if not wait:
        return subprocess.Popen(argv, **kw)
    done = subprocess.run(argv, **kw, timeout=1800)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed:\n{done.stderr[-3000:]}")
    return done


def _processes(path: Path, tmp: Path, server_cores: list[int], client_cores: list[int], every: int) -> list[float]:
    """Training seconds per epoch (after the first) of ``splitlearn serve`` and ``splitlearn join``
    as processes on their cores, checkpointing every ``every`` steps."""
    port, certs = _free_port(), tmp.parent.parent / "certs"
    cli = [sys.executable, "-m", "splitlearn"]
    common = ["--config", str(path), "--certs", str(certs), "--log-format", "json"]
    server = _child([*cli, "serve", *common, "--listen", f"localhost:{port}", "--out", str(tmp / "runs"),
                     "--checkpoints", str(tmp / "checkpoints"), "--checkpoint-every", str(every)], server_cores, wait=False)
    client = _child([*cli, "join", *common, "--server", f"localhost:{port}", "--party", "client", "--out", str(tmp / "client")],
                    client_cores, wait=False)
    failed = []
    for name, process in (("serve", server), ("join", client)):
        try:
            _, err = process.communicate(timeout=1800)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        if process.returncode:
            failed.append(f"splitlearn {name} exited with {process.returncode}:\n{err[-3000:]}")
    if failed:
        raise SystemExit("\n".join(failed))
    (metrics,) = (tmp / "runs").glob("*/metrics.json")
    return [r["train_seconds"] for r in json.loads(metrics.read_text())["epochs"]][1:]


def _shared_cores(config: RunConfig, tmp: Path, steps: int) -> tuple[str, list[float], dict[str, list[float]]]:
    """Every arm on every core: in-process, then the two sides on two threads of this process."""
    local = _in_process(config)
    arms = {
        "two threads, messages by reference": on_threads(config, encode=False),
        "two threads, wire encoding, no network": on_threads(config, encode=True),
        "gRPC without TLS, checkpoints at epoch ends": _over_grpc(config, tmp / "insecure", steps, insecure=True),
        "gRPC + TLS, checkpoints at epoch ends": _over_grpc(config, tmp / "every-epoch", steps),
        "gRPC + TLS, checkpoints every 20 steps": _over_grpc(config, tmp / "every-20", 20),
        "gRPC + TLS, checkpoints every step": _over_grpc(config, tmp / "every-1", 1),
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

    counted = experiment.simulation(experiment.build(config))
    counted.transport.observers.append(count)
    counted.fit(1)
    return raw, wire


def _over_grpc(config: RunConfig, tmp: Path, every: int, *, insecure: bool = False) -> list[float]:
    """Training seconds per epoch (after the first) of ``config`` as serve + join on two threads,
    checkpointing every ``every`` steps."""
    target, seconds, errors = f"localhost:{_free_port()}", [], []
    config = config.override({"out": str(tmp / "runs")})
    certs = tmp.parent.parent / "certs"

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
