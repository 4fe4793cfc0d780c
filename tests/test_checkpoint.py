"""Checkpoint folders: which steps are kept, what is loaded, and what is refused."""

import math

import pytest
import torch
from safetensors.torch import save_file

from splitlearn.checkpoint import CheckpointError, FolderCheckpoints, read_json, write_json_atomic


def _save(store, step):
    store.save(step, {"w": torch.full((2, 3), float(step))}, {"step": step})


def test_keeps_the_newest_and_the_start(tmp_path):
    store = FolderCheckpoints(tmp_path / "p", keep=2)
    assert store.load() is None
    for step in (0, 3, 7, 12):
        _save(store, step)
    assert store.steps() == [0, 7, 12]
    step, tensors, meta = store.load()
    assert step == 12 and torch.equal(tensors["w"], torch.full((2, 3), 12.0)) and meta == {"step": 12}
    assert store.load(at_most=11)[0] == 7
    assert store.load(at_most=6)[0] == 0  # a new session goes back to the start
    store.discard_after(7)
    assert store.steps() == [0, 7]
    store.clear()
    assert store.steps() == [] and store.load() is None


def test_another_configuration_and_broken_files_are_refused(tmp_path):
    FolderCheckpoints(tmp_path / "p", tag="a")
    with pytest.raises(CheckpointError, match="holds checkpoints of another run configuration"):
        FolderCheckpoints(tmp_path / "p", tag="b")
    store = FolderCheckpoints(tmp_path / "p", tag="a")
    (tmp_path / "p" / f"step-{5:012d}.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "p" / f"step-{6:012d}.safetensors.tmp").write_bytes(b"half a write")
    with pytest.raises(CheckpointError, match=r"step-000000000005\.safetensors: not a readable checkpoint"):
        store.load()
    FolderCheckpoints(tmp_path / "p", tag="a")  # opening again removes the unfinished write
    assert not list((tmp_path / "p").glob("*.tmp"))
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match="is not a folder"):
        FolderCheckpoints(tmp_path / "file")
    with pytest.raises(ValueError, match="keep must be >= 2"):
        FolderCheckpoints(tmp_path / "q", keep=1)


def test_json_is_replaced_whole(tmp_path):
    path = tmp_path / "position.json"
    write_json_atomic(path, {"step": 1})
    write_json_atomic(path, {"step": 2})
    assert read_json(path) == {"step": 2} and [p.name for p in tmp_path.iterdir()] == ["position.json"]
    path.write_text("{")
    with pytest.raises(CheckpointError, match="position.json"):
        read_json(path)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_state_is_never_saved(tmp_path, bad):
    store = FolderCheckpoints(tmp_path / "p")
    _save(store, 3)
    w = torch.ones(2, 3)
    w[1, 2] = bad
    with pytest.raises(CheckpointError, match=r"step-000000000004\.safetensors: refused to save a state whose tensor 'model/w' holds NaN or Inf"):
        store.save(4, {"n": torch.tensor(7), "model/w": w}, {})
    assert store.steps() == [3] and not list((tmp_path / "p").glob("*.tmp"))


def test_a_nonfinite_checkpoint_is_refused_on_load_by_file_and_key(tmp_path):
    store = FolderCheckpoints(tmp_path / "p")
    _save(store, 3)
    path = tmp_path / "p" / f"step-{5:012d}.safetensors"  # written by something else: tampered, or an older version
    save_file({"model/ok": torch.ones(2), "optim/0/exp_avg_sq": torch.tensor([1.0, math.inf])}, str(path), metadata={"meta": "{}"})
    with pytest.raises(CheckpointError) as e:
        store.load()
    assert str(e.value) == f"{path}: tensor 'optim/0/exp_avg_sq' holds NaN or Inf; refusing to resume from it"
    assert store.load(at_most=4)[0] == 3  # an earlier one still loads
