"""Pipelined steps against steps one at a time when every message takes a network's latency.

The server side and the client run on two threads of this process; each message between them
arrives ``latency`` seconds after it was sent (one way). A vanilla step must wait for the smashed
data to go out and the gradient to come back: one round trip. Run one at a time, a step also waits
for the client's StepDone to reach the coordinator and for the next StartStep to come back: a
second round trip. Pipelined, the next StartStep is already with the client when it finishes.
For each latency the run prints ms per training step both ways (same config, same results).

    python benchmarks/latency.py [--latencies-ms 0,2,10] [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from _two_threads import on_threads

from splitlearn import runner
from splitlearn.config import DataConfig, ModelConfig, RunConfig, SplitConfig, TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latencies-ms", default="0,2,10", help="one-way latencies to try, comma-separated")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    latencies = [float(v) for v in args.latencies_ms.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(data=DataConfig(name="digits"), model=ModelConfig(name="small_cnn"),
                           split=SplitConfig(configuration="vanilla", clients=1),
                           train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size), out=tmp)
        steps = len(runner.simulation(runner.build(config)).coordinator.schedule(1))
        rows = [(latency, {p: on_threads(config, latency=latency / 1e3, pipeline=p) for p in (False, True)})
                for latency in latencies]
    print(f"digits, small CNN, vanilla, 1 client, batch {args.batch_size}, {steps} steps an epoch; ms per training step")
    print(f"{'one-way latency':>16} {'one at a time':>14} {'pipelined':>10} {'saved':>7} {'a round trip':>13}")
    for latency, ms in rows:
        serial, piped = (1e3 * statistics.median(ms[p]) / steps for p in (False, True))
        print(f"{latency:>13.1f} ms {serial:>14.2f} {piped:>10.2f} {serial - piped:>7.2f} {2 * latency:>13.1f}")


if __name__ == "__main__":
    main()
