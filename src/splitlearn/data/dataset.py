"""In-memory labelled data set shared by every loader."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class DataError(ValueError):
    """A data file or folder is missing, unreadable or malformed; the message names it."""


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Samples held as tensors.

    ``features`` is float32 of shape ``(n, *sample_shape)``, ``labels`` int64 of shape ``(n,)``
    with values in ``range(len(classes))``, and ``sample_ids`` int64 of shape ``(n,)``, unique,
    identifying each sample across subsets and parties (default ``arange(n)``). ``classes``
    defaults to the label values as strings.
    """

    features: torch.Tensor
    labels: torch.Tensor
    sample_ids: torch.Tensor | None = None
    classes: tuple[str, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        features, labels = self.features, self.labels
        for field, value in (("features", features), ("labels", labels)):
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{field} must be a torch.Tensor, got {type(value).__name__}")
        if features.dtype != torch.float32 or features.dim() < 2:
            raise ValueError(
                f"features must be float32 of shape (n, *sample_shape), "
                f"got {features.dtype} of shape {tuple(features.shape)}"
            )
        n = len(features)
        if labels.dtype != torch.int64 or labels.shape != (n,):
            raise ValueError(
                f"labels must be int64 of shape ({n},) to match features, "
                f"got {labels.dtype} of shape {tuple(labels.shape)}"
            )
        ids = torch.arange(n) if self.sample_ids is None else self.sample_ids
        if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.shape != (n,):
            raise ValueError(f"sample_ids must be an int64 tensor of shape ({n},), got {ids!r:.80}")
        if len(ids.unique()) != n:
            raise ValueError("sample_ids must be unique")
        classes = tuple(self.classes) or tuple(str(c) for c in range(int(labels.max()) + 1 if n else 0))
        if n and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes):
            raise ValueError(
                f"labels must lie in [0, {len(classes)}) for {len(classes)} classes, "
                f"got values from {int(labels.min())} to {int(labels.max())}"
            )
        object.__setattr__(self, "sample_ids", ids)
        object.__setattr__(self, "classes", classes)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample's features."""
        return tuple(self.features.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: torch.Tensor) -> ArrayDataset:
        """Samples selected by an integer index or boolean mask, keeping their sample ids."""
        return ArrayDataset(
            self.features[index], self.labels[index], self.sample_ids[index], self.classes, self.name
        )


def as_array_dataset(data, *, name: str = "data") -> ArrayDataset:
    """``data`` as an :class:`ArrayDataset`: itself if it is one, else a map-style
    ``torch.utils.data.Dataset`` (``TensorDataset`` included) of ``(x, y)`` pairs, read once in
    index order; ``x`` a tensor or array of one shape for every sample, ``y`` an integer class.
    A bad sample is named by its index, in one line."""
    if isinstance(data, ArrayDataset):
        return data
    try:
        n = len(data)
        data[0] if n else None
    except (TypeError, NotImplementedError, KeyError):
        raise ValueError(f"{name} must be an ArrayDataset or a map-style Dataset of (x, y) pairs (with __len__ and "
                         f"__getitem__ by index), got {type(data).__name__}") from None
    if n == 0:
        raise ValueError(f"{name} is empty")
    xs, ys = [], []
    for i in range(n):
        item = data[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"{name}[{i}] must be an (x, y) pair, got {type(item).__name__}"
                             + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else ""))
        x, y = item
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name}[{i}]: x must be a tensor or an array, got {type(x).__name__}") from None
        if not (x.is_floating_point() or x.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
            raise ValueError(f"{name}[{i}]: x must hold numbers, got {x.dtype}")
        if xs and x.shape != xs[0].shape:
            raise ValueError(f"{name}[{i}]: x has shape {tuple(x.shape)}, but {name}[0] has {tuple(xs[0].shape)}; "
                             "every sample must have one shape")
        y = y.item() if isinstance(y, torch.Tensor) and y.numel() == 1 else y
        if isinstance(y, (bool, float)) or not hasattr(y, "__index__"):
            raise ValueError(f"{name}[{i}]: y must be an integer class, got {y!r:.40}")
        if int(y) < 0:
            raise ValueError(f"{name}[{i}]: y must be a class index >= 0, got {int(y)}")
        xs.append(x)
        ys.append(int(y))
    features = torch.stack(xs).to(torch.float32)
    if features.dim() == 1:
        features = features.unsqueeze(1)
    return ArrayDataset(features, torch.tensor(ys, dtype=torch.int64), name=name)
