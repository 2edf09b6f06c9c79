"""The measured angles of every training step: free and nudged equilibria, kept for later analysis.

Steps are buffered in memory and written, at each checkpoint, as one HDF5 chunk file
``angles/steps-FIRST-LAST.h5`` (atomically). A resumed run deletes chunks beyond its checkpoint, whose steps it
is about to measure again, so every step appears exactly once. Per chunk, with n = samples of its steps:

* ``step`` (n,) training step (1-based), ``sample`` (n,) index of the sample in the training set;
* ``free`` (n, n_spins) and ``nudged`` (n, n_nudged, n_spins) angles in radians (float32);
* ``free_ok`` (n,) and ``nudged_ok`` (n, n_nudged): the machine's convergence / readout-quality verdicts;
* ``kept`` (n,): whether the sample entered the step's gradient. Angles are those of the last measurement of a
  sample, after any re-measurement (``session.max_remeasure``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..core.ep import EPEstimate
from ..core.files import read_arrays_h5, write_arrays_h5

CHUNK = re.compile(r"steps-(\d+)-(\d+)\.h5$")


def _chunks(folder: Path) -> list[tuple[int, int, Path]]:
    found = [(int(m[1]), int(m[2]), p) for p in folder.glob("steps-*.h5") if (m := CHUNK.search(p.name))]
    return sorted(found)


class AngleLog:
    """Collects ``add``-ed steps and writes them on ``flush``. ``resume_step``: the checkpoint's step count
    when continuing a run (chunks with later steps are removed)."""

    def __init__(self, folder: str | Path, resume_step: int | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            for stray in self.folder.glob(".*.tmp"):
                stray.unlink()
            for _, last, path in _chunks(self.folder):
                if last > resume_step:
                    path.unlink()
        self._buffer: list[dict[str, np.ndarray]] = []

    def add(self, step: int, samples: np.ndarray, est: EPEstimate) -> None:
        """One EP step on the training-set samples ``samples``, repeated ``m_init`` times as in ``est``."""
        n = est.free.batch_size
        self._buffer.append({
            "step": np.full(n, step, dtype=np.int64),
            "sample": np.resize(np.asarray(samples, dtype=np.int64), n),
            "free": est.free.phases.astype(np.float32),
            "nudged": np.stack([e.phases for e in est.nudged], axis=1).astype(np.float32),
            "free_ok": est.free.converged.copy(),
            "nudged_ok": np.stack([e.converged for e in est.nudged], axis=1),
            "kept": est.free.usable if est.kept is None else est.kept.copy()})

    def flush(self) -> Path | None:
        """Write the buffered steps as one chunk; returns its path (None when nothing was buffered)."""
        if not self._buffer:
            return None
        arrays = {k: np.concatenate([b[k] for b in self._buffer]) for k in self._buffer[0]}
        first, last = int(arrays["step"][0]), int(arrays["step"][-1])
        path = self.folder / f"steps-{first:07d}-{last:07d}.h5"
        write_arrays_h5(path, arrays)
        self._buffer = []
        return path


def read_angles(folder: str | Path) -> dict[str, np.ndarray]:
    """All chunks of a run's ``angles/`` folder, concatenated in step order."""
    parts = [read_arrays_h5(p) for _, _, p in _chunks(Path(folder))]
    if not parts:
        raise FileNotFoundError(f"no angle chunks in {folder}")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
