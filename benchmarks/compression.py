"""Compression at the cut, measured: split learning trained on one task with raw tensors at the cut
and with each codec (fp16, int8, topk), from the same initial weights, data and batch order.

Prints, per codec, the training bytes at the cut (smashed data up and gradients down, all clients)
as the accounting logs them (tensor payload) and as serialised Envelopes (protobuf, as gRPC sends
them), how many times fewer serialised bytes than raw, and the final test accuracy with its change
in points.

    python benchmarks/compression.py [--dataset digits] [--clients 4] [--epochs 10] [--topk-ratio 0.1]
"""

from __future__ import annotations

import argparse
import time

from splitlearn import runner
from splitlearn.config import load_config
from splitlearn.split.compression import CODECS
from splitlearn.split.messages import Message
from splitlearn.transport.serde import wire_size


class CutBytes:
    """Transport observer: payload and serialised bytes of the training messages at the cut."""

    def __init__(self) -> None:
        self.payload = self.serialised = 0

    def __call__(self, message: Message) -> None:
        if message.kind == "Gradient" or (message.kind == "Activation" and message.mode == "train"):
            self.payload += message.payload_bytes
            self.serialised += wire_size(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--topk-ratio", type=float, default=0.1)
    args = parser.parse_args()
    print(f"{args.model} on {args.dataset}, {args.clients} round-robin clients, {args.epochs} epochs; cut bytes: training, all clients")
    print(f"{'codec':<9} {'payload':>11} {'serialised':>11} {'times fewer':>11} {'test acc':>9} {'change':>13}")
    base, start = None, time.perf_counter()
    for codec in ("none", *CODECS):
        config = load_config(None, {
            "data.name": args.dataset, "model.name": args.model, "split.clients": args.clients, "train.epochs": args.epochs,
            "compression.codec": codec, "compression.topk_ratio": args.topk_ratio,
        })
        sim = runner.simulation(runner.build(config))
        cut = CutBytes()
        sim.transport.observers.append(cut)
        accuracy = sim.fit(config.train.epochs)[-1]["test_accuracy"]
        base = base or (cut.serialised, accuracy)
        label = f"topk {args.topk_ratio:g}" if codec == "topk" else codec
        print(
            f"{label:<9} {cut.payload:>11,} {cut.serialised:>11,} {base[0] / cut.serialised:>10.2f}x {accuracy:>9.4f}"
            f" {100 * (accuracy - base[1]):>+7.2f} points",
            flush=True,
        )
    print(f"measured in one run of {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
