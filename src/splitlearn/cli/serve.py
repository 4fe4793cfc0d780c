"""``splitlearn serve``: host the coordinator and the server-side parties; clients ``join`` it."""

from __future__ import annotations

import argparse
import sys
import threading

from splitlearn.cli._logging import add_log_argument, operational
from splitlearn.config import load_config
from splitlearn.deploy import is_loopback, log_event, serve

WARNING = "WARNING: --insecure: no TLS, tokens and activations travel in clear text. Use it on loopback for tests only."


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="host a deployment's coordinator and server parties over gRPC (TLS)")
    p.add_argument("--config", required=True, help="JSON or TOML run config, the same file every client uses")
    p.add_argument("--listen", default="127.0.0.1:50051", help="address to listen on (default 127.0.0.1:50051)")
    p.add_argument("--certs", required=True, help="folder written by splitlearn certs (server.pem/.key, ca.pem, tokens.json)")
    p.add_argument("--insecure", action="store_true", help="no TLS (loopback addresses only)")
    p.add_argument("--out", help="parent folder for the run folder (default: the config's out)")
    p.add_argument("--join-timeout", type=float, default=300.0, help="seconds to wait for every client to join")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds without a message before giving up")
    p.add_argument("--progress-timeout", type=float, default=600.0,
                   help="seconds without a finished step (whatever messages come) before stopping at the last checkpoint "
                        "(default 600); the same command resumes")
    p.add_argument("--checkpoints", help="folder for the server's checkpoints (default: checkpoints/serve beside the runs "
                                         "folder); starting again with the same config resumes from it")
    p.add_argument("--checkpoint-every", type=int, default=20, metavar="N",
                   help="checkpoint every N training steps, and at each turn's and epoch's end (default 20; "
                        "after a crash up to N steps run again)")
    p.add_argument("--rejoin-timeout", type=float, default=600.0, help="seconds to wait for a lost client to rejoin")
    add_log_argument(p)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, {"out": args.out} if args.out else None)
    if args.insecure and is_loopback(args.listen):
        print(f"\n{'!' * len(WARNING)}\n{WARNING}\n{'!' * len(WARNING)}\n", file=sys.stderr)

    def ready(port: int, clients) -> None:
        host = args.listen.rpartition(":")[0]
        log_event("listening", f"listening on {host}:{port} ({'insecure' if args.insecure else 'mutual TLS + tokens'}); "
                          f"waiting for {', '.join(clients)}", address=f"{host}:{port}", tls=not args.insecure, clients=list(clients))

    def epoch(record: dict) -> None:
        scores = {k: v for k, v in record.items() if k in ("train_loss", "dp_epsilon") or k.startswith("test_accuracy")}
        text = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        log_event("epoch", f"epoch {record['epoch']}" + (f": {text}" if text else ""), epoch=record["epoch"], **scores)

    stop = threading.Event()

    def terminate() -> None:
        log_event("sigterm", "SIGTERM: stopping at a checkpoint after the next step; start again to resume")
        stop.set()

    with operational(args.log_format, terminate):
        result = serve(config, listen=args.listen, certs=args.certs, insecure=args.insecure, join_timeout=args.join_timeout,
                       timeout=args.timeout, progress_timeout=args.progress_timeout, checkpoints=args.checkpoints, checkpoint_every=args.checkpoint_every,
                       rejoin_timeout=args.rejoin_timeout, stop=stop, on_ready=ready, on_epoch=epoch)
        if not result.finished:
            log_event("stopped", f"Stopped; progress is checkpointed. Run the same command to resume {result.run_dir}",
                      run=str(result.run_dir))
        else:
            log_event("finished", f"Results (config.json, metrics.json, status.json, weights/) are in {result.run_dir}",
                      run=str(result.run_dir))
    return 0
