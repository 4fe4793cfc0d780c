"""``splitlearn certs``: a development CA, server and client certificates, and tokens."""

from __future__ import annotations

import argparse

from splitlearn.deploy import make_certs


def add_parser(sub) -> None:
    p = sub.add_parser("certs", help="write a development CA, TLS certificates and tokens for serve/join")
    p.add_argument("--out", required=True, help="folder to write into (must not hold certificates yet)")
    p.add_argument("--server-name", default="localhost", help="host name or IP the clients dial (default: localhost)")
    p.add_argument("--clients", required=True, type=lambda s: [c for c in s.split(",") if c],
                   help="comma-separated client party names, e.g. client0,client1")
    p.add_argument("--days", type=int, default=365, help="validity of the certificates (default 365)")


def run(args: argparse.Namespace) -> int:
    make_certs(args.out, server_name=args.server_name, clients=args.clients, days=args.days)
    print(f"Wrote ca, server and {', '.join(args.clients)} certificates, keys and tokens to {args.out}")
    print("Keep ca.key and tokens.json on the server machine; give each client ca.pem, <party>.pem, <party>.key and <party>.token.")
    return 0
