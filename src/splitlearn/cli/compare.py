"""``splitlearn compare``: split learning, FedAvg and large-batch SGD on one task, side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from splitlearn.baselines import compare, summary
from splitlearn.cli._format import human_bytes
from splitlearn.config import load_config

LABELS = {"split": "split learning", "fedavg": "FedAvg", "large_batch_sgd": "large-batch SGD"}
COLUMNS = {  # summary key -> (title, format)
    "test_accuracy": ("test accuracy", lambda v: f"{v:.4f}"),
    "client_tflops": ("client TFLOPs / client", lambda v: f"{v:.4g}"),
    "client_bytes": ("client bytes / client", human_bytes),
    "client_memory": ("client peak memory", human_bytes),
}


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="train split learning, FedAvg and large-batch SGD on one task and compare their costs")
    p.add_argument("--dataset", default="digits", help="data set (default: digits)")
    p.add_argument("--model", default="small_cnn", help="model (default: small_cnn)")
    p.add_argument("--clients", type=int, default=10, help="clients K (default: 10)")
    p.add_argument("--epochs", type=int, default=5, help="epochs; FedAvg rounds of one local epoch (default: 5)")
    p.add_argument("--out", default="compare", help="folder for compare.json, compare.png and the split run (default: compare)")


def _figure(rows: dict[str, dict[str, float]]) -> Figure:
    fig = Figure(figsize=(12, 3.2), layout="constrained")
    names = [LABELS[m] for m in rows]
    for ax, (key, (title, _)) in zip(fig.subplots(1, len(COLUMNS)), COLUMNS.items()):
        ax.bar(names, [r[key] for r in rows.values()], color=["C0", "C1", "C2"][: len(rows)])
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=20)
    return fig


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    config = load_config(None, {
        "data.name": args.dataset, "model.name": args.model, "split.clients": args.clients,
        "train.epochs": args.epochs, "out": str(out / "runs"),
    })
    console = Console()
    console.print(f"[bold]splitlearn compare[/]: {args.model} on {args.dataset}, {args.clients} clients, {args.epochs} epochs")
    metrics = compare(config)
    rows = {m: summary(v) for m, v in metrics.items()}
    table = Table(title="Split learning against federated baselines (per client: mean over clients)")
    table.add_column("method")
    for title, _ in COLUMNS.values():
        table.add_column(title, justify="right")
    for m, r in rows.items():
        table.add_row(LABELS[m], *(fmt(r[k]) for k, (_, fmt) in COLUMNS.items()))
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps({"config": config.to_dict(), "summary": rows, "metrics": metrics}, indent=2))
    _figure(rows).savefig(out / "compare.png", dpi=120)
    console.print(f"compare.json and compare.png are in {out}", soft_wrap=True, highlight=False)
    return 0
