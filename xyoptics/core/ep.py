"""Equilibrium propagation (Scellier & Bengio 2017) on any ``XYMachine``.

For L(theta) = C(phi0(theta)) with phi0 a free equilibrium and phi^beta the equilibrium of E + beta C reached
from phi0, the gradient estimate is

    one-sided:  g = < dE/dtheta(phi^beta) - dE/dtheta(phi0) > / beta               (bias O(beta))
    symmetric:  g = < dE/dtheta(phi^beta) - dE/dtheta(phi^-beta) > / (2 beta)      (bias O(beta^2))

averaged over the batch and over ``m_init`` random starts per sample (every non-input spin re-drawn uniformly
in [-pi, pi) at each call). For a coupling this needs only measured pair correlations cos(phi_i - phi_j).

Only usable samples enter the average (``Equilibrium.usable``: converged, no readout flag, in the free and in
every nudged phase). A sample that is not usable is measured again, free and nudged, from a fresh random start,
up to ``max_remeasure`` times; one that stays unusable is dropped. When fewer than ``min_good_fraction`` of the
samples (or none) are usable, the estimate has no gradient (``skipped``) and the step must not update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .costs import Cost, adaptive_gains
from .machine import Equilibrium, Nudge, XYMachine
from .network import Params

VARIANTS = ("one_sided", "symmetric")


@dataclass(frozen=True)
class EPEstimate:
    """EP gradient ``grad`` (float64; None when the step is ``skipped``) averaged over the ``kept`` samples,
    with the equilibria it came from (after re-measurement); ``cost`` is the mean free-phase cost per kept
    sample (nan when none was kept); samples are the batch repeated ``m_init`` times; ``remeasured`` counts
    the samples measured again."""

    grad: Params | None
    free: Equilibrium
    nudged: tuple[Equilibrium, ...]
    cost: float
    kept: np.ndarray | None = None
    remeasured: int = 0

    @property
    def n_unconverged(self) -> int:
        return self.free.n_unconverged + sum(e.n_unconverged for e in self.nudged)

    @property
    def n_dropped(self) -> int:
        return 0 if self.kept is None else int(np.count_nonzero(~self.kept))

    @property
    def skipped(self) -> bool:
        return self.grad is None


def _mean_param_gradient(machine: XYMachine, params: Params, eq: Equilibrium, rows: np.ndarray) -> Params:
    g = machine.network.parameter_gradients(params.astype(eq.phases.dtype), eq.phases[rows])
    return g.map(lambda a: a.mean(axis=0, dtype=np.float64))


def _usable(free: Equilibrium, nudged: tuple[Equilibrium, ...]) -> np.ndarray:
    good = free.usable
    for eq in nudged:
        good = good & eq.usable
    return good


def ep_gradient(machine: XYMachine, params: Params, inputs: np.ndarray, targets: np.ndarray, *,
                beta: float, cost: Cost, rng: np.random.Generator, variant: str = "one_sided",
                m_init: int = 1, start: np.ndarray | None = None, max_remeasure: int = 0,
                min_good_fraction: float = 0.0, adaptive_max_gain: float | None = None) -> EPEstimate:
    """EP estimate of dL/dtheta for a batch of ``inputs`` (batch, n_inputs) and ``targets``
    (batch, n_outputs). The free phase starts from random angles drawn with ``rng`` (or from explicit
    ``start`` angles, shape (batch * m_init, n_spins)); nudged phases start from the free equilibrium.
    Unusable samples are re-measured and dropped as the module docstring says. ``adaptive_max_gain``: an
    adaptive nudge, each output's strength beta * g_o set from its free angle (``costs.adaptive_gains``, capped
    at this gain, and at what a rig can inject: ``machine.max_nudge_strength`` / beta) so that a cosine nudge
    pulls with the log-cosine cost's force at the free state."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown EP variant {variant!r}; choose from {VARIANTS}")
    if beta <= 0:
        raise ValueError("beta must be positive")
    if m_init < 1:
        raise ValueError("m_init must be at least 1")
    x = np.tile(np.atleast_2d(inputs), (m_init, 1))
    y = np.tile(np.atleast_2d(targets), (m_init, 1))
    if max_remeasure < 0 or not 0.0 <= min_good_fraction <= 1.0:
        raise ValueError("max_remeasure must be >= 0 and min_good_fraction within [0, 1]")
    signs = (1.0,) if variant == "one_sided" else (1.0, -1.0)

    max_gain = adaptive_max_gain
    limit = getattr(machine, "max_nudge_strength", None)  # what a rig can inject at most
    if max_gain is not None and limit is not None:
        if limit < 0.5 * beta:
            raise ValueError(f"beta = {beta} is more than twice the strongest nudge the rig injects ({limit:.3g}); "
                             f"an adaptive nudge needs beta <= {2 * limit:.3g}")
        max_gain = min(max_gain, limit / beta)

    def measure(rows, start_angles):
        f = machine.equilibrate(params, x[rows], start=start_angles, rng=rng)
        gains = None if max_gain is None else adaptive_gains(f.phases[:, machine.network.outputs], y[rows], max_gain)
        return f, tuple(machine.equilibrate(params, x[rows], nudge=Nudge(s * beta, y[rows], cost, gains), start=f)
                        for s in signs)

    everything = np.arange(len(x))
    free, nudged = measure(everything, start)
    good, remeasured = _usable(free, nudged), 0
    for _ in range(max_remeasure):
        bad = np.flatnonzero(~good)
        if not len(bad):
            break
        f, n = measure(bad, None)  # a fresh random start
        free, nudged = free.with_rows(bad, f), tuple(a.with_rows(bad, b) for a, b in zip(nudged, n))
        good, remeasured = _usable(free, nudged), remeasured + len(bad)
    kept = np.flatnonzero(good)
    out = machine.network.outputs
    free_cost = (float(np.mean(cost.value(free.phases[kept][:, out].astype(np.float64), y[kept])))
                 if len(kept) else float("nan"))
    if not len(kept) or len(kept) < min_good_fraction * len(x):
        return EPEstimate(None, free, nudged, free_cost, good, remeasured)
    top = _mean_param_gradient(machine, params, nudged[0], kept)
    bottom = _mean_param_gradient(machine, params, nudged[1] if len(nudged) == 2 else free, kept)
    scale = beta * (2.0 if len(nudged) == 2 else 1.0)
    grad = top.map(lambda a, b: (a - b) / scale, bottom)
    for name, g in grad.as_dict().items():
        if not np.all(np.isfinite(g)):
            raise FloatingPointError(f"EP gradient for {name!r} is not finite")
    return EPEstimate(grad, free, nudged, free_cost, good, remeasured)
