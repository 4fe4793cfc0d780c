"""``splitlearn experiment nopeek``: vanilla vs NoPeek SplitNN, attacked, with a leakage report; and
``splitlearn experiment privacy``: every registered defence against every attack."""

from __future__ import annotations

import argparse
import re
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

from splitlearn.runner.nopeek_study import run_nopeek_seeds, run_nopeek_study
from splitlearn.runner.privacy_matrix import run_privacy_matrix

README_START, README_END = "<!-- nopeek-results:start -->", "<!-- nopeek-results:end -->"


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def add_parser(sub) -> None:
    p = sub.add_parser("experiment", help="run a packaged experiment (nopeek: vanilla vs NoPeek, attacks, report; "
                                          "privacy: every defence against every attack)")
    p.add_argument("name", choices=["nopeek", "privacy"])
    p.add_argument("--dataset", help="default: fashion_mnist when its files are present, else digits")
    p.add_argument("--a1", type=float, help="NoPeek weight of DCOR(X, Z) (default per data set)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--sweep", type=_floats, default=[], help="also train these a1 values, e.g. 0,2,4,8,16, and plot the trade-off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=lambda t: [int(v) for v in t.split(",") if v],
                   help="nopeek: run the study once per seed, e.g. 0,1,2, and report the spread (each seed in out/seed-<k>; "
                        "replaces --seed)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="output folder (default: runs/nopeek-<time>)")
    p.add_argument("--update-readme", metavar="README", help="write the measured numbers into this README between its markers")


def _markdown(summary: dict, seconds: float, command: str = "splitlearn experiment nopeek") -> str:
    v, n = summary["vanilla"], summary["nopeek"]
    sizes = sorted(v["dcor_by_batch"], key=lambda k: -int(k))  # the reported batch size first
    dcor_rows = [
        row
        for k in sizes
        for row in (
            f"| held-out DCOR(X, Z), batches of {k} | {v['dcor_by_batch'][k]['dcor']:.3f} | {n['dcor_by_batch'][k]['dcor']:.3f} |",
            f"| floor at batches of {k} (Z shuffled) | {v['dcor_by_batch'][k]['floor']:.3f} | {n['dcor_by_batch'][k]['floor']:.3f} |",
        )
    ]
    others = "".join(
        f" ({v['dcor_by_batch'][k]['dcor'] / max(n['dcor_by_batch'][k]['dcor'], 1e-12):.2f}x at batches of {k})"
        for k in sizes if int(k) != v["dcor_batch"]
    )
    lines = [
        f"Measured by `{command}` on {summary['dataset']} in {seconds / 60:.1f} minutes:",
        "",
        "| | vanilla SplitNN | NoPeek SplitNN |",
        "|---|---|---|",
        f"| NoPeek a1 | 0 | {n['a1']:g} |",
        *dcor_rows,
        f"| test accuracy | {v['test_accuracy']:.4f} | {n['test_accuracy']:.4f} |",
        f"| reconstruction SSIM | {v['ssim']:.3f} | {n['ssim']:.3f} |",
        "",
        f"DCOR reduction {summary['dcor_reduction']:.2f}x at batches of {v['dcor_batch']}{others}; "
        f"accuracy change {-summary['accuracy_drop_points']:+.2f} points.",
        "Label leakage on breast cancer (U-shaped, server's view): "
        + "; ".join(f"{r['defence']}: direction AUC {r['direction AUC']:.3f}, norm AUC {r['norm AUC']:.3f}, "
                    f"accuracy {r['test accuracy']:.4f}" for r in summary["label_leakage"]) + ".",
    ]
    return "\n".join(lines)


def _seeds_markdown(summary: dict) -> list[str]:
    """The lines giving the headline figures over several seeds: each seed's, their mean and range."""
    r, d = summary["dcor_reduction"], summary["accuracy_drop_points"]
    per_seed = "; ".join(f"seed {k}: {run['vanilla']['dcor']:.3f} -> {run['nopeek']['dcor']:.3f} ({run['dcor_reduction']:.2f}x), "
                         f"accuracy {run['vanilla']['test_accuracy']:.4f} -> {run['nopeek']['test_accuracy']:.4f}"
                         for k, run in zip(summary["seeds"], summary["runs"], strict=True))
    return [
        "",
        f"Over seeds {', '.join(map(str, summary['seeds']))}: DCOR reduction {r['mean']:.2f}x on average "
        f"({r['min']:.2f}x to {r['max']:.2f}x); accuracy change {-d['mean']:+.2f} points on average "
        f"({-d['max']:+.2f} to {-d['min']:+.2f}). The table above is seed {summary['seeds'][0]}'s.",
        f"Per seed (held-out DCOR at batches of {summary['runs'][0]['vanilla']['dcor_batch']}, vanilla -> NoPeek): {per_seed}.",
    ]


def _update_readme(path: Path, block: str) -> None:
    text = path.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{path} has no {README_START} ... {README_END} markers to write between")
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    path.write_text(pattern.sub(lambda _: f"{README_START}\n{block}\n{README_END}", text))


def _privacy(args: argparse.Namespace, console: Console) -> int:
    if args.a1 is not None or args.sweep or args.update_readme or args.seeds:
        raise ValueError("--a1, --sweep, --seeds and --update-readme are for experiment nopeek; experiment privacy trains every "
                         "registered defence at its own strengths")
    out = Path(args.out or f"runs/privacy-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}")
    start = time.perf_counter()
    with console.status("starting") as status:
        matrix = run_privacy_matrix(
            out, dataset=args.dataset or "digits", epochs=args.epochs or 10, seed=args.seed, device=args.device,
            progress=lambda message: (status.update(message), console.log(message, markup=False, highlight=False)),
        )
    table = Table(title=f"Privacy matrix on {matrix['dataset']} (last rows: chance, and by class, what knowing only each sample's class scores)")
    keys = [a["score"] for a in matrix["attacks"].values()]
    for col in ("defence", "strength", "test accuracy", *keys):
        table.add_column(col, justify="left" if col == "defence" else "right")
    for r in matrix["rows"]:
        table.add_row(r["defence"], f"{r['strength']:g}", f"{r['test_accuracy']:.4f}", *(f"{r[k]:.3f}" for k in keys))
    table.add_row("chance", "", "", *(f"{matrix['chance'][k]:.3f}" for k in keys))
    floor = matrix.get("class_floor", {})
    if floor:
        table.add_row("by class", "", "", *(f"{floor[k]:.3f}" if k in floor else "" for k in keys))
    console.print(table)
    h = matrix["hijacking"]
    stop = h["checked"]["stopped_at"]
    console.print(f"Hijacking (a malicious server, FSHA): reconstruction SSIM {h['ssim']:.3f} after {h['steps']} steps of an unaware "
                  f"client; " + (f"the client's fake-batch check stopped it at step {stop} (SSIM {h['checked']['ssim']:.3f})"
                                 if stop is not None else "the client's fake-batch check did not stop it")
                  + ("; no false alarm against an honest server" if h["honest"]["stopped_at"] is None
                     else f"; false alarm against an honest server at step {h['honest']['stopped_at']}")
                  + f" (test accuracy {h['honest']['accuracy']:.4f} with the check, {h['honest']['accuracy_without_check']:.4f} without)",
                  soft_wrap=True, highlight=False)
    console.print(f"Report: {out / 'report.html'} (numbers in {out / 'matrix.json'}); took {time.perf_counter() - start:.0f} s",
                  soft_wrap=True, highlight=False)
    return 0


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.name == "privacy":
        return _privacy(args, console)
    out = Path(args.out or f"runs/nopeek-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}")
    start = time.perf_counter()
    seeds = None
    with console.status("starting") as status:
        study = dict(dataset=args.dataset, a1=args.a1, epochs=args.epochs, sweep=args.sweep, device=args.device,
                     progress=lambda message: (status.update(message), console.log(message, markup=False, highlight=False)))
        if args.seeds:
            seeds = run_nopeek_seeds(out, args.seeds, **study)
            summary = seeds["runs"][0]
        else:
            summary = run_nopeek_study(out, seed=args.seed, **study)
    seconds = time.perf_counter() - start
    table = Table(title=f"NoPeek study on {summary['dataset']}")
    for col in ("run", "a1", "DCOR(X, Z)", "test accuracy", "reconstruction SSIM"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for label, p in (("vanilla", summary["vanilla"]), ("NoPeek", summary["nopeek"]), *(("sweep", p) for p in summary["sweep"])):
        table.add_row(label, f"{p['a1']:g}", f"{p['dcor']:.3f}", f"{p['test_accuracy']:.4f}", f"{p['ssim']:.3f}")
    console.print(table)
    if seeds is None:
        block = _markdown(summary, seconds)
    else:
        command = f"splitlearn experiment nopeek --seeds {','.join(map(str, args.seeds))}"
        block = "\n".join([_markdown(summary, seconds, command), *_seeds_markdown(seeds)])
    console.print(block, soft_wrap=True, highlight=False, markup=False)
    if args.update_readme:
        _update_readme(Path(args.update_readme), block)
        console.print(f"Updated {args.update_readme}")
    report, numbers = (out / f"seed-{args.seeds[0]}", out / "seeds.json") if seeds is not None else (out, out / "summary.json")
    console.print(f"Report: {report / 'report.html'} (numbers in {numbers}); took {seconds:.0f} s", soft_wrap=True, highlight=False)
    return 0
