"""Relaxation to equilibrium: minimise F(phi) = E(phi) + beta C(phi_out) over the free (non-input) spins.

The physical dynamics is the overdamped gradient flow dphi/dt = -dF/dphi; only its end point (a local
minimum) matters for EP, so the default solver is FIRE (Bitzek et al., PRL 97, 170201 (2006)): damped inertial
dynamics whose step grows while the power F.v stays positive, with a restart on every uphill move. Both
solvers stop a sample when max_i |force_i| < tol and report samples that hit the iteration cap as not converged.
Converged samples are frozen and dropped from the working batch, so the cost follows the slowest samples only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .costs import Cost
from .network import Params, XYNetwork, field_from

#: FIRE constants (Bitzek et al. 2006), and the largest angle (rad) any spin may move in one step.
FIRE_N_MIN, FIRE_F_INC, FIRE_F_DEC, FIRE_ALPHA0, FIRE_F_ALPHA = 5, 1.1, 0.5, 0.1, 0.99
MAX_STEP_RAD = 0.3


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

    def forces(self, phi: np.ndarray) -> np.ndarray:
        """-dF/dphi on the free spins, shape (batch, n_free)."""
        c, s = np.cos(phi), np.sin(phi)
        wc, ws = field_from(self.op, c, s)
        wc += self.fx
        ws += self.fy
        f = c * ws - s * wc
        if self.beta != 0.0:
            f[:, self.out] -= (self.beta * self.cost.grad(phi[:, self.out], self.targets)).astype(f.dtype)
        return f

    def energy(self, phi: np.ndarray) -> np.ndarray:
        """F per sample, up to the constant input-input coupling energy."""
        c, s = np.cos(phi), np.sin(phi)
        wc, ws = field_from(self.op, c, s)
        e = -0.5 * np.sum(c * wc + s * ws, axis=1) - np.sum(c * self.fx + s * self.fy, axis=1)
        if self.beta != 0.0:
            e = e + self.beta * self.cost.value(phi[:, self.out], self.targets)
        return e

    def take(self, keep: np.ndarray) -> "Landscape":
        """The same landscape for a subset of the batch."""
        targets = None if self.targets is None else self.targets[keep]
        return Landscape(self.op, self.fx[keep], self.fy[keep], self.out, self.beta, self.cost, targets,
                         self.curvature_bound)


def build_landscape(net: XYNetwork, params: Params, inputs: np.ndarray, *, beta: float = 0.0,
                    cost: Cost | None = None, targets: np.ndarray | None = None,
                    dtype=np.float64) -> Landscape:
    """Compile F for a batch of clamped ``inputs`` (batch, n_inputs) and an optional nudge beta * C."""
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
    curvature = 2.0 * float(rows.max(initial=0.0)) + abs(beta)
    tg = None if targets is None else np.atleast_2d(targets).astype(dtype)
    return Landscape(op, fx.astype(dtype), fy.astype(dtype), new_index[net.outputs], float(beta), cost, tg,
                     max(curvature, 1e-12))


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


class FIRE:
    """FIRE minimiser with per-sample time step and mixing; the step never moves a spin more than
    MAX_STEP_RAD. Time steps are in units of 1/sqrt(curvature bound)."""

    name = "fire"

    def __init__(self, dt_max: float = 2.0, dt_start: float = 0.25):
        self.dt_max, self.dt_start = dt_max, dt_start

    def start(self, land: Landscape, phi: np.ndarray) -> dict:
        scale = 1.0 / np.sqrt(land.curvature_bound)
        b, dtype = len(phi), phi.dtype
        return {"v": np.zeros_like(phi), "dt": np.full((b, 1), self.dt_start * scale, dtype),
                "alpha": np.full((b, 1), FIRE_ALPHA0, dtype), "n_pos": np.zeros(b, np.int64),
                "dt_max": dtype.type(self.dt_max * scale)}

    def step(self, land: Landscape, phi: np.ndarray, force: np.ndarray, st: dict) -> np.ndarray:
        v, dt, alpha, n_pos = st["v"], st["dt"], st["alpha"], st["n_pos"]
        uphill = (force * v).sum(axis=1) < 0.0
        n_pos += 1
        if uphill.any():  # restart: stop, shrink the step, reset the mixing
            n_pos[uphill] = 0
            dt[uphill] *= FIRE_F_DEC
            alpha[uphill] = FIRE_ALPHA0
            v[uphill] = 0.0
        grow = n_pos > FIRE_N_MIN
        if grow.any():
            dt[grow] = np.minimum(dt[grow] * FIRE_F_INC, st["dt_max"])
            alpha[grow] *= FIRE_F_ALPHA
        v += dt * force
        v_norm = np.sqrt((v * v).sum(axis=1, keepdims=True))
        f_norm = np.sqrt((force * force).sum(axis=1, keepdims=True))
        v *= 1.0 - alpha
        v += (alpha * v_norm / np.maximum(f_norm, 1e-30)) * force
        dx = dt * v
        biggest = np.abs(dx).max(axis=1, keepdims=True)
        if biggest.max() > MAX_STEP_RAD:
            dx *= np.minimum(1.0, MAX_STEP_RAD / biggest)
        return phi + dx


class GradientFlow:
    """Plain forward-Euler integration of dphi/dt = force with the fixed step dt = 1.8 / curvature bound
    (stable since the Hessian's eigenvalues never exceed the Gershgorin bound)."""

    name = "euler"

    def start(self, land: Landscape, phi: np.ndarray) -> dict:
        return {"dt": phi.dtype.type(1.8 / land.curvature_bound)}

    def step(self, land: Landscape, phi: np.ndarray, force: np.ndarray, st: dict) -> np.ndarray:
        return phi + st["dt"] * force


SOLVERS = {"fire": FIRE, "euler": GradientFlow}


def _take_state(state: dict, keep: np.ndarray) -> dict:
    return {k: (v[keep] if isinstance(v, np.ndarray) and v.ndim and len(v) == len(keep) else v)
            for k, v in state.items()}


def minimise(land: Landscape, phi0: np.ndarray, *, solver: str = "fire", tol: float = 1e-4,
             max_iter: int = 20000) -> RelaxResult:
    """Relax every sample of ``phi0`` (batch, n_free) until max|force| < tol or ``max_iter`` steps.

    Raises FloatingPointError if any force becomes NaN or infinite (never returned as a value)."""
    stepper = SOLVERS[solver]() if isinstance(solver, str) else solver
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
