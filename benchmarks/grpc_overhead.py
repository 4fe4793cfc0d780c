"""gRPC + TLS on loopback against in-process: time per training step and wire bytes per raw byte.

One run trains the same config (Fashion-MNIST or digits, small CNN, vanilla, one client) three times: in-process,
and twice as ``splitlearn serve`` + ``splitlearn join`` on two threads talking mutual TLS over
127.0.0.1: with a checkpoint only at the end of each epoch (the transport's own cost) and with every
party checkpointing after every step (``--checkpoint-every 1``, the default of ``serve``). The
time ratio compares the median training time of an epoch (without its evaluation; epochs after
the first; the in-process run goes once before and once after the gRPC runs, so that a load that
comes and goes hits both arms alike). The byte ratio is the size of the exact protobuf encoding of
every message (what the gRPC transport sends) over the raw tensor bytes those messages carry,
counted in one more in-process epoch, untimed; all runs exchange the same messages, bit for bit.
Targets: <= 1.5x time, <= 1.02x bytes.

    python benchmarks/grpc_overhead.py [--dataset fashion_mnist|digits] [--epochs 4] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
from pathlib import Path

from splitlearn import deploy, experiment
from splitlearn.config import DataConfig, ModelConfig, RunConfig, SplitConfig, TrainConfig
from splitlearn.transport.serde import wire_size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist (6400 training images) or digits")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = RunConfig(
            data=DataConfig(name=args.dataset, limit_train=6400, limit_test=1000), model=ModelConfig(name="small_cnn"),
            split=SplitConfig(configuration="vanilla", clients=1),
            train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size), out=str(tmp / "runs"),
        )
        sim = experiment.simulation(experiment.build(config))
        local = [r["train_seconds"] for r in sim.fit(args.epochs)][1:]
        steps = len(sim.coordinator.schedule(1))

        deploy.make_certs(tmp / "certs", server_name="localhost", clients=["client"])
        remote = {every: _over_grpc(config, tmp / f"every-{every}", every) for every in (steps, 1)}
        again = experiment.simulation(experiment.build(config))  # in-process once more, after: a fairer median on a busy machine
        local += [r["train_seconds"] for r in again.fit(args.epochs)][1:]

        raw = wire = 0

        def count(message) -> None:
            nonlocal raw, wire
            raw += message.payload_bytes
            wire += wire_size(message)

        counted = experiment.simulation(experiment.build(config))
        counted.transport.observers.append(count)
        counted.fit(1)
    in_process = statistics.median(local)
    print(f"{args.dataset}, small CNN, vanilla, 1 client, batch {args.batch_size}, {steps} steps an epoch, {args.epochs} epochs")
    print(f"{'':<38} {'in-process':>11} {'gRPC + TLS':>11} {'ratio':>7}")
    for every, label in ((steps, "checkpoints at epoch ends"), (1, "checkpoints every step")):
        grpc_tls = statistics.median(remote[every][1:])
        print(f"{'ms per step, ' + label:<38} {1e3 * in_process / steps:>11.2f} {1e3 * grpc_tls / steps:>11.2f} "
              f"{grpc_tls / in_process:>7.3f}")
    print(f"{'bytes (raw tensors, wire)':<38} {raw:>11,} {wire:>11,} {wire / raw:>7.4f}")


def _over_grpc(config: RunConfig, tmp: Path, every: int) -> list[float]:
    """Seconds per epoch of ``config`` as serve + join on two threads, checkpointing every ``every`` steps."""
    target, seconds, errors = f"localhost:{_free_port()}", [], []
    config = config.override({"out": str(tmp / "runs")})
    certs = Path(config.out).parent.parent / "certs"

    def run(fn, **kw) -> None:
        try:
            fn(config, certs=certs, **kw)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [
        threading.Thread(target=run, args=(deploy.serve,), kwargs=dict(listen=target, checkpoint_every=every,
                                                                       on_epoch=lambda r: seconds.append(r["train_seconds"]))),
        threading.Thread(target=run, args=(deploy.join,), kwargs=dict(server=target, party="client", out=tmp / "client")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"the gRPC run failed: {errors[0]}")
    return seconds


if __name__ == "__main__":
    main()
