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
    """Weak pull of the outputs toward ``targets`` (batch, n_outputs; radians): adds beta * cost to E."""

    beta: float
    targets: np.ndarray
    cost: Cost


@dataclass(frozen=True)
class Equilibrium:
    """Equilibrium angles of a batch, shape (batch, n_spins) with the inputs included.

    ``converged`` says per sample whether the machine reached its stopping rule, ``iterations`` how many steps
    it took, ``residual`` the remaining max|force| (digital) or readout error figure (optical); ``quality`` holds
    any further per-sample figures a machine measures."""

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
