"""``splitlearn runs [DIR]``: the run folders under DIR, one line each."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def add_parser(sub) -> None:
    p = sub.add_parser("runs", help="list run folders: kind, state, epochs, accuracy and leakage")
    p.add_argument("dir", nargs="?", default="runs", help="the folder holding run folders (default: runs)")


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name}: {type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path.name}: not a JSON object")
    return value


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summarise(run: Path) -> dict[str, str]:
    """What one run folder says of itself; fields it cannot read say so instead of failing."""
    row = {"run": run.name, "kind": "served" if (run / "status.json").exists() else "in-process",
           "configuration": "?", "data": "?", "state": "?", "epochs": "-", "accuracy": "-", "dcor": "-"}
    try:
        config = _json(run / "config.json")
        split, data = config.get("split"), config.get("data")
        if isinstance(split, dict) and isinstance(split.get("configuration"), str):
            row["configuration"] = split["configuration"]
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            row["data"] = data["name"]
        if not (run / "metrics.json").exists():
            row["state"] = "started"
            return row
        metrics = _json(run / "metrics.json")
        epochs = metrics.get("epochs") if isinstance(metrics.get("epochs"), list) else []
        epochs = [e for e in epochs if isinstance(e, dict)]
        row["state"] = "finished" if metrics.get("finished") is True else "unfinished"
        if row["kind"] == "served" and row["state"] != "finished":
            status = _json(run / "status.json")
            if isinstance(status.get("state"), str):
                row["state"] = status["state"]
        row["epochs"] = str(len(epochs))
        if epochs:
            acc, dcor = _number(epochs[-1].get("test_accuracy")), _number(epochs[-1].get("dcor"))
            row["accuracy"] = "-" if acc is None else f"{acc:.3f}"
            row["dcor"] = "-" if dcor is None else f"{dcor:.3f}"
    except ValueError as exc:
        row["state"] = f"unreadable ({exc})"
    return row


def run(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    runs = sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file())
    console = Console()
    if not runs:
        console.print(f"no run folders in {escape(str(root))} (a run folder holds config.json)")
        return 0
    table = Table(title=f"Runs in {escape(str(root))}")
    columns = ("run", "kind", "configuration", "data", "state", "epochs", "accuracy", "dcor")
    for col in columns:
        table.add_column("DCOR(X, Z)" if col == "dcor" else col, justify="right" if col in ("epochs", "accuracy", "dcor") else "left")
    for r in runs:
        row = summarise(r)
        table.add_row(*(escape(row[c]) for c in columns))
    console.print(table)
    return 0
