"""``splitlearn train``: train a split network in-process and write a run folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from splitlearn import runner
from splitlearn.cli._format import codec_label, human_bytes
from splitlearn.config import COMPRESSION_CODECS, CONFIGURATION_KINDS, load_config

# flag -> dotted config key
FLAGS = {
    "dataset": "data.name", "data_root": "data.root", "partition": "data.partition", "alpha": "data.alpha",
    "label_column": "data.label_column", "id_column": "data.id_column", "categorical": "data.categorical",
    "impute": "data.impute", "image_size": "data.image_size", "image_mode": "data.image_mode",
    "model": "model.name", "cut": "model.cut", "model_kwargs": "model.kwargs",
    "configuration": "split.configuration", "clients": "split.clients", "relay": "split.relay", "merge": "split.merge",
    "epochs": "train.epochs", "batch_size": "train.batch_size", "optimizer": "train.optimizer", "lr": "train.lr",
    "momentum": "train.momentum", "seed": "train.seed", "device": "train.device", "out": "out",
    "nopeek_a1": "privacy.nopeek_a1", "nopeek_a2": "privacy.nopeek_a2", "nopeek_ramp": "privacy.nopeek_ramp_epochs",
    "dp_noise": "privacy.dp_noise_multiplier", "dp_clip": "privacy.dp_clip", "hijack_check": "privacy.hijack_check",
    "compression": "compression.codec", "topk_ratio": "compression.topk_ratio",
}


def _cut(text: str) -> list[int | str]:
    return [int(c) if c.lstrip("-").isdigit() else c for c in text.split(",") if c]


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at column {exc.colno}): {text}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object such as {{\"in_channels\": 1}}, got {text}")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a split network (default: digits, small CNN, vanilla, 4 clients)")
    p.add_argument("--config", help="JSON or TOML file with data/model/split/train sections")
    p.add_argument("--configuration", choices=CONFIGURATION_KINDS, help="vanilla, ushaped, vertical, multihop or multitask")
    p.add_argument("--dataset", help="digits, breast_cancer, fashion_mnist, cifar10, cifar100, histology, csv, imagefolder")
    p.add_argument("--data-root", action="append", help="folder with the data set's files (non-embedded data sets; csv: the "
                                                        "CSV file; vertical csv: once per client, each client's own CSV)")
    p.add_argument("--label-column", help="--dataset csv: the column holding each row's class")
    p.add_argument("--id-column", help="--dataset csv: a column of unique sample ids (not a feature)")
    p.add_argument("--categorical", choices=["refuse", "onehot"], help="--dataset csv: non-numeric feature columns (default: refuse)")
    p.add_argument("--impute", choices=["none", "mean"], help="--dataset csv: missing values (default: none, refuse them)")
    p.add_argument("--image-size", type=int, metavar="N", help="resize images to N x N (image folders as they are read; "
                                                                "other image sets after loading, e.g. for DenseNet121 on 28x28)")
    p.add_argument("--image-mode", choices=["rgb", "grayscale"], help="--dataset imagefolder: 3 channels (default) or 1")
    p.add_argument("--partition", choices=["iid", "dirichlet"])
    p.add_argument("--alpha", type=float, help="Dirichlet alpha for --partition dirichlet")
    p.add_argument("--model", help="mlp, small_cnn, vgg11, vgg16, resnet18, resnet50, alexnet, or a factory "
                                   "package.module:name such as monai.networks.nets:DenseNet121")
    p.add_argument("--model-kwargs", type=_json_object, metavar="JSON",
                   help='keyword arguments of the model, as a JSON object, e.g. \'{"spatial_dims": 2, "in_channels": 1}\'')
    p.add_argument("--cut", type=_cut, help="comma-separated module names to cut after (e.g. features.denseblock2, or "
                                            "layer2,layer4); indices such as 3,7 for nn.Sequential models")
    p.add_argument("--clients", type=int, help="round-robin clients (vertical: feature-holding clients)")
    p.add_argument("--relay", choices=["peer", "server"], help="how client weights reach the next client")
    p.add_argument("--merge", choices=["auto", "concat", "sum", "mean"], help="vertical merge at the server")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--out", help="parent folder for run folders (default: runs)")
    p.add_argument("--nopeek-a1", type=float, help="NoPeek: weight of DCOR(X, Z) in the client loss (default 0: off)")
    p.add_argument("--nopeek-a2", type=float, help="NoPeek: weight of the task loss (default 1)")
    p.add_argument("--nopeek-ramp", type=int, help="NoPeek: ramp a1 up linearly over this many epochs")
    p.add_argument("--dp-noise", type=float, metavar="SIGMA", help="DP: clip each sample's smashed data and add Gaussian noise "
                                                                  "of std SIGMA x clip; each epoch prints ε (opacus's accountant)")
    p.add_argument("--dp-clip", type=float, metavar="C", help="DP: the L2 norm each sample's smashed data is clipped to (default 1)")
    p.add_argument("--hijack-check", type=float, metavar="RATE",
                   help="each client sends batches with random labels at this rate (e.g. 0.1) and stops if the server's "
                        "gradients do not depend on them, a sign of feature-space hijacking (vanilla splits)")
    p.add_argument("--compression", choices=COMPRESSION_CODECS,
                   help="how smashed data and cut gradients travel: none (default), fp16, int8 or topk")
    p.add_argument("--topk-ratio", type=float, help="--compression topk: the share of each sample's values sent (default 0.1)")
    p.add_argument("--resume", metavar="RUN", help="go on with an interrupted run folder (Ctrl-C) from its last checkpoint, "
                                                   "with its own config.json; to the weights an uninterrupted run reaches")


def _cost_table(acc: dict) -> Table:
    """Per role: parties, FLOPs and bytes per party (mean over a role's parties), peak memory."""
    table = Table(title="Cost per party (mean over the parties playing a role)")
    for col in ("role", "parties", "train GFLOPs", "sent", "received", "peak memory"):
        table.add_column(col, justify="left" if col == "role" else "right")
    flops, wire, memory = acc["flops"]["mean_per_party"], acc["bytes"]["mean_per_party"], acc["memory"]
    for role, names in acc["parties"].items():
        f = flops.get(role, {})
        table.add_row(
            role, str(len(names)), f"{(f.get('forward', 0) + f.get('backward', 0)) / 1e9:.3f}",
            human_bytes(wire.get(role, {}).get("sent", 0)), human_bytes(wire.get(role, {}).get("received", 0)),
            human_bytes(memory[role]["total"]) if role in memory else "-",
        )
    return table


def run(args: argparse.Namespace) -> int:
    overrides = {key: getattr(args, flag) for flag, key in FLAGS.items() if getattr(args, flag, None) is not None}
    roots = overrides.get("data.root")
    if roots is not None and len(roots) > 1 and args.clients is None:
        overrides["split.clients"] = len(roots)  # vertical tables: a client per CSV
    if args.resume is not None:
        given = ["--config"] * (args.config is not None) + [f"--{flag.replace('_', '-')}" for flag in FLAGS if getattr(args, flag) is not None]
        if given:
            raise ValueError(f"--resume goes on with the run's own config.json; drop {', '.join(given)}")
        if not (Path(args.resume) / "config.json").is_file():
            raise FileNotFoundError(f"{args.resume} is not a run folder: it has no config.json")
    config = load_config(Path(args.resume) / "config.json" if args.resume else args.config, overrides)
    console = Console()
    c = config
    console.print(
        f"[bold]splitlearn train[/]: {c.split.configuration} split of {c.model.name} on {c.data.name}, "
        f"{c.split.clients} client(s), {c.train.epochs} epochs, device {c.train.device}"
        + ("" if c.compression.codec == "none" else f", {codec_label(c.compression.codec, c.compression.topk_ratio)} at the cut")
    )
    if args.resume:
        console.print(f"resuming {args.resume} from its last checkpoint", soft_wrap=True, highlight=False)
    columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("epoch 1", total=None)

        def on_step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def on_epoch(record: dict) -> None:
            progress.update(task, description=f"epoch {record['epoch'] + 1}" if record["epoch"] < c.train.epochs else "done")
            console.log(runner.epoch_summary(record), markup=False, highlight=False)

        try:
            run_dir, metrics, _ = runner.train(config, on_step=on_step, on_epoch=on_epoch, resume=args.resume)
        except runner.Interrupted as stop:
            progress.stop()
            console.print(f"Interrupted. {stop.run_dir} holds every party's checkpoint of step {stop.step}; "
                          f"`splitlearn train --resume {stop.run_dir}` goes on from there", soft_wrap=True, highlight=False)
            return 130
    table = Table(title="Accuracy per epoch")
    table.add_column("epoch", justify="right")
    table.add_column("train loss", justify="right")
    acc_keys = [k for k in metrics["epochs"][0] if k.startswith("test_accuracy")]
    for k in acc_keys:
        table.add_column(k.replace("test_", "test "), justify="right")
    leak = "dcor" in metrics["epochs"][0]
    if leak:
        table.add_column("DCOR(X, Z)", justify="right")
    table.add_column("seconds", justify="right")
    for r in metrics["epochs"]:
        cells = [f"{r[k]:.4f}" for k in acc_keys] + ([f"{r['dcor']:.3f}" + (" collapsed" if r["collapsed"] else "")] if leak else [])
        table.add_row(str(r["epoch"]), f"{r['train_loss']:.4f}", *cells, f"{r['seconds']:.1f}")
    console.print(table)
    bytes_table = Table(title="Bytes on the wire per party")
    for col in ("party", "sent", "received"):
        bytes_table.add_column(col, justify="right" if col != "party" else "left")
    for party in sorted(set(metrics["bytes_sent"]) | set(metrics["bytes_received"])):
        bytes_table.add_row(party, human_bytes(metrics["bytes_sent"].get(party, 0)), human_bytes(metrics["bytes_received"].get(party, 0)))
    console.print(bytes_table)
    console.print(_cost_table(metrics["accounting"]))
    if "alignment" in metrics:
        console.print(metrics["alignment"]["summary"] + " (ids compared in the clear, not by private set intersection)",
                      soft_wrap=True, highlight=False, markup=False)
    console.print(f"Results (config.json, metrics.json, weights/) are in {run_dir}", soft_wrap=True, highlight=False)
    return 0
