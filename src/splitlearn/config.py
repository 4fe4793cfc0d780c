"""Run configuration: one frozen dataclass per concern, composed into :class:`RunConfig`.

Loaded from JSON or TOML, overridden by command-line values, validated once, and saved next to
the results so every run can be repeated.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from splitlearn._text import capped

__all__ = [
    "CompressionConfig", "DataConfig", "ModelConfig", "PrivacyConfig", "RunConfig", "SplitConfig", "TrainConfig", "load_config",
]

CONFIGURATION_KINDS = ("vanilla", "ushaped", "vertical", "multihop", "multitask")
COMPRESSION_CODECS = ("none", "fp16", "int8", "topk")


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"  # digits, breast_cancer, fashion_mnist, cifar10, cifar100, histology, csv, imagefolder
    root: str | tuple[str, ...] | None = None  # folder of the data files, for data sets that are not embedded (csv: the CSV
    # file; csv with split.configuration = "vertical": one CSV per client, in client order)
    partition: str = "iid"  # how training samples are dealt to round-robin clients: iid or dirichlet
    alpha: float = 0.5  # Dirichlet concentration for partition = "dirichlet" (smaller: more skewed)
    limit_train: int = 0  # use a seeded random subset of this many training samples (0: all)
    limit_test: int = 0  # likewise for the test split
    # dealt: every process loads the data set and keeps the shard dealt to it (a simulation of sites);
    # own: each client of a deployment loads its own files (splitlearn join --data-root); no process
    # needs anyone else's, and the model is built from sample_shape and num_classes.
    sites: str = "dealt"
    sample_shape: tuple[int, ...] = ()  # sites = "own": the shape of one sample, e.g. [1, 28, 28]
    num_classes: int = 0  # sites = "own": the number of classes
    classes: tuple[str, ...] = ()  # sites = "own" with csv or imagefolder: the class names in order, the same at every site
    label_column: str = ""  # csv: the column holding each row's class (required)
    id_column: str = ""  # csv: a column of unique sample ids, not a feature (integer ids become the sample ids)
    categorical: str = "refuse"  # csv: non-numeric feature columns are refused by name, or "onehot" encoded
    impute: str = "none"  # csv: missing feature values are refused by row and column, or "mean" (training split's)
    image_size: int = 0  # resize images to image_size x image_size: image folders as they are read, other image sets after loading (0: keep; histology 64)
    image_mode: str = "rgb"  # imagefolder: rgb (3 channels) or grayscale (1)
    # Vertical tables with sites = "own": each client's number of feature columns once encoded, in
    # client order, and the client whose CSV holds the label column (read from the files otherwise).
    widths: tuple[int, ...] = ()
    label_site: int = -1  # -1: the server holds the labels (dealt image or embedded data)

    @property
    def own_shape(self) -> tuple[int, ...]:
        """sites = "own": one sample's declared shape (vertical tables: all the sites' columns)."""
        return tuple(self.sample_shape) or ((sum(self.widths),) if self.widths else ())

    def loader_options(self) -> dict[str, Any]:
        """Keyword arguments of this data set's loader (:func:`splitlearn.data.load_dataset`) from the keys above."""
        if self.name == "csv":
            return dict(label_column=self.label_column, id_column=self.id_column or None, categorical=self.categorical, impute=self.impute)
        if self.name == "imagefolder":
            return dict(image_size=self.image_size or None, mode=self.image_mode)
        if self.name == "histology" and self.image_size:
            return dict(image_size=self.image_size)
        return {}

    def __post_init__(self) -> None:
        if isinstance(self.root, list):
            object.__setattr__(self, "root", tuple(self.root))
        if isinstance(self.root, tuple):
            if len(self.root) == 1:
                object.__setattr__(self, "root", self.root[0])
            elif self.name != "csv" or not self.root or not all(isinstance(r, str) for r in self.root):
                raise ValueError(f"data.root takes several paths only for vertical tables (data.name = 'csv', one CSV per "
                                 f"client); got {list(self.root)} for data set {self.name!r}")
        if self.root is not None and not isinstance(self.root, (str, tuple)):
            raise ValueError(f"data.root must be a path (or, for vertical tables, a list of paths), got {self.root!r}")
        if not all(type(w) is int and w > 0 for w in self.widths):
            raise ValueError(f"data.widths must be positive ints, one per client, got {list(self.widths)}")
        if type(self.label_site) is not int or self.label_site < -1:
            raise ValueError(f"data.label_site must be a client index (0, 1, ...) or -1 (the server holds the labels), got {self.label_site!r}")
        if self.partition not in ("iid", "dirichlet"):
            raise ValueError(f"data.partition must be 'iid' or 'dirichlet', got {self.partition!r}")
        if not self.alpha > 0:
            raise ValueError(f"data.alpha must be > 0, got {self.alpha}")
        if self.categorical not in ("refuse", "onehot"):
            raise ValueError(f"data.categorical must be 'refuse' or 'onehot', got {self.categorical!r}")
        if self.impute not in ("none", "mean"):
            raise ValueError(f"data.impute must be 'none' or 'mean', got {self.impute!r}")
        if self.image_mode not in ("rgb", "grayscale"):
            raise ValueError(f"data.image_mode must be 'rgb' or 'grayscale', got {self.image_mode!r}")
        if type(self.image_size) is not int or self.image_size < 0:
            raise ValueError(f"data.image_size must be an int >= 0 (0: keep each image's size), got {self.image_size!r}")
        if self.sites not in ("dealt", "own"):
            raise ValueError(f"data.sites must be 'dealt' or 'own', got {self.sites!r}")
        if self.sites == "own" and self.widths:
            if self.sample_shape and tuple(self.sample_shape) != (sum(self.widths),):
                raise ValueError(f"data.sample_shape {list(self.sample_shape)} is not the sum of data.widths {list(self.widths)}; "
                                 "leave it out for vertical tables")
        if self.sites == "own":
            if not self.own_shape or not all(type(d) is int and d > 0 for d in self.sample_shape):
                raise ValueError(f"data.sites = 'own' needs data.sample_shape, positive ints such as [1, 28, 28]; got {list(self.sample_shape)}")
            if type(self.num_classes) is not int or self.num_classes < 2:
                raise ValueError(f"data.sites = 'own' needs data.num_classes >= 2, got {self.num_classes!r}")
            if self.name in ("csv", "imagefolder") and (len(self.classes) != self.num_classes
                                                        or len(set(self.classes)) != len(self.classes)):
                raise ValueError(f"data.sites = 'own' with {self.name} needs data.classes, the {self.num_classes} distinct class names "
                                 f"(label values or class folders) in order, so that every site numbers them alike; got {list(self.classes)}")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "small_cnn"  # a name from splitlearn.models.MODELS, or a factory package.module:name
    cut: tuple[int | str, ...] = ()  # module names (or, for nn.Sequential models, indices) to cut after; empty: a default
    kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the model's builder or factory


@dataclass(frozen=True)
class SplitConfig:
    configuration: str = "vanilla"  # vanilla, ushaped, vertical, multihop, multitask
    clients: int = 4  # round-robin clients (vertical: parties holding feature chunks)
    relay: str = "peer"  # how client segments reach the next client: peer or server
    merge: str = "auto"  # vertical merge at the server: concat, sum, mean, or auto
    task_weights: tuple[float, ...] = (1.0, 0.5)  # multitask: weights of the label head and the upper-half-of-classes head

    def __post_init__(self) -> None:
        if self.configuration not in CONFIGURATION_KINDS:
            raise ValueError(
                f"split.configuration must be one of {', '.join(CONFIGURATION_KINDS)}, got {self.configuration!r}"
            )
        if self.clients < 1:
            raise ValueError(f"split.clients must be >= 1, got {self.clients}")
        if self.relay not in ("peer", "server"):
            raise ValueError(f"split.relay must be 'peer' or 'server', got {self.relay!r}")
        if self.merge not in ("auto", "concat", "sum", "mean"):
            raise ValueError(f"split.merge must be auto, concat, sum or mean, got {self.merge!r}")
        if self.configuration == "vertical" and self.clients < 2:
            raise ValueError("a vertical split needs split.clients >= 2")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "sgd"  # sgd, adam, adamw
    lr: float = 0.02
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    seed: int = 0  # model initialisation, data split, partition and batch order
    device: str = "cpu"  # cpu, cuda, cuda:1, mps

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"train.epochs and train.batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class PrivacyConfig:
    nopeek_a1: float = 0.0  # weight of DCOR(X, Z) in each client's loss (0: plain split learning)
    nopeek_a2: float = 1.0  # weight of the task loss; the client trains a1 / a2 (see splitlearn.privacy.NoPeek)
    nopeek_ramp_epochs: int = 0  # ramp a1 linearly up over this many epochs (0: full weight at once)
    leakage_batch_size: int = 64  # held-out DCOR(X, Z) is the mean over batches of this fixed size
    dp_noise_multiplier: float = 0.0  # > 0: clip each sample's smashed data and add Gaussian noise (see splitlearn.privacy.dp)
    dp_clip: float = 1.0  # the L2 norm each sample's smashed data is clipped to; the noise's std is noise_multiplier * clip
    hijack_check: float = 0.0  # > 0: each client sends a batch with random labels at this rate and stops if the server's
    # gradients do not depend on them (feature-space hijacking; see splitlearn.privacy.attacks.hijacking.FakeBatchGuard)

    def __post_init__(self) -> None:
        if not self.nopeek_a1 >= 0:
            raise ValueError(f"privacy.nopeek_a1 must be >= 0, got {self.nopeek_a1}")
        if not self.nopeek_a2 > 0:
            raise ValueError(f"privacy.nopeek_a2 must be > 0, got {self.nopeek_a2}")
        if self.nopeek_ramp_epochs < 0:
            raise ValueError(f"privacy.nopeek_ramp_epochs must be >= 0, got {self.nopeek_ramp_epochs}")
        if not self.dp_noise_multiplier >= 0:
            raise ValueError(f"privacy.dp_noise_multiplier must be >= 0 (0: no noise), got {self.dp_noise_multiplier}")
        if not self.dp_clip > 0:
            raise ValueError(f"privacy.dp_clip must be > 0, got {self.dp_clip}")
        if not 0 <= self.hijack_check < 1:
            raise ValueError(f"privacy.hijack_check is the share of fake batches, in [0, 1) (0: off), got {self.hijack_check}")
        if self.leakage_batch_size < 2:
            raise ValueError(f"privacy.leakage_batch_size must be >= 2 (DCOR needs 2 samples), got {self.leakage_batch_size}")


@dataclass(frozen=True)
class CompressionConfig:
    """How smashed data and cut gradients travel (see :mod:`splitlearn.split.compression`)."""

    codec: str = "none"  # none, fp16 (2 bytes a value), int8 (1 byte a value, one scale per tensor), topk
    topk_ratio: float = 0.1  # topk: the share of each sample's values kept (each sent with a 4-byte position)

    def __post_init__(self) -> None:
        if self.codec not in COMPRESSION_CODECS:
            raise ValueError(f"compression.codec must be one of {', '.join(COMPRESSION_CODECS)}, got {self.codec!r}")
        if not 0 < self.topk_ratio <= 1:
            raise ValueError(f"compression.topk_ratio must lie in (0, 1], got {self.topk_ratio}")


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    out: str = "runs"  # parent folder of run folders

    def __post_init__(self) -> None:
        if self.privacy.hijack_check and self.split.configuration != "vanilla":
            raise ValueError(f"privacy.hijack_check is for vanilla splits, in which the clients send their labels to the server; "
                             f"in a {self.split.configuration} split it is not available (in U-shaped ones the labels never leave "
                             "the client, so there is no batch to fake)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def override(self, values: dict[str, Any]) -> RunConfig:
        """Return a copy with dotted keys replaced, e.g. ``{"train.epochs": 3}``."""
        return _build(RunConfig, _nest(values), base=self)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return nested


def _build(cls, values: dict[str, Any], base=None):
    base = base if base is not None else cls()
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}; known: {', '.join(known)}")
    changes = {}
    for name, value in values.items():
        current = getattr(base, name)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{name} must be a table of settings, got {value!r}")
            changes[name] = _build(type(current), value, base=current)
        elif isinstance(current, tuple) and value is not None:
            changes[name] = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        else:
            changes[name] = _typed(f"{cls.__name__}.{name}", current, value)
    return replace(base, **changes)


def _typed(name: str, current: Any, value: Any) -> Any:
    """Check ``value`` has the type of the default ``current`` (ints are fine for floats)."""
    if current is None or value is None:
        return value
    if isinstance(current, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(current, bool)
    elif isinstance(current, int):
        ok = isinstance(value, int)
    elif isinstance(current, float):
        ok, value = isinstance(value, (int, float)), float(value) if isinstance(value, (int, float)) else value
    else:
        ok = isinstance(value, type(current))
    if not ok:
        raise ValueError(f"{name} must be {type(current).__name__}, got {value!r}")
    return value


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the JSON/TOML file at ``path``, then ``overrides`` (dotted keys)."""
    config = RunConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        text = path.read_text()
        try:
            values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"config file {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from None
        if not isinstance(values, dict):
            raise ValueError(f"config file {path}: the top level must be a table of settings, got {type(values).__name__}")
        try:
            config = _build(RunConfig, values)
        except (ValueError, TypeError) as exc:  # TypeError: a setting a check compares with a number, say
            raise ValueError(capped(f"config file {path}: {exc}", 500)) from None
    return config.override(overrides or {})
