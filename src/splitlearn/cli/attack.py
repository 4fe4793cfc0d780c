"""``splitlearn attack``: play the curious party against a finished run folder."""

from __future__ import annotations

import argparse

from rich.console import Console

from splitlearn.report import RunEvidence, verdicts
from splitlearn.runner import attacks


def add_parser(sub) -> None:
    p = sub.add_parser("attack", help="attack a run folder: reconstruction from smashed data, or labels from gradients")
    p.add_argument("kind", choices=["reconstruction", "inversion", "labels", "completion"],
                   help="reconstruction: a decoder trained on auxiliary data; inversion: no auxiliary data (UnSplit); "
                        "labels: from the cut gradients; completion: labels from a handful of known ones (model completion)")
    p.add_argument("run_dir")
    p.add_argument("--aux", type=int, default=1000, help="reconstruction: auxiliary samples the attacker holds")
    p.add_argument("--victims", type=int, default=64, help="inversion: test samples whose smashed data is inverted")
    p.add_argument("--steps", type=int, default=1000, help="inversion: optimisation steps")
    p.add_argument("--per-class", type=int, default=10, help="completion: labels the attacker knows per class")
    p.add_argument("--device", help="override the run's device")
    p.add_argument("--weights", action="append", default=[], metavar="DIR",
                   help="a further folder of party weights (a deployment's clients keep theirs: join --out); repeatable")


def run(args: argparse.Namespace) -> int:
    console = Console()
    what = {"reconstruction": "training a decoder from smashed data to inputs", "labels": "reading labels from cut gradients",
            "inversion": "fitting inputs and a surrogate client to the smashed data",
            "completion": "fitting a top model to a handful of known labels"}[args.kind]
    with console.status(f"{args.kind} attack on {args.run_dir}: {what}"):
        if args.kind == "reconstruction":
            results = attacks.attack_reconstruction(args.run_dir, aux_samples=args.aux, device=args.device, weights=args.weights)
        elif args.kind == "inversion":
            results = attacks.attack_inversion(args.run_dir, victims=args.victims, steps=args.steps, device=args.device,
                                               weights=args.weights)
        elif args.kind == "completion":
            results = attacks.attack_completion(args.run_dir, per_class=args.per_class, device=args.device, weights=args.weights)
        else:
            results = attacks.attack_labels(args.run_dir, device=args.device, weights=args.weights)
    console.print(results["view"], soft_wrap=True, highlight=False, markup=False)
    metrics = {k: v for k, v in results.items() if k not in ("classes", "view")}
    for key, value in metrics.items():
        console.print(f"{key}: {value:.4f}")
    for line in verdicts(RunEvidence(args.run_dir, [], metrics, classes=results.get("classes"))):
        console.print(line, highlight=False)
    console.print(f"Results are in {args.run_dir}/attacks.json; `splitlearn report {args.run_dir}` draws them", soft_wrap=True, highlight=False)
    return 0
