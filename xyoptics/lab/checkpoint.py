"""Checkpoints: everything a training run needs to continue exactly where it stopped, verified on load.

A checkpoint is taken at a step boundary and holds the parameters, the optimiser state, the state of every
random generator, the data position (epoch, next batch, and that epoch's sample order), the machine's own
state where it can be replayed (a simulator's noise generator and clock; real hardware has none), the
diagnostics recorded so far, the evaluation history, counters, how many lines of ``metrics.jsonl`` belong to
it and their sha256, and the sha256 of every angle-log chunk written so far (so that a resumed run notices an
edited log instead of carrying it on).

Files: ``checkpoints/step-NNNNNNN.h5``, one HDF5 file per checkpoint, written atomically (a process killed
while writing leaves the earlier ones intact); the newest ``keep`` are kept. Each carries the sha256 of its
whole content (every array's dtype, shape and bytes, every other value as canonical JSON), recomputed on load:
a flipped byte, a truncated file or a file from another step is *corrupt*. ``resume_point`` takes the newest
good checkpoint and names what the corrupt newer ones would have held; with none good the run is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.files import read_tree_h5, write_tree_h5
from ..core.network import Params
from ..core.schema import ConfigError

FORMAT = 2
FOLDER = "checkpoints"
KEEP = 3
_NAME = re.compile(r"^step-(\d{7,})\.h5$")


class CheckpointError(ConfigError):
    """No checkpoint of a run can be trusted (or there is none): the run cannot be resumed."""


@dataclass
class TrainState:
    """A training run at a step boundary. ``step`` counts completed EP steps; ``epoch`` is the epoch in
    progress (1-based) and ``batch`` its next mini-batch; ``order`` is that epoch's sample order (None before
    the epoch has drawn it)."""

    params: Params
    optimizer: dict
    rngs: dict[str, dict]
    step: int = 0
    epoch: int = 1
    batch: int = 0
    order: np.ndarray | None = None
    machine: dict | None = None
    diagnostics: dict | None = None
    counters: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    metrics_lines: int = 0
    metrics_sha256: str | None = None
    angle_chunks: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0


@dataclass
class ResumePoint:
    """The checkpoint a run continues from: its state and file, and the newer files that were not usable
    (``skipped``: file name -> reason), whose steps are measured again."""

    state: TrainState
    path: Path
    skipped: dict[str, str] = field(default_factory=dict)

    def message(self) -> str | None:
        if not self.skipped:
            return None
        bad = "; ".join(f"{name}: {why}" for name, why in self.skipped.items())
        return (f"newest checkpoint(s) unusable ({bad}); resuming from {self.path.name} at step "
                f"{self.state.step}: the steps after it are lost and are measured again")


def tree_digest(tree: dict) -> str:
    """sha256 of a nested dict as ``write_tree_h5`` stores it: keys sorted, arrays (and numpy scalars) by
    dtype, shape and bytes, everything else as canonical JSON."""
    h = hashlib.sha256()

    def feed(node: dict, prefix: str) -> None:
        for key in sorted(node):
            value = node[key]
            h.update(f"{prefix}/{key}\0".encode())
            if isinstance(value, dict):
                feed(value, f"{prefix}/{key}")
            elif isinstance(value, (np.ndarray, np.generic)):
                a = np.ascontiguousarray(value)
                h.update(f"a{a.dtype.str}{a.shape}\0".encode())
                h.update(a.tobytes())
            else:
                h.update(b"j" + json.dumps(value, sort_keys=True).encode() + b"\0")

    feed(tree, "")
    return h.hexdigest()


def checkpoint_files(folder: str | Path) -> list[tuple[int, Path]]:
    """(step from the file name, path) of a run folder's checkpoints, newest first."""
    found = [(int(m[1]), p) for p in (Path(folder) / FOLDER).glob("step-*.h5") if (m := _NAME.match(p.name))]
    return sorted(found, reverse=True)


def has_checkpoint(folder: str | Path) -> bool:
    return bool(checkpoint_files(folder))


def save_checkpoint(folder: str | Path, state: TrainState, keep: int = KEEP) -> Path:
    """Write ``checkpoints/step-N.h5`` atomically, then remove all but the newest ``keep``."""
    tree = {k: v for k, v in asdict(state).items() if v is not None and k not in ("params", "order")}
    tree["params"] = state.params.as_dict()
    if state.order is not None:
        tree["order"] = np.asarray(state.order)
    tree["format"] = FORMAT
    tree["sha256"] = tree_digest(tree)
    path = Path(folder) / FOLDER / f"step-{state.step:07d}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tree_h5(path, tree)
    for _, old in checkpoint_files(folder)[keep:]:
        old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | Path) -> TrainState:
    """One checkpoint file, verified; ``CheckpointError`` saying what is wrong with it."""
    path = Path(path)
    try:
        tree = read_tree_h5(path)
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError, ... on damaged files
        raise CheckpointError(f"unreadable ({type(exc).__name__}: {exc})") from None
    recorded = tree.pop("sha256", None)
    if tree.get("format") != FORMAT:
        raise CheckpointError(f"format {tree.get('format')!r}, not {FORMAT}")
    if recorded != tree_digest(tree):
        raise CheckpointError("content does not match its sha256 (corrupt or edited)")
    m = _NAME.match(path.name)
    tree.pop("format")
    try:
        tree["params"] = Params(**tree["params"])
        state = TrainState(**tree)
    except (TypeError, KeyError) as exc:
        raise CheckpointError(f"incomplete ({exc})") from None
    if m is None or int(m[1]) != state.step:
        raise CheckpointError(f"holds step {state.step}, but its name says otherwise")
    return state


def resume_point(folder: str | Path) -> ResumePoint:
    """The newest good checkpoint of a run folder; ``CheckpointError`` when there is none."""
    skipped = {}
    for _, path in checkpoint_files(folder):
        try:
            return ResumePoint(read_checkpoint(path), path, skipped)
        except CheckpointError as exc:
            skipped[path.name] = str(exc)
    if not skipped:
        legacy = " (its checkpoint.h5 has the older format without checksums, which this version does not " \
                 "resume)" if (Path(folder) / "checkpoint.h5").exists() else ""
        raise CheckpointError(f"{folder} holds no checkpoint ({FOLDER}/step-*.h5): nothing to resume{legacy}")
    bad = "; ".join(f"{name}: {why}" for name, why in skipped.items())
    raise CheckpointError(f"{folder}: no usable checkpoint ({bad}); the run cannot be resumed -- start it "
                          f"again, or from another run with --init-from")


def load_checkpoint(folder: str | Path) -> TrainState:
    """The state of the newest good checkpoint of a run folder."""
    return resume_point(folder).state


def set_aside(folder: str | Path, point: ResumePoint) -> list[Path]:
    """Move the unusable checkpoints newer than ``point`` to ``checkpoints/unusable/`` (kept as evidence,
    out of the way of the files the resumed run writes)."""
    moved = []
    for name in point.skipped:
        src = Path(folder) / FOLDER / name
        if src.exists():
            dest = src.parent / "unusable" / name
            dest.parent.mkdir(exist_ok=True)
            src.replace(dest)
            moved.append(dest)
    return moved
