"""``splitlearn serve``: host the coordinator and the server-side parties; clients ``join`` it."""

from __future__ import annotations

import argparse
import sys

from splitlearn.config import load_config
from splitlearn.deploy import is_loopback, serve

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


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, {"out": args.out} if args.out else None)
    if args.insecure and is_loopback(args.listen):
        print(f"\n{'!' * len(WARNING)}\n{WARNING}\n{'!' * len(WARNING)}\n", file=sys.stderr)

    def ready(port: int, clients) -> None:
        host = args.listen.rpartition(":")[0]
        print(f"listening on {host}:{port} ({'insecure' if args.insecure else 'mutual TLS + tokens'}); "
              f"waiting for {', '.join(clients)}", flush=True)

    def epoch(record: dict) -> None:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k == "train_loss" or k.startswith("test_accuracy"))
        print(f"epoch {record['epoch']}" + (f": {scores}" if scores else ""), flush=True)

    result = serve(config, listen=args.listen, certs=args.certs, insecure=args.insecure,
                   join_timeout=args.join_timeout, timeout=args.timeout, on_ready=ready, on_epoch=epoch)
    print(f"Results (config.json, metrics.json, weights/) are in {result.run_dir}", flush=True)
    return 0
