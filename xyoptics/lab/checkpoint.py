"""Checkpoints: everything a training run needs to continue exactly where it stopped.

A checkpoint is taken at a step boundary and holds the parameters, the optimiser state, the state of every
random generator, the data position (epoch, next batch, and that epoch's sample order), the machine's own
state where it can be replayed (a simulator's noise generator and clock; real hardware has none), the
diagnostics recorded so far, the evaluation history, counters, and how many lines of ``metrics.jsonl``
belong to it. It is one HDF5 file, ``checkpoint.h5``, replaced atomically, so a process killed while writing
leaves the previous checkpoint intact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.files import read_tree_h5, write_tree_h5
from ..core.network import Params

FORMAT = 1
FILENAME = "checkpoint.h5"


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
    wall_s: float = 0.0


def save_checkpoint(folder: str | Path, state: TrainState) -> Path:
    path = Path(folder) / FILENAME
    tree = {k: v for k, v in asdict(state).items() if v is not None and k not in ("params", "order")}
    tree["params"] = state.params.as_dict()
    if state.order is not None:
        tree["order"] = np.asarray(state.order)
    tree["format"] = FORMAT
    write_tree_h5(path, tree)
    return path


def load_checkpoint(folder: str | Path) -> TrainState:
    """The checkpoint of a run folder; FileNotFoundError if it has none."""
    path = Path(folder) / FILENAME
    if not path.exists():
        raise FileNotFoundError(f"{folder} holds no {FILENAME}: nothing to resume")
    tree = read_tree_h5(path)
    if tree.pop("format", None) != FORMAT:
        raise ValueError(f"{path} is not a checkpoint of format {FORMAT}")
    tree["params"] = Params(**tree["params"])
    return TrainState(**tree)
