"""The files of run and checkpoint folders, read as untrusted input.

Anyone who can write to a run folder (a colleague, a script gone wrong, an intruder) can plant a
file the commands then read. Every JSON file ``status``, ``predict``, ``attack``, ``report`` and
``serve`` read is checked against a JSON Schema before any field is used, and refused in one line
that names the file and the field; a path read from a file is confined to the folder it belongs in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from splitlearn._text import capped

__all__ = ["ATTACKS", "METRICS", "POSITION", "POSITION_IN_PROCESS", "STATUS", "VERSIONED", "RunFileError", "check", "confined", "read_checked"]

_TEXT_LIMIT = 200  # characters of a field's value quoted in an error: a planted file may hold megabytes


class RunFileError(ValueError):
    """A run-folder file that cannot be used: the text names the file and the field."""


def _short(text: str) -> str:
    return capped(text, _TEXT_LIMIT)


_INT = {"type": "integer", "minimum": 0}
_NUMBER = {"type": "number"}
_NAME = {"type": "string", "maxLength": 256}
_NAMES = {"type": "array", "items": _NAME}
_COUNTS = {"type": "object", "additionalProperties": _INT}

STATUS = {
    "type": "object",
    "required": ["state", "updated", "seconds", "epoch", "next_batch", "step", "clients", "connected", "absent",
                 "connects", "bytes_sent", "bytes_received"],
    "properties": {"state": _NAME, "updated": _NUMBER, "seconds": _NUMBER, "epoch": _INT, "next_batch": _INT,
                   "step": _INT, "holder": {"type": ["string", "null"], "maxLength": 256}, "clients": _NAMES, "connected": _NAMES,
                   "absent": _NAMES, "connects": _COUNTS, "bytes_sent": _COUNTS, "bytes_received": _COUNTS},
}
"""``status.json`` of a served run (written by ``splitlearn serve``)."""

_EPOCH = {
    "type": "object",
    "required": ["epoch"],
    "properties": {"epoch": {"type": "integer", "minimum": 1}, "train_loss": _NUMBER, "test_accuracy": _NUMBER,
                   "dcor": _NUMBER, "seconds": _NUMBER, "nopeek_weight": _NUMBER, "dp_epsilon": _NUMBER, "dp_delta": _NUMBER,
                   "hijack_check": {"type": "object", "additionalProperties": {
                       "type": "object", "required": ["fakes", "score"],
                       "properties": {"fakes": _INT, "score": {"type": ["number", "null"]}}}}},
}

VERSIONED = {
    "type": "object",
    "required": ["splitlearn_version"],
    "properties": {"splitlearn_version": {"type": "string", "maxLength": 64}},
}
"""What any version's ``metrics.json`` holds: the version that wrote it (read first; the rest of
the file is checked against :data:`METRICS` only if it is this version's)."""

METRICS = {
    "type": "object",
    "required": ["splitlearn_version", "finished", "epochs"],
    "properties": {"splitlearn_version": {"type": "string", "maxLength": 64}, "finished": {"type": "boolean"}, "seconds": _NUMBER,
                   "epochs": {"type": "array", "items": _EPOCH}, "parties": _NAMES},
}
"""``metrics.json`` of a run folder, in-process or served."""

ATTACKS = {
    "type": "object",
    "properties": {"classes": {"type": "integer", "minimum": 2}},
    "additionalProperties": _NUMBER,
}
"""``attacks.json``: what each attack achieved (numbers), and the number of classes."""

_POSITION_FIELDS = {
    "tag": {"type": "string"}, "seconds": _NUMBER,
    "coordinator": {"type": "object", "required": ["step", "committed", "holder", "epoch", "next_batch"],
                    "properties": {"step": _INT, "committed": _INT, "holder": {"type": ["string", "null"]},
                                   "epoch": _INT, "next_batch": _INT}},
    "history": {"type": "array", "items": _EPOCH},
    "epoch_first_step": {"type": ["integer", "null"], "minimum": 0},
    "epoch_losses": {"type": "object", "additionalProperties": {
        "type": "array", "items": {"type": "array", "prefixItems": [_INT, _NUMBER], "minItems": 2, "maxItems": 2}}},
    "bytes": {"type": "object", "required": ["messages", "sender", "receiver", "kind"],
              "properties": {"messages": _INT, "sender": _COUNTS, "receiver": _COUNTS, "kind": _COUNTS}},
}

POSITION_IN_PROCESS = {"type": "object", "required": ["tag", "seconds", "coordinator", "history"], "properties": _POSITION_FIELDS}
"""``checkpoints/position.json`` of a run folder that ``splitlearn train`` is writing: where training stands."""

POSITION = {
    "type": "object",
    "required": ["tag", "run_dir", "finished", "seconds", "coordinator", "history"],
    "properties": _POSITION_FIELDS | {"run_dir": {"type": "string"}, "finished": {"type": "boolean"},
                                      "data": {"type": "object", "additionalProperties": {"type": "string"}}},
}
"""``position.json`` of a server's checkpoint folder: where training stands, and in which run folder."""


def _field(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return f"field {_short(out)!r}" if out else "the top level"


def check(value: Any, schema: dict[str, Any], source: str | Path) -> Any:
    """``value`` if it fits ``schema``; else :class:`RunFileError` naming ``source`` and the field."""
    error = best_match(Draft202012Validator(schema).iter_errors(value))
    if error is not None:
        raise RunFileError(f"{source}: {_field(error.absolute_path)}: {_short(error.message)}")
    return value


def read_checked(path: str | Path, schema: dict[str, Any]) -> Any:
    """The JSON in ``path``, checked against ``schema``; :class:`RunFileError` naming the file
    (and the field) if it is unreadable or does not fit."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise RunFileError(f"{path}: not readable JSON ({_short(str(e) or type(e).__name__)})") from None
    return check(value, schema, path)


def confined(path: str | Path, folder: str | Path, *, source: str | Path, field: str) -> Path:
    """``path`` (read from ``field`` of ``source``) if it lies inside ``folder`` (links resolved);
    else :class:`RunFileError`."""
    inside, base = Path(path).resolve(), Path(folder).resolve()
    if inside == base or not inside.is_relative_to(base):
        raise RunFileError(f"{source}: field {field!r}: {_short(str(path))!r} is not inside {folder}")
    return Path(path)
