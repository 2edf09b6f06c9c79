"""Run-folder files written so that a crash never leaves a half-written file behind.

Whole files go to a temporary sibling first and are moved into place with an atomic ``os.replace``;
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


class JsonlWriter:
    """Appends one JSON object per line and flushes it to disk before returning."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.write_text("")

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
