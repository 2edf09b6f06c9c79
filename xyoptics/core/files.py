"""Files written so that a crash never leaves a half-written file behind (run folders, calibration reports).

Whole files go to a temporary sibling first and are moved into place with an atomic ``os.replace``, so a
process killed mid-write leaves the previous version intact (and at most a stray ``.NAME.*.tmp``);
JSON-lines logs are appended one complete line at a time and flushed to disk.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np


def _atomic(path: Path, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    _atomic(Path(path), write)


def write_json_atomic(path: str | Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def write_arrays_h5(path: str | Path, arrays: dict[str, np.ndarray], attrs: dict | None = None) -> None:
    """Named arrays (and scalar attributes) as datasets of one HDF5 file."""
    def write(tmp):
        with h5py.File(tmp, "w") as f:
            for name, a in arrays.items():
                f.create_dataset(name, data=np.asarray(a))
            f.attrs.update(attrs or {})
    _atomic(Path(path), write)


def read_arrays_h5(path: str | Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in f}


def write_tree_h5(path: str | Path, tree: dict) -> None:
    """A nested dict as one HDF5 file (atomically): numpy arrays become datasets, dicts groups, and every
    other value (numbers, strings, lists, None, Python ints of any size) is kept as JSON in an attribute."""
    def fill(group, node: dict):
        plain = {}
        for key, value in node.items():
            if isinstance(value, np.ndarray):
                group.create_dataset(key, data=value)
            elif isinstance(value, dict):
                fill(group.create_group(key), value)
            else:
                plain[key] = value
        group.attrs["json"] = json.dumps(plain)

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            fill(f, tree)
    _atomic(Path(path), write)


def read_tree_h5(path: str | Path) -> dict:
    """The nested dict written by ``write_tree_h5``."""
    def read(group) -> dict:
        node = json.loads(group.attrs.get("json", "{}"))
        for key, item in group.items():
            node[key] = read(item) if isinstance(item, h5py.Group) else item[()]
        return node

    with h5py.File(path, "r") as f:
        return read(f)


class JsonlWriter:
    """Appends one JSON object per line and flushes it to disk before returning. A new writer starts an empty
    file; ``keep=n`` instead keeps the first n complete lines of an existing one (resuming a run)."""

    def __init__(self, path: str | Path, keep: int | None = None):
        self.path = Path(path)
        if keep is None:
            self.path.write_text("")
        else:
            lines = self.path.read_text().splitlines(keepends=True) if self.path.exists() else []
            if len(lines) < keep:
                raise ValueError(f"{self.path} holds {len(lines)} lines, fewer than the {keep} to keep")
            write_text_atomic(self.path, "".join(lines[:keep]))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
