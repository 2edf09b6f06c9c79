"""Minimisers of F(phi) over the free spins, in numpy, one batch at a time.

Every solver follows one protocol: ``start(land, phi)`` returns a per-sample state (arrays with the batch on
axis 0), ``step(land, phi, force, state)`` returns the next point to evaluate. ``relax.minimise`` evaluates the
force there, stops each sample once max_i |force_i| < tol and drops it from the batch. Only the end point (a
local minimum) matters for EP, so any descent scheme is legitimate; they differ in how many force evaluations
they need (``benchmarks/relax.py`` measures them side by side). No step moves a spin by more than
MAX_STEP_RAD. Time steps are in units of 1/sqrt(L) and gradient steps in units of 1/L, where L is the
Gershgorin bound on the Hessian (``Landscape.curvature_bound``, energy units per rad^2).

* ``lbfgs`` (default): limited-memory BFGS (Nocedal, Math. Comp. 35, 773 (1980)) with the last LBFGS_MEMORY
  pairs, no line search; a quasi-Newton trial that raises F by more than rounding is rejected and the memory
  cleared, so F never rises by more than rounding and every accepted step is a descent step.
* ``fire``: FIRE (Bitzek et al., PRL 97, 170201 (2006)); ``fire2``: FIRE 2.0 (Guenole et al., Comput. Mater.
  Sci. 175, 109584 (2020)): longer latency before the step grows, larger mixing, half a step back on restart.
* ``nesterov``: accelerated gradient with the momentum (k - 1) / (k + 2) and gradient restart (O'Donoghue &
  Candes, Found. Comput. Math. 15, 715 (2015)).
* ``euler``: the plain overdamped gradient flow, forward Euler with dt = 1.8 / L.
"""

from __future__ import annotations

import numpy as np

#: the largest angle (rad) any spin may move in one step
MAX_STEP_RAD = 0.3
#: FIRE constants (Bitzek et al. 2006)
FIRE_N_MIN, FIRE_F_INC, FIRE_F_DEC, FIRE_ALPHA0, FIRE_F_ALPHA = 5, 1.1, 0.5, 0.1, 0.99
#: FIRE 2.0 constants (Guenole et al. 2020): latency, initial mixing, largest and smallest time step
FIRE2_DELAY, FIRE2_ALPHA0, FIRE2_DT_MAX, FIRE2_DT_MIN = 20, 0.25, 10.0, 0.02
#: curvature pairs kept by L-BFGS
LBFGS_MEMORY = 8


def capped(dx: np.ndarray) -> np.ndarray:
    """``dx`` scaled per sample so that no spin moves more than MAX_STEP_RAD."""
    biggest = np.abs(dx).max(axis=1, keepdims=True)
    if biggest.size and biggest.max() > MAX_STEP_RAD:
        dx = dx * np.minimum(1.0, MAX_STEP_RAD / biggest)
    return dx


def rounding_allowance(energy: np.ndarray, n_free: int) -> np.ndarray:
    """How much F may appear to rise from rounding alone: 4 eps (|F| + n_free), in energy units."""
    return 4.0 * np.finfo(energy.dtype).eps * (np.abs(energy) + n_free)


class FIRE:
    """FIRE with per-sample time step and mixing, semi-implicit Euler steps. The defaults are the constants of
    Bitzek et al.: the step grows after FIRE_N_MIN downhill steps; an uphill move (force . v < 0) stops the
    spins, halves the step and resets the mixing to ``alpha0``."""

    name = "fire"

    def __init__(self, dt_max: float = 2.0, dt_start: float = 0.25, n_min: int = FIRE_N_MIN,
                 alpha0: float = FIRE_ALPHA0, dt_min: float = 0.0, half_step_back: bool = False):
        self.dt_max, self.dt_start, self.n_min, self.alpha0 = dt_max, dt_start, n_min, alpha0
        self.dt_min, self.half_step_back = dt_min, half_step_back

    def start(self, land, phi: np.ndarray) -> dict:
        scale = 1.0 / np.sqrt(land.curvature_bound)
        b, dtype = len(phi), phi.dtype
        return {"v": np.zeros_like(phi), "dt": np.full((b, 1), self.dt_start * scale, dtype),
                "alpha": np.full((b, 1), self.alpha0, dtype), "n_pos": np.zeros(b, np.int64),
                "steps": np.zeros(b, np.int64), "dt_max": dtype.type(self.dt_max * scale),
                "dt_min": dtype.type(self.dt_min * scale)}

    def step(self, land, phi: np.ndarray, force: np.ndarray, st: dict) -> np.ndarray:
        v, dt, alpha, n_pos = st["v"], st["dt"], st["alpha"], st["n_pos"]
        uphill = (force * v).sum(axis=1) < 0.0
        n_pos += 1
        st["steps"] += 1
        back = 0.0
        if uphill.any():  # restart: stop, shrink the step (FIRE 2.0: not in the first steps), reset the mixing
            n_pos[uphill] = 0
            shrink = uphill & (st["steps"] > (self.n_min if self.half_step_back else 0))
            dt[shrink] = np.maximum(dt[shrink] * FIRE_F_DEC, st["dt_min"])
            alpha[uphill] = self.alpha0
            if self.half_step_back:
                back = np.where(uphill[:, None], -0.5 * dt * v, 0.0)
            v[uphill] = 0.0
        grow = n_pos > self.n_min
        if grow.any():
            dt[grow] = np.minimum(dt[grow] * FIRE_F_INC, st["dt_max"])
            alpha[grow] *= FIRE_F_ALPHA
        v += dt * force
        v_norm = np.sqrt((v * v).sum(axis=1, keepdims=True))
        f_norm = np.sqrt((force * force).sum(axis=1, keepdims=True))
        v *= 1.0 - alpha
        v += (alpha * v_norm / np.maximum(f_norm, 1e-30)) * force
        return phi + capped(back + dt * v)


class FIRE2(FIRE):
    """FIRE 2.0 (Guenole et al. 2020): the step grows only after FIRE2_DELAY downhill steps and does not shrink
    within the first FIRE2_DELAY steps, mixing starts at FIRE2_ALPHA0, an uphill move first goes back half a
    step, and the time step stays within [FIRE2_DT_MIN, FIRE2_DT_MAX]."""

    name = "fire2"

    def __init__(self):
        super().__init__(dt_max=FIRE2_DT_MAX, dt_start=1.0, n_min=FIRE2_DELAY, alpha0=FIRE2_ALPHA0,
                         dt_min=FIRE2_DT_MIN, half_step_back=True)


class Nesterov:
    """Accelerated gradient descent: x' = y + force(y) / L, y' = x' + (k - 1)/(k + 2) (x' - x); the momentum
    restarts (k = 0) whenever force(y) . (x' - x) < 0. The points evaluated are the look-ahead points y."""

    name = "nesterov"

    def start(self, land, phi: np.ndarray) -> dict:
        return {"x": phi.copy(), "k": np.zeros((len(phi), 1), phi.dtype),
                "eta": phi.dtype.type(1.0 / land.curvature_bound)}

    def step(self, land, phi: np.ndarray, force: np.ndarray, st: dict) -> np.ndarray:
        x_new = phi + capped(st["eta"] * force)
        v = x_new - st["x"]
        k = st["k"]
        restart = (force * v).sum(axis=1) < 0.0
        k[restart] = 0.0
        v[restart] = 0.0
        k += 1.0
        st["x"] = x_new
        return x_new + (k - 1.0) / (k + 2.0) * v


class GradientFlow:
    """Plain forward-Euler integration of dphi/dt = force with the fixed step dt = 1.8 / L (stable since the
    Hessian's eigenvalues never exceed the Gershgorin bound L)."""

    name = "euler"

    def start(self, land, phi: np.ndarray) -> dict:
        return {"dt": phi.dtype.type(1.8 / land.curvature_bound)}

    def step(self, land, phi: np.ndarray, force: np.ndarray, st: dict) -> np.ndarray:
        return phi + st["dt"] * force


class LBFGS:
    """L-BFGS over the batch, each sample with its own memory of LBFGS_MEMORY pairs (s, y) = (step, change of
    -force), newest first. The two-loop recursion gives d = H force with H0 = (s.y / y.y) of the newest pair
    (1 / L with an empty memory). A trial point whose F exceeds the last accepted F by more than rounding is
    rejected when it came from a quasi-Newton step: the memory is cleared and a gradient step force / L is
    taken from the last accepted point instead (a gradient step of 1/L cannot raise F). Pairs with
    s.y <= 0 are not stored; a direction with d.force <= 0 falls back to the gradient step."""

    name = "lbfgs"

    def __init__(self, memory: int = LBFGS_MEMORY):
        self.memory = memory

    def start(self, land, phi: np.ndarray) -> dict:
        b, n = phi.shape
        return {"s": np.zeros((b, self.memory, n), phi.dtype), "y": np.zeros((b, self.memory, n), phi.dtype),
                "rho": np.zeros((b, self.memory), phi.dtype), "x": phi.copy(), "f": np.zeros_like(phi),
                "e": np.full(b, np.inf, phi.dtype), "quasi": np.zeros(b, bool),
                "h0": phi.dtype.type(1.0 / land.curvature_bound)}

    def step(self, land, phi: np.ndarray, force: np.ndarray, st: dict) -> np.ndarray:
        energy = land.energy(phi).astype(phi.dtype)
        reject = st["quasi"] & (energy > st["e"] + rounding_allowance(st["e"], phi.shape[1]))
        accept = ~reject
        first = ~np.isfinite(st["e"])
        pair = accept & ~first
        if pair.any():
            s = phi - st["x"]
            y = st["f"] - force
            sy = np.einsum("bn,bn->b", s, y)
            store = pair & (sy > 0)
            if store.any():
                for key, new in (("s", s), ("y", y)):
                    st[key][store] = np.roll(st[key][store], 1, axis=1)
                    st[key][store, 0] = new[store]
                st["rho"][store] = np.roll(st["rho"][store], 1, axis=1)
                st["rho"][store, 0] = 1.0 / sy[store]
        st["rho"][reject] = 0.0
        st["x"][accept], st["f"][accept], st["e"][accept] = phi[accept], force[accept], energy[accept]
        d = self._direction(st)
        d[reject] = st["h0"] * st["f"][reject]
        downhill = np.einsum("bn,bn->b", d, st["f"]) > 0
        quasi = (st["rho"][:, 0] > 0) & downhill & accept
        fallback = ~downhill & accept
        if fallback.any():
            st["rho"][fallback] = 0.0
            d[fallback] = st["h0"] * st["f"][fallback]
        st["quasi"] = quasi
        return st["x"] + capped(d)

    def _direction(self, st: dict) -> np.ndarray:
        """Two-loop recursion d = H f on every sample (slots with rho = 0 do nothing)."""
        s, y, rho = st["s"], st["y"], st["rho"]
        q = st["f"].copy()
        alphas = []
        for j in range(self.memory):
            a = rho[:, j] * np.einsum("bn,bn->b", s[:, j], q)
            alphas.append(a)
            q -= a[:, None] * y[:, j]
        yy = np.einsum("bn,bn->b", y[:, 0], y[:, 0])
        gamma = np.where((rho[:, 0] > 0) & (yy > 0), 1.0 / np.maximum(rho[:, 0] * yy, 1e-30), st["h0"])
        r = gamma.astype(q.dtype)[:, None] * q
        for j in reversed(range(self.memory)):
            bj = rho[:, j] * np.einsum("bn,bn->b", y[:, j], r)
            r += (alphas[j] - bj)[:, None] * s[:, j]
        return r


SOLVERS = {cls.name: cls for cls in (LBFGS, FIRE, FIRE2, Nesterov, GradientFlow)}
