"""Files written so that a crash never leaves a half-written file behind (run folders, calibration reports).

Whole files go to a temporary sibling first and are moved into place with an atomic ``os.replace``, so a
process killed mid-write leaves the previous version intact (and at most a stray ``.NAME.*.tmp``);
JSON-lines logs are appended one complete line at a time and flushed to disk.

Temporary files come from ``create_temp``, not ``tempfile.mkstemp``: mkstemp creates them with mode 0600, which
``os.replace`` would carry over to every run file. ``create_temp`` asks the kernel for mode 0666 with
``os.open(O_CREAT | O_EXCL)``, so the file gets ``0666 & ~umask`` (or the folder's default ACL) exactly like a
file opened with ``open(path, "w")``. The umask is never read: reading it means setting it (``os.umask``), which
for a moment changes it for every thread of the process.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

import h5py
import numpy as np

_TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def create_temp(directory: str | Path, prefix: str, suffix: str) -> tuple[int, str]:
    """Like ``tempfile.mkstemp``: a new empty file ``directory/PREFIX<random>SUFFIX`` opened for reading and
    writing, returned as (fd, path); but with the mode a plain ``open`` would give (0666 & ~umask), not 0600."""
    for _ in range(100):
        path = os.path.join(directory, f"{prefix}{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(path, _TEMP_FLAGS, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name {prefix}*{suffix} in {directory}")


def _atomic(path: Path, write) -> None:
    path = Path(path)
    fd, tmp = create_temp(path.parent, f".{path.name}.", ".tmp")
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


def sha256_file(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def prefix_sha256(path: str | Path, n_lines: int) -> str | None:
    """sha256 of the first ``n_lines`` lines of a file (bytes as stored); None when it has fewer."""
    lines = Path(path).read_bytes().splitlines(keepends=True) if Path(path).exists() else []
    return hashlib.sha256(b"".join(lines[:n_lines])).hexdigest() if len(lines) >= n_lines else None


class JsonlWriter:
    """Appends one JSON object per line and flushes it to disk before returning. A new writer starts an empty
    file; ``keep=n`` instead keeps the first n complete lines of an existing one (resuming a run), refused
    (``ValueError``) unless they hash to ``expect_sha256`` where given. ``sha256`` is the digest of everything
    the file holds so far."""

    def __init__(self, path: str | Path, keep: int | None = None, expect_sha256: str | None = None):
        self.path = Path(path)
        self._hash = hashlib.sha256()
        if keep is None:
            self.path.write_text("")
            return
        digest = prefix_sha256(self.path, keep)
        if digest is None:
            raise ValueError(f"{self.path} holds fewer than the {keep} lines to keep")
        if expect_sha256 is not None and digest != expect_sha256:
            raise ValueError(f"{self.path}: its first {keep} lines changed since the checkpoint (corrupt or edited)")
        kept = b"".join(self.path.read_bytes().splitlines(keepends=True)[:keep])
        self._hash.update(kept)
        write_text_atomic(self.path, kept.decode())

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def write(self, record: dict) -> None:
        line = json.dumps(record) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._hash.update(line.encode())
