"""Equilibrium propagation (Scellier & Bengio 2017) on any ``XYMachine``.

For L(theta) = C(phi0(theta)) with phi0 a free equilibrium and phi^beta the equilibrium of E + beta C reached
from phi0, the gradient estimate is

    one-sided:  g = < dE/dtheta(phi^beta) - dE/dtheta(phi0) > / beta               (bias O(beta))
    symmetric:  g = < dE/dtheta(phi^beta) - dE/dtheta(phi^-beta) > / (2 beta)      (bias O(beta^2))

averaged over the batch and over ``m_init`` random starts per sample (every non-input spin re-drawn uniformly
in [-pi, pi) at each call). For a coupling this needs only measured pair correlations cos(phi_i - phi_j).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .costs import Cost
from .machine import Equilibrium, Nudge, XYMachine
from .network import Params

VARIANTS = ("one_sided", "symmetric")


@dataclass(frozen=True)
class EPEstimate:
    """EP gradient ``grad`` (float64) with the equilibria it came from; ``cost`` is the mean free-phase cost
    per sample; samples are the batch repeated ``m_init`` times."""

    grad: Params
    free: Equilibrium
    nudged: tuple[Equilibrium, ...]
    cost: float

    @property
    def n_unconverged(self) -> int:
        return self.free.n_unconverged + sum(e.n_unconverged for e in self.nudged)


def _mean_param_gradient(machine: XYMachine, params: Params, eq: Equilibrium) -> Params:
    g = machine.network.parameter_gradients(params.astype(eq.phases.dtype), eq.phases)
    return g.map(lambda a: a.mean(axis=0, dtype=np.float64))


def ep_gradient(machine: XYMachine, params: Params, inputs: np.ndarray, targets: np.ndarray, *,
                beta: float, cost: Cost, rng: np.random.Generator, variant: str = "one_sided",
                m_init: int = 1, start: np.ndarray | None = None) -> EPEstimate:
    """EP estimate of dL/dtheta for a batch of ``inputs`` (batch, n_inputs) and ``targets``
    (batch, n_outputs). The free phase starts from random angles drawn with ``rng`` (or from explicit
    ``start`` angles, shape (batch * m_init, n_spins)); nudged phases start from the free equilibrium."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown EP variant {variant!r}; choose from {VARIANTS}")
    if beta <= 0:
        raise ValueError("beta must be positive")
    if m_init < 1:
        raise ValueError("m_init must be at least 1")
    x = np.tile(np.atleast_2d(inputs), (m_init, 1))
    y = np.tile(np.atleast_2d(targets), (m_init, 1))
    free = machine.equilibrate(params, x, start=start, rng=rng)
    signs = (1.0,) if variant == "one_sided" else (1.0, -1.0)
    nudged = tuple(machine.equilibrate(params, x, nudge=Nudge(s * beta, y, cost), start=free) for s in signs)
    top = _mean_param_gradient(machine, params, nudged[0])
    bottom = _mean_param_gradient(machine, params, nudged[1] if len(nudged) == 2 else free)
    scale = beta * (2.0 if len(nudged) == 2 else 1.0)
    grad = top.map(lambda a, b: (a - b) / scale, bottom)
    for name, g in grad.as_dict().items():
        if not np.all(np.isfinite(g)):
            raise FloatingPointError(f"EP gradient for {name!r} is not finite")
    out = machine.network.outputs
    free_cost = float(np.mean(cost.value(free.phases[:, out].astype(np.float64), y)))
    return EPEstimate(grad, free, nudged, free_cost)
