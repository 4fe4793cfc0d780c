"""Checkpoints on a site's own disk: each party's state after a step, and the training position.

A party's state (segments, optimiser state, JSON metadata) is one safetensors file per step,
``step-<step>.safetensors``; the coordinator's position is ``position.json``. Every file is
written to a temporary name, flushed to disk and renamed over the old one, so a process killed at
any moment leaves either the old file or the new one, never half of one. Nothing here unpickles.
No checkpoint holds NaN or Inf: a state holding any is refused on save (nothing is written) and
on load.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from splitlearn._text import capped

__all__ = ["CheckpointError", "FolderCheckpoints", "first_nonfinite", "read_json", "write_json_atomic"]

_NAME = re.compile(r"^step-(\d{12})\.safetensors$")


class CheckpointError(RuntimeError):
    """A checkpoint folder or file that cannot be used; the text names the file and the problem."""


def first_nonfinite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The key of the first floating tensor of ``tensors`` holding NaN or Inf, or None."""
    for key, t in tensors.items():
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            return key
    return None


def _replace_durably(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: str | Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    _replace_durably(tmp, path)


def read_json(path: str | Path) -> Any:
    """The JSON in ``path``; :class:`CheckpointError` naming the file if it is unreadable."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable JSON checkpoint ({e})") from None


class FolderCheckpoints:
    """One party's checkpoints in ``folder``: the newest ``keep`` of them, and step 0, the state
    before any training, which a new session (after a finished one) rolls every party back to.

    With steps pipelined one deep, a party may have checkpointed two steps the coordinator has not
    yet heard all parties finish; a roll back goes to the one before those: hence 3."""

    def __init__(self, folder: str | Path, *, keep: int = 3, tag: str | None = None) -> None:
        if keep < 2:
            raise ValueError(f"keep must be >= 2, got {keep}")
        self.folder, self.keep = Path(folder), keep
        if self.folder.exists() and not self.folder.is_dir():
            raise CheckpointError(f"{self.folder} is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        if tag is not None:  # e.g. a fingerprint of the run config: refuse another run's checkpoints
            marker = self.folder / "tag.json"
            if marker.exists() and read_json(marker) != {"tag": tag}:
                raise CheckpointError(f"{self.folder} holds checkpoints of another run configuration; "
                                      "remove it or choose another folder")
            if not marker.exists():
                write_json_atomic(marker, {"tag": tag})
        for stale in self.folder.glob("*.tmp"):  # a write the process did not finish
            stale.unlink()

    def steps(self) -> list[int]:
        """Steps with a checkpoint here, oldest first."""
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := _NAME.match(p.name)))

    def _path(self, step: int) -> Path:
        return self.folder / f"step-{step:012d}.safetensors"

    def save(self, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        path = self._path(step)
        if (bad := first_nonfinite(tensors)) is not None:
            raise CheckpointError(f"{path}: refused to save a state whose tensor {bad!r} holds NaN or Inf")
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta), "step": str(step)})
        _replace_durably(tmp, path)
        for old in [s for s in self.steps() if s > 0][: -self.keep]:
            self._path(old).unlink(missing_ok=True)

    def load(self, at_most: int | None = None) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
        candidates = [s for s in self.steps() if at_most is None or s <= at_most]
        if not candidates:
            return None
        step, path = candidates[-1], self._path(candidates[-1])
        try:
            with safe_open(str(path), "pt") as f:
                meta = json.loads(f.metadata()["meta"])
            tensors = load_file(str(path))
        except (SafetensorError, OSError, KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {capped(str(e), 200)})") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: its metadata is not a JSON object")
        if (bad := first_nonfinite(tensors)) is not None:
            raise CheckpointError(f"{path}: tensor {bad!r} holds NaN or Inf; refusing to resume from it")
        return step, tensors, meta

    def clear(self) -> None:
        """Forget every checkpoint (a fresh start)."""
        self.discard_after(-1)

    def discard_after(self, step: int) -> None:
        for s in self.steps():
            if s > step:
                self._path(s).unlink(missing_ok=True)
