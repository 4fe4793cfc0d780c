"""``splitlearn predict``: predict with a trained run, through the protocol."""

from __future__ import annotations

import argparse

from rich.console import Console

from splitlearn import experiment


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict a data split with a run folder's weights, through the protocol")
    p.add_argument("run_dir", help="run folder written by splitlearn train")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--device", help="override the run's device")
    p.add_argument("--weights", action="append", default=[], metavar="DIR",
                   help="a further folder of party weights (a deployment's clients keep theirs: join --out); repeatable")


def run(args: argparse.Namespace) -> int:
    path, scores = experiment.predict(args.run_dir, split=args.split, device=args.device, weights=args.weights)
    console = Console()
    for key, value in scores.items():
        console.print(f"{args.split} {key}: {value:.4f}")
    console.print(f"Predictions are in {path}", soft_wrap=True, highlight=False)
    return 0
