"""Each party's trained segments (and optimiser state) in a safetensors file of its own."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from splitlearn._text import capped
from splitlearn.checkpoint import CheckpointError, first_nonfinite
from splitlearn.split.party import Party
from splitlearn.split.state import unpack_state

__all__ = ["load_party_weights", "save_party_weights"]


def save_party_weights(parties: Iterable[Party], folder: str | Path) -> dict[str, Path]:
    """Write ``<party>.safetensors`` (segments, optimiser state, JSON metadata) for each party that
    holds segments, atomically (write, then rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for p in parties:
        tensors, meta = p.state()
        if not tensors:
            continue
        path = folder / f"{p.name}.safetensors"
        if (bad := first_nonfinite(tensors)) is not None:
            raise CheckpointError(f"{path}: refused to save {p.name}'s weights: tensor {bad!r} holds NaN or Inf")
        tmp = path.with_suffix(".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata={"meta": json.dumps(meta), "role": p.role})
        tmp.replace(path)
        written[p.name] = path
    return written


def load_party_weights(party: Party, path: str | Path) -> None:
    """Install the segments (and optimiser state) that :func:`save_party_weights` wrote at
    ``path`` into ``party``, which then holds them; :class:`CheckpointError` naming the file and
    the tensor if they are not this party's."""
    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})["meta"])
        tensors = load_file(str(path))
    except (SafetensorError, OSError, KeyError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a weights file of splitlearn ({type(e).__name__}: {capped(str(e), 200)})") from None
    if (bad := first_nonfinite(tensors)) is not None:
        raise CheckpointError(f"{path}: tensor {bad!r} holds NaN or Inf")
    try:
        party.hold_segments(True)
        unpack_state(tensors, meta, party.modules, party.optimizer)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None

