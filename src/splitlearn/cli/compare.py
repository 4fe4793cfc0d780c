"""``splitlearn compare``: split learning, FedAvg and large-batch SGD on one task, side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from splitlearn.baselines import compare, compression_costs, summary
from splitlearn.cli._format import codec_label, human_bytes
from splitlearn.config import COMPRESSION_CODECS, load_config

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LABELS = {"split": "split learning", "fedavg": "FedAvg", "large_batch_sgd": "large-batch SGD"}
COLUMNS = {  # summary key -> (title, format)
    "test_accuracy": ("test accuracy", lambda v: f"{v:.4f}"),
    "client_tflops": ("client TFLOPs / client", lambda v: f"{v:.4g}"),
    "client_bytes": ("client bytes / client", human_bytes),
    "client_memory": ("client peak memory", human_bytes),
}


def _codecs(text: str) -> list[str]:
    codecs = [c for c in text.split(",") if c and c != "none"]
    unknown = sorted(set(codecs) - set(COMPRESSION_CODECS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown codecs {unknown}; choose from {', '.join(COMPRESSION_CODECS[1:])}")
    return list(dict.fromkeys(codecs))


def _label(method: str, topk_ratio: float) -> str:
    if method.startswith("split "):
        return f"SL {codec_label(method.partition(' ')[2], topk_ratio)}"
    return LABELS[method]


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="train split learning, FedAvg and large-batch SGD on one task and compare their costs")
    p.add_argument("--dataset", default="digits", help="data set (default: digits)")
    p.add_argument("--model", default="small_cnn", help="model (default: small_cnn)")
    p.add_argument("--clients", type=int, default=10, help="clients K (default: 10)")
    p.add_argument("--epochs", type=int, default=5, help="epochs; FedAvg rounds of one local epoch (default: 5)")
    p.add_argument("--out", default="compare", help="folder for compare.json, compare.png and the split run (default: compare)")
    p.add_argument("--compression", type=_codecs, default=[], metavar="CODECS",
                   help="also train split learning with these codecs at the cut, comma-separated: fp16, int8, topk "
                        "(e.g. int8 or fp16,int8,topk), and report bytes saved and accuracy cost")
    p.add_argument("--topk-ratio", type=float, default=0.1, help="share of each sample's values topk sends (default: 0.1)")


def _figure(rows: dict[str, dict[str, float]], topk_ratio: float) -> Figure:
    from matplotlib.figure import Figure  # here: matplotlib takes 0.3 s to import

    fig = Figure(figsize=(12 + 1.5 * max(len(rows) - 3, 0), 3.4), layout="constrained")
    names = [_label(m, topk_ratio) for m in rows]
    for ax, (key, (title, _)) in zip(fig.subplots(1, len(COLUMNS)), COLUMNS.items()):
        ax.bar(names, [r[key] for r in rows.values()], color=[f"C{i}" for i in range(len(rows))])
        ax.set_title(title)
        ax.set_xticks(range(len(names)), names, rotation=30, horizontalalignment="right")
    return fig


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    config = load_config(None, {
        "data.name": args.dataset, "model.name": args.model, "split.clients": args.clients,
        "train.epochs": args.epochs, "out": str(out / "runs"), "compression.topk_ratio": args.topk_ratio,
    })
    ratio = config.compression.topk_ratio
    console = Console()
    console.print(f"[bold]splitlearn compare[/]: {args.model} on {args.dataset}, {args.clients} clients, {args.epochs} epochs")
    with console.status("starting") as status:
        metrics = compare(config, compressions=args.compression,
                          progress=lambda line: (status.update(line), console.log(line, markup=False, highlight=False)))
    rows = {m: summary(v) for m, v in metrics.items()}
    table = Table(title="Split learning against federated baselines (per client: mean over clients)")
    table.add_column("method")
    for title, _ in COLUMNS.values():
        table.add_column(title, justify="right")
    for m, r in rows.items():
        table.add_row(_label(m, ratio), *(fmt(r[k]) for k, (_, fmt) in COLUMNS.items()))
    console.print(table)
    saved = {"config": config.to_dict(), "summary": rows, "metrics": metrics}
    if args.compression:
        saved["compression"] = costs = compression_costs(metrics)
        console.print(_compression_table(costs, ratio))
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(saved, indent=2))
    _figure(rows, ratio).savefig(out / "compare.png", dpi=120)
    console.print(f"compare.json and compare.png are in {out}", soft_wrap=True, highlight=False)
    return 0


def _compression_table(costs: dict[str, dict[str, float]], topk_ratio: float) -> Table:
    table = Table(title="Compression at the cut (split learning; training bytes per client: activations sent, gradients received)")
    for col in ("codec", "cut bytes / client", "times fewer", "test accuracy", "accuracy change"):
        table.add_column(col, justify="left" if col == "codec" else "right")
    for codec, c in costs.items():
        table.add_row(codec_label(codec, topk_ratio), human_bytes(c["cut_bytes"]), f"{c['saving']:.2f}x",
                      f"{c['test_accuracy']:.4f}", f"{c['accuracy_change_points']:+.2f} points")
    return table
