"""The ``XYMachine`` seam: the only thing training talks to.

A machine takes parameters, a batch of clamped inputs and an optional nudge, lets its XY system settle and
returns the equilibrium angles with per-sample convergence and quality information. The digital machine
relaxes the model numerically; an optical machine writes SLM images and reads camera frames. Training code
never knows which one it has.

Device failures surface as ``DeviceFault``. A machine that can be replayed exactly (a simulator) may offer
``state_dict()`` / ``load_state_dict(state)`` for checkpoints; one with hardware offers ``park()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from .costs import Cost
from .network import Params, XYNetwork


class DeviceFault(RuntimeError):
    """A device failed to do its part (camera timeout, instrument not answering or disconnected). Training
    retries the step a bounded number of times, then stops safely with a checkpoint."""


@dataclass(frozen=True)
class Nudge:
    """Weak pull of the outputs toward ``targets`` (batch, n_outputs; radians): adds beta * cost to E, or with
    ``gains`` (batch, n_outputs; >= 0) beta * sum_o g_o * (output o's cost term)."""

    beta: float
    targets: np.ndarray
    cost: Cost
    gains: np.ndarray | None = None


#: Boolean quality flags (per sample, or per sample and spin) that make a measurement unusable when set.
FLAGS = ("saturated", "low_modulation", "dead_spot", "reference_mismatch")


@dataclass(frozen=True)
class Equilibrium:
    """Equilibrium angles of a batch, shape (batch, n_spins) with the inputs included.

    ``converged`` says per sample whether the machine reached its stopping rule, ``iterations`` how many steps
    it took, ``residual`` the remaining max|force| (digital) or readout error figure (optical); ``quality`` holds
    any further per-sample figures a machine measures. A sample is ``usable`` when it converged and none of the
    ``FLAGS`` present in ``quality`` is set for it; only usable samples may enter a gradient."""

    phases: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray
    residual: np.ndarray
    quality: dict = field(default_factory=dict)

    @property
    def n_unconverged(self) -> int:
        return int(np.count_nonzero(~self.converged))

    @property
    def batch_size(self) -> int:
        return len(self.phases)

    def flagged(self, name: str) -> np.ndarray:
        """Boolean per sample: quality flag ``name`` is set on any spin (all False when not measured)."""
        if name not in self.quality:
            return np.zeros(self.batch_size, dtype=bool)
        return np.asarray(self.quality[name], dtype=bool).reshape(self.batch_size, -1).any(axis=1)

    @property
    def usable(self) -> np.ndarray:
        """Boolean per sample: converged and not flagged by any quality check in ``FLAGS``."""
        ok = np.asarray(self.converged, dtype=bool).copy()
        for name in FLAGS:
            ok &= ~self.flagged(name)
        return ok

    def with_rows(self, rows: np.ndarray, other: "Equilibrium") -> "Equilibrium":
        """This equilibrium with samples ``rows`` replaced by the samples of ``other`` (a re-measurement);
        per-sample quality arrays are replaced row-wise, anything else is kept."""
        rows = np.asarray(rows)
        n = self.batch_size

        def put(mine, theirs):
            mine = np.asarray(mine)
            if mine.ndim == 0 or len(mine) != n:
                return mine
            out = mine.copy()
            out[rows] = theirs
            return out

        quality = {k: put(v, other.quality[k]) if k in other.quality else v for k, v in self.quality.items()}
        return Equilibrium(put(self.phases, other.phases), put(self.converged, other.converged),
                           put(self.iterations, other.iterations), put(self.residual, other.residual), quality)


@runtime_checkable
class XYMachine(Protocol):
    """Settles an XY network for given parameters and inputs.

    ``equilibrate`` starts from ``start`` (an earlier equilibrium of the same batch: the state the system is
    in) or, when ``start`` is None, from every non-input spin drawn uniformly in [-pi, pi) with ``rng``.
    A digital machine also accepts explicit start angles (batch, n_spins)."""

    network: XYNetwork

    def equilibrate(self, params: Params, inputs: np.ndarray, *, nudge: Nudge | None = None,
                    start: "Equilibrium | np.ndarray | None" = None,
                    rng: np.random.Generator | None = None) -> Equilibrium: ...


def check_inputs(network: XYNetwork, inputs: np.ndarray) -> np.ndarray:
    """Input angles as a (batch, n_inputs) float64 array; a wrong count is a ValueError."""
    inputs = np.atleast_2d(np.asarray(inputs, dtype=np.float64))
    if inputs.shape[1] != len(network.inputs):
        raise ValueError(f"expected {len(network.inputs)} input angles per sample, got {inputs.shape[1]}")
    return inputs
