"""From a :class:`~splitlearn.config.RunConfig` to a trained split and a run folder.

``build`` turns a config into data and a :class:`~splitlearn.split.configs.Split`; ``train``
runs it in-process and writes the run folder (resolved config, metrics JSON, one safetensors file
per party); ``predict`` reloads a run folder and predicts through the protocol.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from splitlearn import __version__
from splitlearn.accounting import FlopMeter, account
from splitlearn.checkpoint import write_json_atomic
from splitlearn.config import RunConfig, load_config
from splitlearn.data.dataset import ArrayDataset, as_array_dataset
from splitlearn.data.partition import vertical_split
from splitlearn.data.registry import DATASETS, EMBEDDED, load_dataset
from splitlearn.data.table import load_site_csv, load_vertical_csv
from splitlearn.models import build_model, flatten_layers
from splitlearn.privacy import NoPeek, detect_collapse, leakage
from splitlearn.runfiles import METRICS, POSITION_IN_PROCESS, VERSIONED, check, read_checked
from splitlearn.simulation import Simulation, role_labels
from splitlearn.split import configs
from splitlearn.split.compression import Compressor
from splitlearn.split.configs import MultiHead, Split, Vertical
from splitlearn.split.graph import CAPTURE_LOCK
from splitlearn.split.messages import Message
from splitlearn.split.party import Party, Shard
from splitlearn.split.segments import CutError, check_segments, is_plain_sequential, split_model
from splitlearn.split.state import OptimizerSpec

__all__ = ["Built", "Interrupted", "TrainedRun", "build", "client_leakage", "epoch_summary", "fingerprint", "load_run", "new_run_dir", "party_leakage",
           "party_options", "predict", "simulation", "train", "write_predictions"]


@dataclass
class Built:
    config: RunConfig
    split: Split
    train: Any
    test: Any
    targets: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None
    alignment: dict[str, Any] | None = None  # vertical tables: samples aligned by id, rows each site dropped


class _Columns(NamedTuple):
    """Vertical tables: each client's number of feature columns, and the client holding the labels."""

    widths: tuple[int, ...]
    label_site: int


def _default_cut(kind: str, layers: list[tuple[str, nn.Module]]) -> list[int]:
    """After the first pooling layer in the model's first half (else a third of the way in);
    U-shaped adds a cut before the last layer, multi-hop one halfway between."""
    n = len(layers)
    pools = [i + 1 for i, (_, m) in enumerate(layers[: n // 2 + 1]) if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    if pools:
        first = pools[0]
    else:  # after the first layer with weights and the norms/activations that follow it
        first = next((i + 1 for i, (_, m) in enumerate(layers) if any(True for _ in m.parameters())), 1)
        while first < n - 1 and isinstance(layers[first][1], (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.Tanh, nn.GELU)):
            first += 1
    if kind == "ushaped":
        return [first, n - 1]
    if kind == "multihop":
        return [first, (first + n) // 2]
    return [first]


def _resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but CUDA is not available on this machine")
    return device


def build(config: RunConfig, *, data: tuple[Any, Any] | None = None) -> Built:
    """Load the data set and build the configured split, seeded by ``config.train.seed``. With
    ``data.sites = "own"`` nothing is loaded: the clients bring their own data
    (:func:`own_shards`), and ``train`` and ``test`` are empty data sets of the declared shape.
    ``data`` = (train, test) gives the data instead of loading ``config.data``: ArrayDatasets or
    any map-style Datasets of (x, y) pairs. Vertical tables (``data.name = "csv"``, one CSV per
    client) are aligned by id; each client's bottom takes its own file's columns."""
    vertical_tables = config.split.configuration == "vertical" and config.data.name == "csv"
    if data is not None:
        if config.data.sites == "own":
            raise ValueError("data= gives every party's data in this process; it does not go with data.sites = 'own'")
        train_ds, test_ds = (as_array_dataset(d, name=n) for d, n in zip(data, ("train", "test"), strict=True))
        if train_ds.sample_shape != test_ds.sample_shape:
            raise ValueError(f"train samples have shape {list(train_ds.sample_shape)}, test samples {list(test_ds.sample_shape)}")
        return _built(config, train_ds, test_ds)
    if config.data.sites == "own":
        d = config.data
        if config.split.configuration == "vertical" and not vertical_tables:
            raise ValueError(f"data.sites = 'own' with a vertical split takes tables (data.name = 'csv', a CSV per client "
                             f"aligned by id), not {d.name!r}")
        if d.name in EMBEDDED:
            raise ValueError(f"data.sites = 'own' needs a data set read from files, not {d.name!r}, which comes with "
                             "scikit-learn: every site would train on the same copy")
        columns = _declared_columns(config) if vertical_tables else None
        empty = ArrayDataset(torch.empty(0, *d.own_shape), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long),
                             classes=tuple(str(c) for c in range(d.num_classes)), name=d.name)
        with CAPTURE_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.train.seed)
            split, targets = _build_split(config, d.own_shape, d.num_classes, columns)
        return Built(config, split, empty, None, targets)
    if vertical_tables:
        return _vertical_tables(config)
    if isinstance(config.data.root, tuple):
        raise ValueError(f"data.root names {len(config.data.root)} files, but only a vertical split takes one CSV per client "
                         f"(--data-root once per client); this split is {config.split.configuration}")
    return _built(config, *_load(config, config.data.root))


def _declared_columns(config: RunConfig) -> _Columns:
    """The declared widths and label site of vertical tables that the clients bring (sites = "own")."""
    d, k = config.data, config.split.clients
    if len(d.widths) != k:
        raise ValueError(f"data.sites = 'own' with vertical tables needs data.widths, each client's number of feature "
                         f"columns ({k} clients), got {list(d.widths)}")
    if not 0 <= d.label_site < k:
        raise ValueError(f"data.label_site must name the client whose CSV holds the label column {d.label_column!r}: "
                         f"0 to {k - 1}, got {d.label_site}")
    return _Columns(tuple(d.widths), d.label_site)


def _vertical_tables(config: RunConfig) -> Built:
    """Vertical tables read in one process: every client's CSV (``data.root``, in client order),
    each read as its site would read it alone, aligned by id."""
    d, k = config.data, config.split.clients
    roots = (d.root,) if isinstance(d.root, str) else tuple(d.root or ())
    if len(roots) != k:
        raise ValueError(f"vertical tables need one CSV per client: data.root names {len(roots)} file(s) for "
                         f"split.clients = {k} (--data-root once per client)")
    if d.limit_train or d.limit_test:
        raise ValueError("data.limit_train and data.limit_test do not apply to vertical tables: the sites choose their rows")
    if not d.id_column:
        raise ValueError("vertical tables are aligned by id: name the id column (--id-column, data.id_column)")
    tables = load_vertical_csv(roots, id_column=d.id_column, label_column=d.label_column, categorical=d.categorical,
                               impute=d.impute, seed=config.train.seed)
    columns = _Columns(tuple(tables.widths), tables.label_index)
    for key, declared, found in (("widths", tuple(d.widths), columns.widths), ("label_site", d.label_site, columns.label_site)):
        if declared not in ((), -1) and declared != found:
            raise ValueError(f"data.{key} is {declared!r}, but the CSV files give {found!r}")
    alignment = {"id_column": d.id_column, "samples": len(tables.ids), "rows": {s.name: s.rows for s in tables.sites},
                 "dropped": tables.dropped, "summary": tables.summary()}
    return dataclasses.replace(_built(config, *tables.merged(), columns), alignment=alignment)


def _built(config: RunConfig, train_ds: ArrayDataset, test_ds: ArrayDataset, columns: _Columns | None = None) -> Built:
    in_shape, num_classes = tuple(train_ds.sample_shape), max(train_ds.num_classes, test_ds.num_classes)
    # Initial weights come from the global RNG: seed it in private (the caller's RNG state is
    # kept), and one build at a time, so that builds on several threads stay deterministic.
    with CAPTURE_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        split, targets = _build_split(config, in_shape, num_classes, columns)
    return Built(config, split, train_ds, test_ds, targets)


def _load(config: RunConfig, root) -> tuple[ArrayDataset, ArrayDataset]:
    """The configured data set from ``root``, cut to the configured seeded subsets."""
    train_ds, test_ds = load_dataset(config.data.name, root=root, seed=config.train.seed, **config.data.loader_options())
    g = torch.Generator().manual_seed(config.train.seed)
    if 0 < config.data.limit_train < len(train_ds):
        train_ds = train_ds.subset(torch.randperm(len(train_ds), generator=g)[: config.data.limit_train])
    if 0 < config.data.limit_test < len(test_ds):
        test_ds = test_ds.subset(torch.randperm(len(test_ds), generator=g)[: config.data.limit_test])
    if config.data.image_size:
        train_ds, test_ds = (_resized(ds, config.data.image_size, config.data.name) for ds in (train_ds, test_ds))
    return train_ds, test_ds


def _resized(ds: ArrayDataset, size: int, name: str) -> ArrayDataset:
    """``ds`` with its images resized to ``size`` x ``size`` (bilinear; antialiased when shrinking)."""
    if len(ds.sample_shape) != 3:
        raise ValueError(f"data.image_size applies to images (C, H, W); {name} samples have shape {list(ds.sample_shape)}")
    if not len(ds) or tuple(ds.sample_shape[1:]) == (size, size):
        return ds
    shrink = size < min(ds.sample_shape[1:])
    chunks = [F.interpolate(c, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
              for c in ds.features.split(4096)]
    return dataclasses.replace(ds, features=torch.cat(chunks).contiguous())


def own_shards(built: Built, role: str, root) -> dict[str, Shard]:
    """With ``data.sites = "own"``: the shards of a party of data role ``role`` from its own files
    at ``root`` (the configured data set's format, the configured subsets), with the labels of
    the tasks whose labels this role holds. ``ValueError`` if they do not fit the declared
    ``data.sample_shape`` and ``data.num_classes`` (vertical tables: ``data.widths``)."""
    d = built.config.data
    if built.split.feature_sizes is not None:
        return _own_columns(built, role, root)
    train_ds, test_ds = _load(built.config, root)
    if d.classes:
        train_ds, test_ds = (dataclasses.replace(ds, labels=_numbered(ds.labels, ds.classes, d.classes, root), classes=d.classes)
                             for ds in (train_ds, test_ds))
    for name, ds in (("train", train_ds), ("test", test_ds)):
        if len(ds) and tuple(ds.sample_shape) != tuple(d.sample_shape):
            raise ValueError(f"{root}: {name} samples have shape {list(ds.sample_shape)}, but data.sample_shape is {list(d.sample_shape)}")
        _check_classes(ds.labels, root, name, d.num_classes)
    if not len(train_ds):
        raise ValueError(f"{root}: no training samples")
    def shard(ds: ArrayDataset) -> Shard:
        return Shard(ds.sample_ids, ds.features, role_labels(built.split.plan, role, ds.labels, built.targets))

    return {"train": shard(train_ds)} | ({"test": shard(test_ds)} if len(test_ds) else {})


def _numbered(labels: torch.Tensor, found: Sequence[str], declared: Sequence[str], root) -> torch.Tensor:
    """Class indices of ``labels`` (indices into this site's ``found`` names) in the ``declared`` order."""
    unknown = sorted(set(found) - set(declared))
    if unknown:
        raise ValueError(f"{root}: class {unknown[0]!r} is not one of data.classes {list(declared)}")
    return torch.tensor([list(declared).index(c) for c in found], dtype=torch.long)[labels] if len(labels) else labels


def _check_classes(labels: torch.Tensor, root, name: str, num_classes: int) -> None:
    if len(labels) and int(labels.max()) >= num_classes:
        raise ValueError(f"{root}: {name} labels go up to {int(labels.max())}, but data.num_classes is {num_classes}")


def _own_columns(built: Built, role: str, root) -> dict[str, Shard]:
    """A vertical client's shards from its own CSV: its rows (split by id, as every site splits
    them), its columns, and the labels if ``data.label_site`` is this client."""
    d, plan = built.config.data, built.split.plan
    i = plan.data_roles.index(role)
    holds_labels = any(h.label_role == role for h in plan.root.heads)
    site = load_site_csv(root, id_column=d.id_column, label_column=d.label_column, holds_labels=holds_labels,
                         categorical=d.categorical, impute=d.impute, seed=built.config.train.seed)
    width = built.split.feature_sizes[i]
    if len(site.columns) != width:
        shown = ", ".join(site.columns[:8]) + (", ..." if len(site.columns) > 8 else "")
        raise ValueError(f"{root}: {len(site.columns)} feature columns ({shown}), but data.widths[{i}] is {width}")
    shards = {}
    for part in ("train", "test"):
        ids, x = getattr(site, f"{part}_ids"), getattr(site, part)
        labels = {}
        if holds_labels:
            y = getattr(site, f"{part}_labels")
            if d.classes:
                y = _numbered(y, site.classes, d.classes, root)
            _check_classes(y, root, part, d.num_classes)
            labels = role_labels(plan, role, y, built.targets)
        if len(ids):
            shards[part] = Shard(ids, x, labels)
    return shards


def _graph_cut_needed(kind: str, model: nn.Module, name: str) -> CutError:
    tops = ", ".join(n for n, _ in model.named_children())
    how = {"ushaped": "two module names", "multihop": "two or more module names"}.get(kind, "a module name")
    return CutError(f"{name} is not an nn.Sequential, so it has no default cut: give --cut ({how} of "
                    f"{type(model).__name__}, as in model.named_modules()); its top-level modules are {tops}")


def _build_split(config: RunConfig, in_shape: tuple[int, ...], num_classes: int, columns: _Columns | None = None):
    kind, cut = config.split.configuration, list(config.model.cut)
    name, kwargs = config.model.name, config.model.kwargs
    model = build_model(name, in_shape=in_shape, num_classes=num_classes, **kwargs)
    sequential = is_plain_sequential(model)
    targets = None
    if kind in ("vanilla", "ushaped", "multihop"):
        if not cut and not sequential:
            raise _graph_cut_needed(kind, model, name)
        cut = cut or _default_cut(kind, flatten_layers(model))
        try:
            split = configs.CONFIGURATIONS[kind](model, cut, in_shape=in_shape)
        except CutError as exc:
            if "cannot take inputs" in str(exc) and len(in_shape) == 3 and not config.data.image_size:
                raise CutError(f"{exc}; if the images are too small for this model, resize them "
                               "(--image-size N, data.image_size)") from None
            raise
    elif kind == "multitask":
        if not sequential:
            raise ValueError(f"multitask from a config builds its heads from an nn.Sequential's last Linear; {name} is "
                             "not one: build sl.MultiHead(trunk, heads) in Python and pass it to sl.multitask")
        layers = flatten_layers(model)
        last = layers[-1][1]
        if not isinstance(last, nn.Linear):
            raise ValueError(f"multitask needs a model ending in nn.Linear, {name} ends in {last}")
        trunk = nn.Sequential(*(m for _, m in layers[:-1]))
        heads = {"label": last, "upper": nn.Linear(last.in_features, 2)}
        cut = cut or _default_cut(kind, layers[:-1])
        w = config.split.task_weights
        if len(w) != 2:
            raise ValueError(f"split.task_weights needs 2 weights (label, upper), got {w}")
        split = configs.multitask(MultiHead(trunk, heads), cut, in_shape=in_shape, weights=dict(zip(heads, w)))
        targets = {"label": lambda y: y, "upper": lambda y: (y >= math.ceil(num_classes / 2)).long()}
    else:
        split = _vertical(config, model, in_shape, num_classes, cut, columns)
    return split, targets


def _vertical(config: RunConfig, model: nn.Module, in_shape, num_classes, cut, columns: _Columns | None) -> Split:
    """Each client gets its own copy of the layers before the cut, on its chunk of the features
    (image width, or table columns: with ``columns``, each site's own); the server runs the rest
    of the model on the merged output. Labels are at the server, or at the label site's client."""
    k = config.split.clients
    if columns is not None and len(columns.widths) != k:
        raise ValueError(f"{len(columns.widths)} sites' columns for split.clients = {k}")
    image = len(in_shape) == 3
    dim = -1 if image else 1
    if not cut and not is_plain_sequential(model):
        raise _graph_cut_needed("vertical", model, config.model.name)
    cut = cut or _default_cut("vertical", flatten_layers(model))
    if len(cut) != 1:
        raise CutError(f"vertical split takes exactly one cut, got {cut}")
    sizes = None if columns is None else columns.widths
    chunk_shapes = [p.shape[1:] for p in vertical_split(torch.zeros(1, *in_shape), sizes or k, dim=dim)]
    bottoms = []
    for shape in chunk_shapes:
        part = build_model(config.model.name, in_shape=tuple(shape), num_classes=num_classes, **config.model.kwargs)
        bottoms.append(split_model(part, cut, in_shape=tuple(shape))[0])
    out = check_segments([bottoms[0]], chunk_shapes[0])[0]
    merge = config.split.merge
    if merge == "auto":
        merge = "concat" if len(out) == 4 else "sum"  # feature maps side by side; vectors add up
    top = split_model(model, cut, in_shape=in_shape)[1]
    label_role = "server" if columns is None else f"client{columns.label_site}"
    return configs.vertical(Vertical(bottoms, top, dim=dim, merge=merge, merge_dim=-1, sizes=sizes), in_shape=in_shape,
                            label_role=label_role)


def new_run_dir(config: RunConfig) -> Path:
    """A fresh folder name under ``config.out``: time, configuration and data set."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(config.out) / f"{stamp}-{config.split.configuration}-{config.data.name}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def party_options(built: Built) -> dict[str, Any]:
    """Keyword arguments of :func:`~splitlearn.simulation.build_parties` for this config, so that
    every process of a deployment deals the same data and segments (and compresses alike)."""
    c = built.config
    momentum = c.train.momentum if c.train.optimizer == "sgd" else 0.0
    codec = c.compression.codec
    outbox = None if codec == "none" else dict.fromkeys(built.split.plan.roles, Compressor(codec, c.compression.topk_ratio))
    return dict(
        train=built.train, test=built.test, clients=c.split.clients, partition=c.data.partition, alpha=c.data.alpha,
        optimizer=OptimizerSpec(c.train.optimizer, lr=c.train.lr, momentum=momentum, weight_decay=c.train.weight_decay),
        seed=c.train.seed, device=_resolve_device(c.train.device), targets=built.targets, outbox=outbox,
    )


def simulation(built: Built, **kw) -> Simulation:
    """The configured split with all parties in this process (``kw`` overrides options)."""
    c = built.config
    if c.data.sites == "own":
        raise ValueError("data.sites = 'own': each client brings its own data to splitlearn join --data-root; "
                         "to train in one process, use data.sites = 'dealt'")
    options = party_options(built) | dict(relay=c.split.relay, batch_size=c.train.batch_size) | kw
    return Simulation(built.split, **options)


class TrainedRun(NamedTuple):
    run_dir: Path
    metrics: dict[str, Any]
    sim: Simulation  # the parties as trained, for attacks and analysis in the same process


class Interrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); ``run_dir`` holds every party's checkpoint of ``step``,
    from which ``train(config, resume=run_dir)`` (``splitlearn train --resume``) goes on."""

    def __init__(self, run_dir: Path, step: int) -> None:
        super().__init__(f"interrupted; {run_dir} holds every party's checkpoint of step {step}")
        self.run_dir, self.step = run_dir, step


def epoch_summary(record: dict[str, Any]) -> str:
    """One line of an epoch's record: train loss, test accuracy and leakage, where measured."""
    acc = record.get("test_accuracy", record.get("test_accuracy_label"))
    line = f"epoch {record['epoch']}"
    parts = ([f"train loss {record['train_loss']:.4f}"] if "train_loss" in record else []) + (
        [f"test accuracy {acc:.4f}"] if acc is not None else []) + (
        [f"leakage DCOR(X, Z) {record['dcor']:.3f}" + (" (smashed data collapsed to a constant)" if record.get("collapsed") else "")]
        if "dcor" in record else [])
    return line + (": " + ", ".join(parts) if parts else "")


def fingerprint(config: RunConfig) -> str:
    """A short hash of what decides the parties' segments and data: checkpoints carry it, so a
    process never resumes from another configuration's checkpoints."""
    d = config.to_dict()
    d.pop("out", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


CHECKPOINTS = "checkpoints"
"""The folder of a run folder holding each party's checkpoints and ``position.json`` while it trains."""


def _resumable(run_dir: Path, config: RunConfig) -> dict[str, Any] | None:
    """The position an interrupted run folder of ``config`` stands at (None: it was interrupted
    before its first checkpoint); ``ValueError`` unless it is such a folder."""
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no config.json")
    if load_config(run_dir / "config.json") != config:
        raise ValueError(f"{run_dir} is a run of another configuration: resume it with its own config.json")
    metrics = run_dir / "metrics.json"
    if metrics.is_file() and read_checked(metrics, METRICS)["finished"]:
        raise ValueError(f"{run_dir} has finished: there is nothing to resume")
    position = run_dir / CHECKPOINTS / "position.json"
    if not position.is_file():
        return None
    state = read_checked(position, POSITION_IN_PROCESS)
    if state["tag"] != fingerprint(config):
        raise ValueError(f"{position}: its checkpoints are of another configuration")
    return state


def train(
    config: RunConfig,
    *,
    on_step: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    observers: Sequence[Callable[[Message], None]] = (),
    data: tuple[Any, Any] | None = None,
    resume: str | Path | None = None,
    checkpoint_every: int = 20,
) -> TrainedRun:
    """Train as configured; write the run folder; return it with the metrics and the parties.

    ``observers`` see every message sent during training (e.g. an attacker's recorder).
    ``data`` = (train, test) trains on the caller's data (ArrayDatasets, TensorDatasets or any
    map-style Datasets of (x, y) pairs) instead of ``config.data``; the run folder, its metrics
    (DCOR per epoch) and ``splitlearn report`` work as for any run. ``splitlearn predict`` needs
    data it can load again, so it does not apply to such a run.

    While it trains, every party checkpoints in ``<run>/checkpoints`` every ``checkpoint_every``
    steps and at the end of each client's turn and epoch. Interrupted (Ctrl-C), it raises
    :class:`Interrupted`; ``resume=<run>`` with the same config (and data) goes on from the last
    checkpoint to the weights an uninterrupted run reaches, bit for bit on the same device. The
    checkpoints are removed once the run has finished. The accounting (FLOPs, memory, bytes) of a
    resumed run covers the steps run since it was resumed.
    """
    if data is not None and config.data.name in DATASETS:
        config = config.override({"data.name": "own-data"})  # the run folder must not claim a data set it did not use
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    state = None if resume is None else _resumable(Path(resume), config)
    built = build(config, data=data)
    meter = FlopMeter()
    privacy = config.privacy
    data_nodes = [n.name for n in built.split.plan.nodes if not n.inputs]
    nopeek = NoPeek(privacy.nopeek_a1, a2=privacy.nopeek_a2, ramp_epochs=privacy.nopeek_ramp_epochs) if privacy.nopeek_a1 else None
    sim = simulation(built, compute=meter, penalties=dict.fromkeys(data_nodes, nopeek) if nopeek else None)
    sim.transport.observers.extend(observers)
    if resume is None:
        run_dir = new_run_dir(config)
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    else:
        run_dir = Path(resume)
    folder, tag = run_dir / CHECKPOINTS, fingerprint(config)
    sim.checkpoint_to(folder, tag=tag, fresh=state is None)
    if state is not None:
        sim.go_on_from(state)
        sim.coordinator.restart()  # every party back to the last step all checkpointed
        if nopeek is not None:
            nopeek.set_epoch(len(sim.history) + 1)
    start = time.perf_counter() - (state or {}).get("seconds", 0.0)
    sim.coordinator.checkpoint_every = checkpoint_every
    sim.coordinator.on_commit = lambda: write_json_atomic(
        folder / "position.json", {"tag": tag, "seconds": time.perf_counter() - start} | sim.position())
    extra = ({} if state is None else {"resumed_at_step": state["coordinator"]["committed"]}) | (
        {"alignment": built.alignment} if built.alignment else {})

    def epoch_done(record: dict[str, Any]) -> None:
        record |= client_leakage(sim, batch_size=privacy.leakage_batch_size)
        if nopeek is not None:
            record["nopeek_weight"] = nopeek.weight
            nopeek.set_epoch(record["epoch"] + 1)
        sim.coordinator.on_commit()  # the epoch's record joins the position
        write_metrics(run_dir, sim, time.perf_counter() - start, finished=False, accounting=account(sim, meter), **extra)
        if on_epoch is not None:
            on_epoch(record)

    try:
        if (remaining := config.train.epochs - len(sim.history)) > 0:
            sim.fit(remaining, on_step=on_step, on_epoch=epoch_done)
    except KeyboardInterrupt:
        write_metrics(run_dir, sim, time.perf_counter() - start, finished=False, accounting=account(sim, meter), **extra)
        raise Interrupted(run_dir, sim.coordinator.committed) from None
    sim.save_weights(run_dir / "weights")
    metrics = write_metrics(run_dir, sim, time.perf_counter() - start, finished=True, accounting=account(sim, meter), **extra)
    shutil.rmtree(folder)
    return TrainedRun(run_dir, metrics, sim)


def party_leakage(party: Party, *, split: str = "test", batch_size: int = 64,
                  shuffled: bool = False) -> tuple[dict[str, float], bool]:
    """Held-out DCOR(X, Z) between ``party``'s raw features of ``split`` and the smashed data
    each of its data segments sends, computed on its own data (node -> DCOR; none where it holds
    no segments or fewer than ``batch_size`` samples); and whether any Z has collapsed."""
    shard = party.shards.get(split)
    by_node, collapsed = {}, False
    if not party.holds_weights or shard is None or shard.features is None or len(shard.features) < batch_size:
        return by_node, collapsed
    for node in (n for n in party.nodes.values() if not n.inputs):
        module = party.modules[node.name]
        was_training = module.training
        module.eval()
        encode = lambda x: module(x.to(party.device)).cpu()  # noqa: E731
        by_node[node.name] = leakage(encode, shard.features, batch_size=batch_size, shuffled=shuffled)
        with torch.no_grad():
            collapsed |= detect_collapse(encode(shard.features[: 4 * batch_size]))
        module.train(was_training)
    return by_node, collapsed


def client_leakage(sim: Simulation, *, split: str = "test", batch_size: int = 64, shuffled: bool = False) -> dict[str, Any]:
    """Held-out DCOR(X, Z) of every data party here (:func:`party_leakage`), and whether Z has collapsed.

    Returns ``dcor`` (the mean over data parties), ``dcor_by_party`` and ``collapsed``. With
    ``shuffled=True``, ``dcor`` is the statistic's floor at this batch size instead: X against
    its Z in shuffled order (see :func:`~splitlearn.privacy.leakage`).
    """
    by_party, collapsed = {}, False
    for name, party in sim.parties.items():
        by_node, hit = party_leakage(party, split=split, batch_size=batch_size, shuffled=shuffled)
        collapsed |= hit
        by_party |= {(f"{name}/{node}" if len(party.nodes) > 1 else name): d for node, d in by_node.items()}
    if not by_party:
        return {}
    return {"dcor": sum(by_party.values()) / len(by_party), "dcor_by_party": by_party, "collapsed": collapsed}


def write_metrics(run_dir: Path, sim: Simulation, seconds: float, *, finished: bool, **extra: Any) -> dict[str, Any]:
    """Write ``metrics.json`` of a run folder, in-process or served alike: the epochs so far (each
    with its leakage where measured), bytes on the wire, and ``extra`` (e.g. FLOP accounting, the
    parties that ran elsewhere); return what was written."""
    metrics = {
        "splitlearn_version": __version__,
        "finished": finished,
        "seconds": seconds,
        "epochs": sim.history,
        "parties": sorted(sim.parties),
        "bytes_sent": sim.log.bytes_by("sender"),
        "bytes_received": sim.log.bytes_by("receiver"),
        "bytes_by_kind": sim.log.bytes_by("kind"),
        "messages": sim.log.messages,
    } | extra
    write_json_atomic(run_dir / "metrics.json", metrics)
    return metrics


def load_run(run_dir: str | Path, *, device: str | None = None,
             weights: Sequence[str | Path] = ()) -> tuple[Built, Simulation, dict[str, Any]]:
    """Rebuild a finished run folder's parties with their trained weights (round-robin clients
    collapse to the one that holds the weights), from ``<run>/weights`` and the folders of
    ``weights`` (a deployment's clients keep theirs at their sites). Refuses folders of another
    splitlearn version."""
    run_dir = Path(run_dir)
    config_path, metrics_path = run_dir / "config.json", run_dir / "metrics.json"
    if not config_path.is_file() or not metrics_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it needs config.json and metrics.json")
    metrics = read_checked(metrics_path, VERSIONED)
    version = metrics["splitlearn_version"]
    if version != __version__:
        raise ValueError(f"{run_dir} was written by splitlearn {version}, this is {__version__}: retrain it")
    check(metrics, METRICS, metrics_path)
    if not metrics["finished"]:
        raise ValueError(f"{run_dir} holds an unfinished run (no final weights)")
    config = load_config(config_path, {"train.device": device} if device else None)
    if config.data.sites == "own":
        raise ValueError(f"{run_dir} was trained on the sites' own data (data.sites = 'own'), which stays at the sites, so it cannot "
                         "be loaded in one process: predict through the deployment (splitlearn predict RUN --listen, and "
                         "join --predict at each site); attack a rehearsal of it with data.sites = 'dealt'")
    built = build(config)
    sim = simulation(built, clients=1 if built.split.plan.data_roles == ("client",) else config.split.clients)
    sim.load_weights(run_dir / "weights", *weights)
    return built, sim, metrics


def predict(run_dir: str | Path, *, split: str = "test", device: str | None = None,
            weights: Sequence[str | Path] = ()) -> tuple[Path, dict[str, float]]:
    """Reload a run folder's weights (and those in the folders of ``weights``, see
    :func:`load_run`), predict ``split`` through the protocol, write a CSV."""
    run_dir = Path(run_dir)
    built, sim, _ = load_run(run_dir, device=device, weights=weights)
    outputs, scores = sim.predict(split)
    data = built.test if split == "test" else built.train
    targets = built.targets or {task: lambda y: y for task in outputs}
    labels = {task: dict(zip(data.sample_ids.tolist(), targets[task](data.labels).tolist())) for task in outputs}
    return write_predictions(run_dir / f"predictions-{split}.csv", outputs, labels), scores


def write_predictions(path: str | Path, outputs: dict[str, tuple[torch.Tensor, torch.Tensor]],
                      labels: dict[str, dict[int, int]]) -> Path:
    """A CSV of ``sample_id, task, prediction, label`` rows: the predicted class of each output
    (``outputs``: task -> (sample ids, outputs)) beside its label (``labels``: task -> id -> class)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample_id", "task", "prediction", "label"])
        for task, (ids, logits) in outputs.items():
            for i, p in zip(ids.tolist(), logits.argmax(-1).tolist()):
                w.writerow([i, task, p, labels[task][i]])
    tmp.replace(path)
    return path
