"""``splitlearn status RUN``: where a served session stands: step, clients, bytes."""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from splitlearn.deploy import read_status


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="show a served run's progress: step, connected clients, bytes")
    p.add_argument("run", help="the run folder splitlearn serve writes (it holds status.json)")


def run(args: argparse.Namespace) -> int:
    s = read_status(args.run)
    console = Console()
    age = time.time() - s["updated"]
    console.print(f"[bold]{escape(s['state'])}[/bold]: epoch {s['epoch']}, batch {s['next_batch']}, step {s['step']} "
                  f"({s['seconds']:.0f} s of training; updated {age:.0f} s ago)")
    table = Table("client", "connected", "connections", "bytes sent", "bytes received")
    for client in s["clients"]:
        table.add_row(escape(client), "yes" if client in s["connected"] else ("lost" if client in s["absent"] else "no"),
                      str(s["connects"].get(client, 0)), f"{s['bytes_sent'].get(client, 0):,}",
                      f"{s['bytes_received'].get(client, 0):,}")
    console.print(table)
    return 0
