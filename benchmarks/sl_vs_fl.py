"""Client cost of split learning relative to FedAvg, measured: one epoch (one FedAvg round of one
local epoch) of small_cnn on digits at K = 10 and K = 100 clients, same data and partition.

Prints, per K, SL / FL for training TFLOPs per client and for bytes sent plus received per client.

    python benchmarks/sl_vs_fl.py [--clients 10 100] [--epochs 1]
"""

from __future__ import annotations

import argparse
import tempfile

from splitlearn.baselines import compare, summary
from splitlearn.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    print(f"{'K':>5} {'SL TFLOPs':>11} {'FL TFLOPs':>11} {'ratio':>7} {'SL bytes':>11} {'FL bytes':>11} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as out:
        for k in args.clients:
            config = load_config(None, {"data.name": "digits", "model.name": "small_cnn", "split.clients": k, "train.epochs": args.epochs, "out": out})
            runs = compare(config, methods=("split", "fedavg"))
            sl, fl = summary(runs["split"]), summary(runs["fedavg"])
            print(
                f"{k:>5} {sl['client_tflops']:>11.3e} {fl['client_tflops']:>11.3e} {sl['client_tflops'] / fl['client_tflops']:>7.3f}"
                f" {sl['client_bytes']:>11.0f} {fl['client_bytes']:>11.0f} {sl['client_bytes'] / fl['client_bytes']:>7.3f}"
            )


if __name__ == "__main__":
    main()
