"""Compiled relaxation: the whole minimisation of one sample in one numba loop, samples spread over threads.

Each sample runs its own loop (force and energy from one pass over the couplings, then an L-BFGS or FIRE
step, exactly as ``solvers.LBFGS`` / ``solvers.FIRE`` do for a batch in numpy) until max_i |force_i| < tol, so
no interpreter work is done per iteration and a converged sample costs nothing more. The loop releases the
GIL, so chunks of the batch run on a pool of threads side by side. Samples never interact, so every thread
count gives bit-for-bit the same result (each sample is computed by the same code, start to end, on one
thread).

Force and energy of F = E + beta C on free spin i, with (wc_i, ws_i) = sum_j W_ij (cos phi_j, sin phi_j) over
free j and (fx_i, fy_i) the static field (bias plus clamped inputs):

    force_i = cos phi_i (ws_i + fy_i) - sin phi_i (wc_i + fx_i) - beta dC/dphi_i
    F       = -sum_i [ (cos phi_i wc_i + sin phi_i ws_i) / 2 + cos phi_i fx_i + sin phi_i fy_i ] + beta C

In float32 the sines and cosines come from a polynomial (Cody-Waite reduction to [-pi/4, pi/4], then the
minimax polynomials of Cephes' sinf/cosf, about 1 ulp) that the compiler vectorises; float64 uses libm.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit, types
from numba.extending import overload

from .solvers import FIRE_ALPHA0, FIRE_F_ALPHA, FIRE_F_DEC, FIRE_F_INC, FIRE_N_MIN, LBFGS_MEMORY, MAX_STEP_RAD

FAST = {"contract", "reassoc"}  # FMA and reordered sums; never 'nnan' / 'ninf' (NaN must stay detectable)
SOLVER_CODES = {"lbfgs": 0, "fire": 1}
COST_CODES = {None: 0, "cosine": 1, "log_cosine": 2}
CONVERGED, CAPPED, NON_FINITE = 1, 0, 2

# float32 constants: pi/2 split in three parts (Cody-Waite), the sin / cos polynomial coefficients
_TWO_OVER_PI = np.float32(2.0 / np.pi)
_PIO2_1, _PIO2_2, _PIO2_3 = np.float32(1.5703125), np.float32(4.837512969970703125e-4), \
    np.float32(7.54978995489188216e-8)
_S1, _S2, _S3 = np.float32(-1.6666654611e-1), np.float32(8.3321608736e-3), np.float32(-1.9515295891e-4)
_C1, _C2, _C3 = np.float32(4.166664568298827e-2), np.float32(-1.388731625493765e-3), \
    np.float32(2.443315711809948e-5)
_HALF, _ONE = np.float32(0.5), np.float32(1.0)


def sincos(x):
    """(sin x, cos x); compiled versions only (see the overload)."""
    return math.sin(x), math.cos(x)


def _sincos32(x):
    """Branch-free (so that loops over it vectorise): x = k pi/2 + r, |r| <= pi/4, then swap and sign by k."""
    k = np.floor(x * _TWO_OVER_PI + _HALF)
    r = ((x - k * _PIO2_1) - k * _PIO2_2) - k * _PIO2_3
    z = r * r
    sr = r + r * z * (_S1 + z * (_S2 + z * _S3))
    cr = _ONE - _HALF * z + z * z * (_C1 + z * (_C2 + z * _C3))
    q = np.int32(k)
    swap = (q & 1) == 1
    s = cr if swap else sr
    c = sr if swap else cr
    return s * np.float32(1 - 2 * ((q >> 1) & 1)), c * np.float32(1 - 2 * (((q + 1) >> 1) & 1))


def _sincos64(x):
    return math.sin(x), math.cos(x)


@overload(sincos, jit_options={"fastmath": FAST})
def _sincos_overload(x):
    return _sincos32 if x == types.float32 else _sincos64


@njit(cache=True, fastmath=FAST)
def _evaluate(x, f, c, s, wc, ws, fx, fy, dense, row_ptr, col, run_start, data, out_idx, targets, gains, cost_code,
              eps, beta):
    """force (into f) and F at x for one sample; returns F."""
    n = x.shape[0]
    zero = x.dtype.type(0.0)
    for i in range(n):
        s[i], c[i] = sincos(x[i])
    if dense.shape[0] == n:
        for i in range(n):
            ac, a_s = zero, zero
            for j in range(n):
                ac += dense[i, j] * c[j]
                a_s += dense[i, j] * s[j]
            wc[i], ws[i] = ac, a_s
    elif run_start.shape[0] == 0:  # CSR: row_ptr = indptr, col = column indices
        for i in range(n):
            ac, a_s = zero, zero
            for k in range(row_ptr[i], row_ptr[i + 1]):
                j = col[k]
                ac += data[k] * c[j]
                a_s += data[k] * s[j]
            wc[i], ws[i] = ac, a_s
    else:  # runs of consecutive columns (``column_runs``): row_ptr indexes runs, col = first column of a run
        for i in range(n):
            ac, a_s = zero, zero
            for r in range(row_ptr[i], row_ptr[i + 1]):
                k0, length, j0 = run_start[r], run_start[r + 1] - run_start[r], col[r]
                w, cr, sr = data[k0:k0 + length], c[j0:j0 + length], s[j0:j0 + length]
                for t in range(length):  # contiguous: vectorises
                    ac += w[t] * cr[t]
                    a_s += w[t] * sr[t]
            wc[i], ws[i] = ac, a_s
    e = zero
    for i in range(n):
        e -= _HALF * (c[i] * wc[i] + s[i] * ws[i]) + c[i] * fx[i] + s[i] * fy[i]
        f[i] = c[i] * (ws[i] + fy[i]) - s[i] * (wc[i] + fx[i])
    if cost_code != 0:
        for k in range(out_idx.shape[0]):
            o = out_idx[k]
            sd, cd = sincos(x[o] - targets[k])
            strength = beta * gains[k]
            if cost_code == 1:
                f[o] -= strength * sd
                e += strength * (_ONE - cd)
            else:
                den = _ONE + eps + cd
                f[o] -= strength * sd / den
                e -= strength * np.log(den)
    return e


@njit(cache=True, fastmath=FAST)
def _max_abs(a):
    m = a.dtype.type(0.0)
    for i in range(a.shape[0]):
        v = abs(a[i])
        if not v <= m:  # also true for NaN, which then propagates
            m = v
    return m


@njit(cache=True, fastmath=FAST)
def _dot(a, b):
    acc = a.dtype.type(0.0)
    for i in range(a.shape[0]):
        acc += a[i] * b[i]
    return acc


@njit(cache=True, fastmath=FAST)
def _axpy(a, x, y):
    for i in range(x.shape[0]):
        y[i] += a * x[i]


@njit(cache=True, fastmath=FAST)
def _cap(d, max_step):
    big = _max_abs(d)
    if big > max_step:
        d *= max_step / big


@njit(cache=True, fastmath=FAST)
def _relax_one(x, fx, fy, dense, row_ptr, col, run_start, data, out_idx, targets, gains, cost_code, eps, beta,
               h0, tol, max_iter, solver, memory, dt_start, dt_max):
    """Minimise one sample in place from x; returns (status, iterations, max|force|)."""
    n = x.shape[0]
    f, c, s, wc, ws = np.empty_like(x), np.empty_like(x), np.empty_like(x), np.empty_like(x), np.empty_like(x)
    d, xa, fa = np.zeros_like(x), np.empty_like(x), np.empty_like(x)
    mem = max(memory, 1)
    S, Y = np.zeros((mem, n), x.dtype), np.zeros((mem, n), x.dtype)
    rho, alpha_j = np.zeros(mem, x.dtype), np.zeros(mem, x.dtype)
    one, max_step, tiny = x.dtype.type(1.0), x.dtype.type(MAX_STEP_RAD), x.dtype.type(1e-30)
    allowance = x.dtype.type(4.0 * np.finfo(x.dtype).eps)
    head, count, quasi, ea = 0, 0, False, x.dtype.type(np.inf)
    dt, mix, n_pos = dt_start, x.dtype.type(FIRE_ALPHA0), 0  # FIRE state; d is FIRE's velocity
    coupling = (dense, row_ptr, col, run_start, data, out_idx, targets, gains, cost_code, eps, beta)
    e = _evaluate(x, f, c, s, wc, ws, fx, fy, *coupling)
    it = 0
    while True:
        fmax = _max_abs(f)
        if not np.isfinite(fmax):
            return NON_FINITE, it, fmax
        if fmax < tol:
            return CONVERGED, it, fmax
        if it >= max_iter:
            return CAPPED, it, fmax
        if solver == 0:  # L-BFGS (solvers.LBFGS)
            if quasi and e > ea + allowance * (abs(ea) + n):
                count, quasi = 0, False
                for i in range(n):
                    d[i] = h0 * fa[i]
            else:
                if it > 0:
                    sy = x.dtype.type(0.0)
                    for i in range(n):
                        sy += (x[i] - xa[i]) * (fa[i] - f[i])
                    if sy > 0:
                        head = (head - 1) % mem
                        for i in range(n):
                            S[head, i] = x[i] - xa[i]
                            Y[head, i] = fa[i] - f[i]
                        rho[head] = one / sy
                        count = min(count + 1, mem)
                xa[:] = x
                fa[:] = f
                ea = e
                d[:] = fa
                for k in range(count):  # two-loop recursion, newest pair first
                    j = (head + k) % mem
                    alpha_j[j] = rho[j] * _dot(S[j], d)
                    _axpy(-alpha_j[j], Y[j], d)
                gamma = h0
                if count > 0:
                    yy = _dot(Y[head], Y[head])
                    if yy > 0:
                        gamma = one / max(rho[head] * yy, tiny)
                d *= gamma
                for k in range(count - 1, -1, -1):
                    j = (head + k) % mem
                    _axpy(alpha_j[j] - rho[j] * _dot(Y[j], d), S[j], d)
                if _dot(d, fa) > 0:
                    quasi = count > 0
                else:
                    count, quasi = 0, False
                    for i in range(n):
                        d[i] = h0 * fa[i]
            _cap(d, max_step)
            for i in range(n):
                x[i] = xa[i] + d[i]
        else:  # FIRE (solvers.FIRE); d holds the velocity
            n_pos += 1
            if _dot(f, d) < 0:
                n_pos, mix = 0, x.dtype.type(FIRE_ALPHA0)
                dt *= x.dtype.type(FIRE_F_DEC)
                d[:] = 0
            if n_pos > FIRE_N_MIN:
                dt = min(dt * x.dtype.type(FIRE_F_INC), dt_max)
                mix *= x.dtype.type(FIRE_F_ALPHA)
            for i in range(n):
                d[i] += dt * f[i]
            scale = mix * x.dtype.type(math.sqrt(_dot(d, d)) / max(math.sqrt(_dot(f, f)), 1e-30))
            for i in range(n):
                d[i] = (one - mix) * d[i] + scale * f[i]
                xa[i] = dt * d[i]
            _cap(xa, max_step)
            x += xa
        e = _evaluate(x, f, c, s, wc, ws, fx, fy, *coupling)
        it += 1


@njit(cache=True, fastmath=FAST, nogil=True)
def _relax_rows(rows, phi, fx, fy, dense, row_ptr, col, run_start, data, out_idx, targets, gains, cost_code, eps,
                beta, h0, tol, max_iter, solver, memory, dt_start, dt_max, status, iterations, max_force):
    """Relax the samples ``rows`` of the batch in place (without the GIL, so threads run side by side)."""
    for b in rows:
        st, it, fm = _relax_one(phi[b], fx[b], fy[b], dense, row_ptr, col, run_start, data, out_idx, targets[b],
                                gains[b], cost_code, eps, beta, h0, tol, max_iter, solver, memory, dt_start, dt_max)
        status[b], iterations[b], max_force[b] = st, it, fm


#: below this many spins in a batch (samples x free spins) one thread is faster than handing out work
PARALLEL_MIN_WORK = 4096
#: work is handed out in this many chunks per thread, so that slow samples do not leave threads idle
CHUNKS_PER_THREAD = 4
_POOLS: dict[int, ThreadPoolExecutor] = {}


def default_threads() -> int:
    """OMP_NUM_THREADS when set (study workers set it to 1), else every core this process may use."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _pool(threads: int) -> ThreadPoolExecutor:
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="xyoptics-relax")
    return _POOLS[threads]


def column_runs(csr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CSR matrix (sorted column indices) as runs of consecutive columns: row i owns runs
    run_ptr[i] .. run_ptr[i+1]-1; run r starts at column run_col[r] and covers data[run_start[r]:run_start[r+1]]."""
    n = csr.shape[0]
    cols = csr.indices.astype(np.int64)
    row_of = np.repeat(np.arange(n), np.diff(csr.indptr))
    new_run = np.ones(len(cols), bool)
    new_run[1:] = (cols[1:] != cols[:-1] + 1) | (row_of[1:] != row_of[:-1])
    starts = np.flatnonzero(new_run)
    run_ptr = np.searchsorted(starts, csr.indptr).astype(np.int64)
    return run_ptr, cols[starts], np.append(starts, len(cols)).astype(np.int64)


#: sparse rows whose runs of consecutive columns are at least this long on average are stored as runs
MIN_MEAN_RUN = 4.0


def coupling_arrays(matrix, dtype) -> tuple[np.ndarray, tuple]:
    """What the compiled loop takes for W: (dense W, empty sparse arrays) for a dense matrix; otherwise
    (0x0, (row_ptr, col, run_start, data)): CSR (indptr, indices, empty, data), or runs of consecutive columns
    (``column_runs``) when they are MIN_MEAN_RUN long on average (dense-ish rows, e.g. outputs of a local layer)."""
    import scipy.sparse as sp

    if not sp.issparse(matrix):
        empty = np.zeros(0, np.int64)
        return np.ascontiguousarray(matrix, dtype), (empty, empty, empty, np.zeros(0, dtype))
    csr = sp.csr_matrix(matrix)
    csr.sum_duplicates()
    csr.sort_indices()
    run_ptr, run_col, run_start = column_runs(csr)
    if csr.nnz >= MIN_MEAN_RUN * len(run_col):
        return np.zeros((0, 0), dtype), (run_ptr, run_col, run_start, csr.data.astype(dtype))
    empty = np.zeros(0, np.int64)
    return np.zeros((0, 0), dtype), (csr.indptr.astype(np.int64), csr.indices.astype(np.int64), empty,
                                     csr.data.astype(dtype))


def relax_compiled(land, phi0: np.ndarray, solver: str, tol: float, max_iter: int, threads: int | None):
    """Relax ``phi0`` (batch, n_free) on ``land`` with the compiled loop; returns (phases, converged,
    iterations, max_force) as ``relax.RelaxResult`` wants them. Raises FloatingPointError on non-finite forces."""
    dtype = np.dtype(phi0.dtype)
    t = dtype.type
    phi = np.array(phi0, dtype=dtype, order="C", copy=True)
    b, n = phi.shape
    dense, runs = coupling_arrays(land.matrix, dtype)
    nudged = land.beta != 0.0
    cost_code = COST_CODES[land.cost.name if nudged else None]
    eps = t(getattr(land.cost, "eps", 0.0))
    targets = land.targets if nudged else np.zeros((b, 0))
    targets = np.ascontiguousarray(np.broadcast_to(targets, (b, len(land.out) if nudged else 0)), dtype)
    gains = np.ones_like(targets) if land.gains is None else np.ascontiguousarray(land.gains, dtype)
    scale = 1.0 / np.sqrt(land.curvature_bound)
    status = np.empty(b, np.int64)
    iterations = np.empty(b, np.int64)
    max_force = np.empty(b, dtype)
    args = (phi, np.ascontiguousarray(land.fx, dtype), np.ascontiguousarray(land.fy, dtype), dense, *runs,
            np.asarray(land.out, np.int64), targets, gains, cost_code, eps, t(land.beta),
            t(1.0 / land.curvature_bound), t(tol), int(max_iter), SOLVER_CODES[solver], LBFGS_MEMORY,
            t(0.25 * scale), t(2.0 * scale), status, iterations, max_force)
    use = 1 if b * n < PARALLEL_MIN_WORK else max(1, min(default_threads() if threads is None else threads, b))
    if use == 1:
        _relax_rows(np.arange(b), *args)
    else:
        chunks = np.array_split(np.arange(b), min(b, use * CHUNKS_PER_THREAD))
        for done in [_pool(use).submit(_relax_rows, rows, *args) for rows in chunks]:
            done.result()
    if np.any(status == NON_FINITE):
        worst = int(iterations[status == NON_FINITE].min())
        raise FloatingPointError(f"relaxation produced non-finite forces at iteration {worst}")
    return phi, status == CONVERGED, iterations, max_force.astype(np.float64)
