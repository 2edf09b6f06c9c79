"""``DigitalXYMachine``: the XYMachine seam implemented by numerical relaxation of the model energy."""

from __future__ import annotations

import numpy as np

from .machine import Equilibrium, Nudge, check_inputs
from .network import Params, XYNetwork
from .relax import DEFAULT_SOLVER, build_landscape, minimise


class DigitalXYMachine:
    """Relaxes E + beta C with ``solver`` (a name in ``solvers.SOLVERS``) to max|force| < ``tol`` (energy units
    per radian) or ``max_iter`` steps, in ``dtype``, on the relaxation ``backend`` with ``threads`` threads
    (``relax.minimise``). Free and nudged phases use the same solver and tolerance."""

    def __init__(self, network: XYNetwork, *, solver: str = DEFAULT_SOLVER, tol: float = 1e-4,
                 max_iter: int = 20000, dtype=np.float32, backend: str = "auto", threads: int | None = None):
        self.network = network
        self.solver, self.tol, self.max_iter = solver, float(tol), int(max_iter)
        self.dtype = np.dtype(dtype)
        self.backend, self.threads = backend, threads

    def equilibrate(self, params: Params, inputs: np.ndarray, *, nudge: Nudge | None = None,
                    start: Equilibrium | np.ndarray | None = None,
                    rng: np.random.Generator | None = None) -> Equilibrium:
        net = self.network
        inputs = check_inputs(net, inputs)
        if start is None:
            if rng is None:
                raise ValueError("a random start needs an explicit numpy Generator (rng)")
            phases = net.random_phases(rng, inputs)
        else:
            start = start.phases if isinstance(start, Equilibrium) else np.atleast_2d(start)
            if start.shape != (len(inputs), net.n_spins):
                raise ValueError(f"start has shape {start.shape}, expected {(len(inputs), net.n_spins)}")
            phases = net.with_inputs(start, inputs)
        beta, cost, targets, gains = ((0.0, None, None, None) if nudge is None else
                                      (nudge.beta, nudge.cost, nudge.targets, nudge.gains))
        land = build_landscape(net, params, inputs, beta=beta, cost=cost, targets=targets, gains=gains,
                               dtype=self.dtype)
        res = minimise(land, phases[:, net.free].astype(self.dtype), solver=self.solver, tol=self.tol,
                       max_iter=self.max_iter, backend=self.backend, threads=self.threads)
        full = phases.astype(self.dtype)
        full[:, net.free] = res.phases
        return Equilibrium(full, res.converged, res.iterations, res.max_force)
