"""``splitlearn predict``: predict with a trained run, through the protocol: in this process, or,
with ``--listen``, as the server of a deployment whose clients ``join --predict``."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from splitlearn import runner
from splitlearn.cli._logging import add_log_argument, operational


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict a data split with a run folder's weights, through the protocol")
    p.add_argument("run_dir", help="run folder written by splitlearn train or splitlearn serve")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--device", help="override the run's device")
    p.add_argument("--weights", action="append", default=[], metavar="DIR",
                   help="a further folder of party weights (a deployment's clients keep theirs: join --out); repeatable")
    served = p.add_argument_group("a deployment's prediction (the clients keep their weights and data: join --predict)")
    served.add_argument("--listen", metavar="HOST:PORT", help="serve the prediction to the clients of the served run RUN_DIR")
    served.add_argument("--certs", help="--listen: folder written by splitlearn certs (server.pem/.key, ca.pem, tokens.json)")
    served.add_argument("--insecure", action="store_true", help="--listen: no TLS (loopback addresses only)")
    served.add_argument("--join-timeout", type=float, default=300.0, help="--listen: seconds to wait for every client to join")
    served.add_argument("--timeout", type=float, default=300.0, help="--listen: seconds without a message before giving up")
    add_log_argument(p)


def run(args: argparse.Namespace) -> int:
    if args.listen is not None:
        return _served(args)
    for flag in ("certs", "insecure"):
        if getattr(args, flag):
            raise ValueError(f"--{flag} goes with --listen (a deployment's prediction)")
    path, scores = runner.predict(args.run_dir, split=args.split, device=args.device, weights=args.weights)
    console = Console()
    for key, value in scores.items():
        console.print(f"{args.split} {key}: {value:.4f}")
    console.print(f"Predictions are in {path}", soft_wrap=True, highlight=False)
    return 0


def _served(args: argparse.Namespace) -> int:
    from splitlearn.cli.serve import WARNING
    from splitlearn.deploy import DeployError, is_loopback, log_event, predict

    if args.certs is None:
        raise DeployError("--listen needs --certs, the folder splitlearn certs wrote")
    if args.weights or args.device:
        raise DeployError("--weights and --device are for a prediction in this process; with --listen each party uses its own")
    if args.insecure and is_loopback(args.listen):
        print(f"\n{'!' * len(WARNING)}\n{WARNING}\n{'!' * len(WARNING)}\n", file=sys.stderr)

    def ready(port: int, clients) -> None:
        host = args.listen.rpartition(":")[0]
        log_event("listening", f"listening on {host}:{port} ({'insecure' if args.insecure else 'mutual TLS + tokens'}); "
                          f"waiting for {', '.join(clients)} to join --predict", address=f"{host}:{port}", clients=list(clients))

    def terminate() -> None:
        raise KeyboardInterrupt

    with operational(args.log_format, terminate):
        result = predict(args.run_dir, listen=args.listen, certs=args.certs, split=args.split, insecure=args.insecure,
                         join_timeout=args.join_timeout, timeout=args.timeout, on_ready=ready)
        where = f"; the server's predictions are in {result.path}" if result.path else "; each party scoring a task keeps its predictions"
        log_event("finished", f"scores in {result.run_dir / f'predictions-{args.split}.json'}{where}", run=str(result.run_dir))
    return 0
