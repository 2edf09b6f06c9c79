"""Relaxation to equilibrium: minimise F(phi) = E(phi) + beta C(phi_out) over the free (non-input) spins.

The physical dynamics is the overdamped gradient flow dphi/dt = -dF/dphi; only its end point (a local minimum)
matters for EP, so any descent method may find it (``solvers``; the default, L-BFGS, needs the fewest force
evaluations, see ``benchmarks/relax.py``). Every solver stops a sample when max_i |force_i| < tol, never after a
fixed number of steps, and reports samples that hit the iteration cap as not converged.

Two back ends give the same numbers to rounding: ``compiled`` (``fused``: one numba loop per sample, samples
spread over threads) and ``numpy`` (the batch in numpy; converged samples are frozen and dropped from the
working batch). ``auto`` takes the compiled one where it applies (numba importable, solver lbfgs or fire, a
built-in cost).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .costs import Cost
from .network import Params, XYNetwork, field_from
from .operators import CouplingOperator
from .solvers import SOLVERS

#: solver used when none is named (chosen by ``benchmarks/relax.py``)
DEFAULT_SOLVER = "lbfgs"
BACKENDS = ("auto", "compiled", "numpy")


@dataclass(frozen=True, eq=False)
class Landscape:
    """F restricted to the free spins for fixed parameters and clamped inputs.

    ``fx + i fy`` (batch, n_free) is the static field on each free spin: its bias h e^{i psi} plus the
    couplings to the clamped inputs sum_j W_ij e^{i phi_j}. ``out`` indexes the outputs among the free spins.
    """

    op: object  # x_free -> (x @ W)_free, see operators
    fx: np.ndarray
    fy: np.ndarray
    out: np.ndarray
    beta: float = 0.0
    cost: Cost | None = None
    targets: np.ndarray | None = None
    curvature_bound: float = 1.0
    general_op: CouplingOperator | None = None  # the same couplings as a dense / CSR matrix when op is not one
    gains: np.ndarray | None = None  # per-output nudge strengths (batch, n_outputs), multiplying beta

    @property
    def matrix(self):
        """The free-free coupling matrix W (dense ndarray or scipy CSR), as the compiled back end needs it."""
        return (self.general_op or self.op).matrix

    def forces(self, phi: np.ndarray) -> np.ndarray:
        """-dF/dphi on the free spins, shape (batch, n_free)."""
        c, s = np.cos(phi), np.sin(phi)
        wc, ws = field_from(self.op, c, s)
        wc += self.fx
        ws += self.fy
        f = c * ws - s * wc
        if self.beta != 0.0:
            f[:, self.out] -= (self.nudge_strength() * self.cost.grad(phi[:, self.out], self.targets)).astype(f.dtype)
        return f

    def nudge_strength(self):
        """beta, or beta * gains per output."""
        return self.beta if self.gains is None else self.beta * self.gains

    def energy(self, phi: np.ndarray) -> np.ndarray:
        """F per sample, up to the constant input-input coupling energy."""
        c, s = np.cos(phi), np.sin(phi)
        wc, ws = field_from(self.op, c, s)
        e = -0.5 * np.sum(c * wc + s * ws, axis=1) - np.sum(c * self.fx + s * self.fy, axis=1)
        if self.beta != 0.0:
            e = e + np.sum(self.nudge_strength() * self.cost.terms(phi[:, self.out], self.targets), axis=1)
        return e

    def take(self, keep: np.ndarray) -> "Landscape":
        """The same landscape for a subset of the batch."""
        targets = None if self.targets is None else self.targets[keep]
        gains = None if self.gains is None else self.gains[keep]
        return Landscape(self.op, self.fx[keep], self.fy[keep], self.out, self.beta, self.cost, targets,
                         self.curvature_bound, self.general_op, gains)


def build_landscape(net: XYNetwork, params: Params, inputs: np.ndarray, *, beta: float = 0.0,
                    cost: Cost | None = None, targets: np.ndarray | None = None, gains: np.ndarray | None = None,
                    dtype=np.float64) -> Landscape:
    """Compile F for a batch of clamped ``inputs`` (batch, n_inputs) and an optional nudge beta * C, or with
    ``gains`` (batch, n_outputs) beta * sum_o g_o C_o."""
    if beta != 0.0 and (cost is None or targets is None):
        raise ValueError("a nudge (beta != 0) needs a cost and targets")
    inputs = np.atleast_2d(np.asarray(inputs, dtype=np.float64))
    free_idx = np.flatnonzero(net.free)
    new_index = np.full(net.n_spins, -1)
    new_index[free_idx] = np.arange(len(free_idx))
    weights = net.bond_weights(params).astype(np.float64)
    a, b = net.edges[:, 0], net.edges[:, 1]
    op = net.free_operator(params, dtype)

    # couplings to clamped inputs: field_i += W_b e^{i phi_j} for bonds (i free, j input)
    input_pos = np.full(net.n_spins, -1)
    input_pos[net.inputs] = np.arange(len(net.inputs))
    mixed = net.free[a] ^ net.free[b]
    f_site = np.where(net.free[a[mixed]], a[mixed], b[mixed])
    i_site = np.where(net.free[a[mixed]], b[mixed], a[mixed])
    m = sp.csr_matrix((weights[mixed], (input_pos[i_site], new_index[f_site])),
                      shape=(len(net.inputs), len(free_idx)))
    hx, hy = net.bias_field(params)
    fx = np.asarray(np.cos(inputs) @ m) + hx[free_idx]
    fy = np.asarray(np.sin(inputs) @ m) + hy[free_idx]

    rows = op.abs_row_sums() + np.asarray(abs(m).sum(axis=0)).ravel() + np.abs(params.h[free_idx])
    g = None if gains is None or beta == 0.0 else np.broadcast_to(gains, (len(inputs), len(net.outputs))).astype(dtype)
    curvature = 2.0 * float(rows.max(initial=0.0)) + abs(beta) * (1.0 if g is None else max(float(g.max()), 1.0))
    tg = None if targets is None else np.atleast_2d(targets).astype(dtype)
    general = net.free_operator(params, dtype, general=True) if net.uses_blocks else None
    return Landscape(op, fx.astype(dtype), fy.astype(dtype), new_index[net.outputs], float(beta), cost, tg,
                     max(curvature, 1e-12), general, g)


@dataclass(frozen=True)
class RelaxResult:
    """Per-sample outcome: end phases (batch, n_free), converged flag, iterations used, final max|force|."""

    phases: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray
    max_force: np.ndarray

    @property
    def n_unconverged(self) -> int:
        return int(np.count_nonzero(~self.converged))


def _take_state(state: dict, keep: np.ndarray) -> dict:
    """The solver state of the samples ``keep`` (arrays with the batch on axis 0; scalars stay)."""
    return {k: (v[keep] if isinstance(v, np.ndarray) and v.ndim and len(v) == len(keep) else v)
            for k, v in state.items()}


def minimise(land: Landscape, phi0: np.ndarray, *, solver=DEFAULT_SOLVER, tol: float = 1e-4,
             max_iter: int = 20000, backend: str = "auto", threads: int | None = None) -> RelaxResult:
    """Relax every sample of ``phi0`` (batch, n_free) until max|force| < tol or ``max_iter`` steps.

    ``solver``: a name in ``solvers.SOLVERS`` or a solver object; ``backend``: "auto", "compiled" or "numpy";
    ``threads``: threads of the compiled back end (default: numba's, all cores; results do not depend on it).
    Raises FloatingPointError if any force becomes NaN or infinite (never returned as a value)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown relaxation backend {backend!r}; choose from {BACKENDS}")
    phi0 = np.asarray(phi0)
    why_not = compiled_unavailable(land, solver)
    if backend == "compiled" and why_not:
        raise ValueError(f"the compiled relaxation cannot run this: {why_not}")
    if backend != "numpy" and not why_not and phi0.shape[1] > 0:
        from .fused import relax_compiled

        return RelaxResult(*relax_compiled(land, phi0, solver, tol, max_iter, threads))
    return _minimise_numpy(land, phi0, SOLVERS[solver]() if isinstance(solver, str) else solver, tol, max_iter)


def compiled_unavailable(land: Landscape, solver) -> str:
    """Why the compiled back end cannot relax ``land`` with ``solver`` ("" when it can)."""
    if not isinstance(solver, str) or solver not in ("lbfgs", "fire"):
        return f"solver {solver!r} exists in numpy only (compiled: lbfgs, fire)"
    if land.beta != 0.0 and getattr(land.cost, "name", None) not in ("cosine", "log_cosine"):
        return f"cost {land.cost!r} is not built into the compiled loop"
    if importlib.util.find_spec("numba") is None:
        return "numba is not installed"
    return ""


def _minimise_numpy(land: Landscape, phi0: np.ndarray, stepper, tol: float, max_iter: int) -> RelaxResult:
    phi = np.array(phi0, copy=True)
    n = len(phi)
    out = np.empty_like(phi)
    iterations = np.full(n, max_iter, dtype=np.int64)
    max_force = np.empty(n, dtype=np.float64)
    converged = np.zeros(n, dtype=bool)
    idx = np.arange(n)
    state = stepper.start(land, phi)
    for it in range(max_iter + 1):
        force = land.forces(phi)
        fmax = np.abs(force).max(axis=1) if force.shape[1] else np.zeros(len(phi), phi.dtype)
        if not np.isfinite(fmax.max()):
            raise FloatingPointError(f"relaxation produced non-finite forces at iteration {it}")
        done = fmax < tol
        if it == max_iter:
            done[:] = True
        if done.any():
            out[idx[done]] = phi[done]
            iterations[idx[done]] = it
            max_force[idx[done]] = fmax[done]
            converged[idx[done]] = fmax[done] < tol
            keep = ~done
            if not keep.any():
                break
            phi, force, idx = phi[keep], force[keep], idx[keep]
            land, state = land.take(keep), _take_state(state, keep)
        phi = stepper.step(land, phi, force, state)
    return RelaxResult(out, converged, iterations, max_force)
