"""``splitlearn report``: the leakage report of a run folder, as one HTML page."""

from __future__ import annotations

import argparse

from rich.console import Console

from splitlearn.runner import attacks


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write RUN_DIR/report.html: accuracy, leakage and attack results of a run")
    p.add_argument("run_dir")


def run(args: argparse.Namespace) -> int:
    path = attacks.report(args.run_dir)
    Console().print(f"Report: {path}", soft_wrap=True, highlight=False)
    return 0
