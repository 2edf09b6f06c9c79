"""Data sets as phase-encoded inputs: every input feature is an angle in [-pi/2, pi/2] (radians)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .costs import targets_for


@dataclass(frozen=True)
class Dataset:
    """Clamp angles ``x`` (n, n_inputs) in [-pi/2, pi/2], integer ``labels`` (n,), and the number of output
    spins (one per class, or one for a binary task)."""

    name: str
    x: np.ndarray
    labels: np.ndarray
    n_classes: int
    n_outputs: int

    def __post_init__(self):
        if len(self.x) != len(self.labels):
            raise ValueError("x and labels differ in length")
        if np.any(np.abs(self.x) > np.pi / 2 + 1e-12):
            raise ValueError(f"{self.name}: input angles must lie in [-pi/2, pi/2]")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_inputs(self) -> int:
        return self.x.shape[1]

    @property
    def targets(self) -> np.ndarray:
        return targets_for(self.labels, self.n_outputs)

    def batches(self, batch_size: int, rng: np.random.Generator | None = None):
        """Yield (x, labels, targets) mini-batches, shuffled with ``rng`` when given."""
        order = np.arange(len(self)) if rng is None else rng.permutation(len(self))
        targets = self.targets
        for k in range(0, len(order), batch_size):
            sel = order[k:k + batch_size]
            yield self.x[sel], self.labels[sel], targets[sel]


def xor() -> Dataset:
    """XOR on two spins clamped to +-pi/2; one output spin, target +pi/2 when exactly one input is +pi/2."""
    bits = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    return Dataset("xor", (bits - 0.5) * np.pi, bits[:, 0] ^ bits[:, 1], n_classes=2, n_outputs=1)


TASKS = {"xor": lambda: (xor(), xor())}


def load_task(name: str) -> tuple[Dataset, Dataset]:
    """(train, test) data for a task name."""
    try:
        return TASKS[name]()
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}") from None
