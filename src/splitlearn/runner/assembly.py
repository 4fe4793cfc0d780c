"""From a :class:`~splitlearn.config.RunConfig` to data and a :class:`~splitlearn.split.configs.Split`:
the data loaded (or, with ``data.sites = "own"``, each site's own), the model built and cut,
and the options every process uses to deal the same parties."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from splitlearn.config import RunConfig
from splitlearn.data.dataset import ArrayDataset, as_array_dataset
from splitlearn.data.partition import vertical_split
from splitlearn.data.registry import EMBEDDED, load_dataset
from splitlearn.data.table import load_site_csv, load_vertical_csv
from splitlearn.models import build_model, flatten_layers
from splitlearn.privacy.dp import GaussianRelease
from splitlearn.split import configs
from splitlearn.split.cast import role_labels
from splitlearn.split.compression import Compressor
from splitlearn.split.configs import MultiHead, Split, Vertical
from splitlearn.split.graph import CAPTURE_LOCK
from splitlearn.split.hooks import Chain
from splitlearn.split.messages import Message
from splitlearn.split.party import Shard
from splitlearn.split.segments import CutError, check_segments, is_plain_sequential, split_model
from splitlearn.split.simulation import Simulation
from splitlearn.split.state import OptimizerSpec

__all__ = ["Built", "build", "own_shards", "party_options", "simulation"]


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



def party_options(built: Built, *, hooks: Mapping[str, Callable[[Message], Message]] | None = None) -> dict[str, Any]:
    """Keyword arguments of :func:`~splitlearn.split.cast.build_parties` for this config, so that
    every process of a deployment deals the same data and segments (and compresses alike).
    ``hooks`` (by role, e.g. a defence) run on what the parties send, before the configured codec."""
    c = built.config
    momentum = c.train.momentum if c.train.optimizer == "sgd" else 0.0
    codec = c.compression.codec
    outbox = dict(hooks or {})
    if codec != "none":
        compress = Compressor(codec, c.compression.topk_ratio)
        outbox = {role: Chain(outbox[role], compress) if role in outbox else compress for role in built.split.plan.roles}
    p = c.privacy
    inbox = None
    if p.hijack_check:
        guard = _hijack_guard(built)
        inbox = {h.label_role: guard.inbox for h in built.split.plan.root.heads}
        for role in inbox:  # the labels are faked before any codec
            outbox[role] = Chain(guard.outbox, outbox[role]) if role in outbox else guard.outbox
    outbox = outbox or None
    releases = None if not p.dp_noise_multiplier else {  # drawn from this process's own secret randomness
        n.name: GaussianRelease(p.dp_noise_multiplier, p.dp_clip) for n in built.split.plan.nodes if not n.inputs}
    return dict(
        train=built.train, test=built.test, clients=c.split.clients, partition=c.data.partition, alpha=c.data.alpha,
        optimizer=OptimizerSpec(c.train.optimizer, lr=c.train.lr, momentum=momentum, weight_decay=c.train.weight_decay),
        seed=c.train.seed, device=_resolve_device(c.train.device), targets=built.targets, outbox=outbox, inbox=inbox,
        releases=releases,
    )


def _hijack_guard(built: Built):
    """The clients' fake-batch check (``privacy.hijack_check``), for vanilla splits."""
    from splitlearn.privacy.attacks.hijacking import FakeBatchGuard

    classes = max(built.train.num_classes, built.test.num_classes)  # as many as the model's head has (see _built)
    return FakeBatchGuard(num_classes=classes, probability=built.config.privacy.hijack_check)


def simulation(built: Built, *, hooks: Mapping[str, Callable[[Message], Message]] | None = None, **kw) -> Simulation:
    """The configured split with all parties in this process (``hooks``: see :func:`party_options`;
    ``kw`` overrides options)."""
    c = built.config
    if c.data.sites == "own":
        raise ValueError("data.sites = 'own': each client brings its own data to splitlearn join --data-root; "
                         "to train in one process, use data.sites = 'dealt'")
    options = party_options(built, hooks=hooks) | dict(relay=c.split.relay, batch_size=c.train.batch_size) | kw
    return Simulation(built.split, **options)


