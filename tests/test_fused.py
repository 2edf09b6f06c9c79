"""The compiled relaxation against the numpy one, its sine / cosine, its sparse layouts and its threads."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
from numba import njit

from conftest import random_params
from xyoptics.core import architectures
from xyoptics.core.costs import CosineCost, Cost, LogCosineCost, targets_for
from xyoptics.core.digital import DigitalXYMachine
from xyoptics.core.ep import ep_gradient
from xyoptics.core.fused import column_runs, coupling_arrays, sincos
from xyoptics.core.relax import build_landscape, minimise

NETWORKS = {
    "dense": lambda: architectures.all_to_all(3, 6, 2),
    "csr": lambda: architectures.square_lattice(5, 5, 5, 2),
    "runs": lambda: architectures.local_layers((6, 6), [architectures.LocalLayer(3)], 3),
}


def landscape(kind, rng, batch=6, beta=0.0, cost=None, dtype=np.float64):
    net = NETWORKS[kind]()
    p = random_params(net, rng)
    x = rng.uniform(-np.pi / 2, np.pi / 2, (batch, len(net.inputs)))
    y = targets_for(rng.integers(0, len(net.outputs), batch), len(net.outputs)) if beta else None
    gains = rng.uniform(0.5, 4.0, (batch, len(net.outputs))) if isinstance(cost, CosineCost) else None  # adaptive
    land = build_landscape(net, p, x, beta=beta, cost=cost, targets=y, gains=gains, dtype=dtype)
    return land, rng.uniform(-np.pi, np.pi, (batch, net.n_free)).astype(dtype)


@njit
def _table(x, s, c):
    for i in range(x.shape[0]):
        s[i], c[i] = sincos(x[i])


@pytest.mark.parametrize("dtype, atol", [(np.float32, 2.5e-7), (np.float64, 1e-15)])
def test_compiled_sine_and_cosine_match_numpy(dtype, atol):
    x = np.concatenate([np.linspace(-60, 60, 200001), np.arange(-40, 41) * np.pi / 4]).astype(dtype)
    s, c = np.empty_like(x), np.empty_like(x)
    _table(x, s, c)
    exact = x.astype(np.float64)
    np.testing.assert_allclose(s, np.sin(exact), rtol=0, atol=atol)
    np.testing.assert_allclose(c, np.cos(exact), rtol=0, atol=atol)


def test_column_runs_reproduce_the_matrix():
    rng = np.random.default_rng(0)
    dense = np.where(rng.random((30, 30)) < 0.3, rng.normal(size=(30, 30)), 0.0)
    dense[3, 5:25] = 1.0  # one long run
    csr = sp.csr_matrix(dense)
    run_ptr, run_col, run_start = column_runs(csr)
    rebuilt = np.zeros_like(dense)
    for i in range(30):
        for r in range(run_ptr[i], run_ptr[i + 1]):
            length = run_start[r + 1] - run_start[r]
            rebuilt[i, run_col[r]:run_col[r] + length] = csr.data[run_start[r]:run_start[r + 1]]
    np.testing.assert_array_equal(rebuilt, dense)
    assert coupling_arrays(csr, np.float64)[1][2].size == 0  # short runs: plain CSR
    band = sp.csr_matrix(np.triu(np.ones((30, 30)), 1))
    assert coupling_arrays(band, np.float64)[1][2].size > 0  # long runs: kept as runs


@pytest.mark.parametrize("kind", list(NETWORKS))
@pytest.mark.parametrize("solver", ["lbfgs", "fire"])
@pytest.mark.parametrize("cost", [None, CosineCost(), LogCosineCost()])
def test_compiled_and_numpy_give_the_same_relaxation(kind, solver, cost):
    """Same algorithm, same numbers to rounding (float64): end points, iterations and forces."""
    rng = np.random.default_rng(1)
    land, phi0 = landscape(kind, rng, beta=0.0 if cost is None else 0.7, cost=cost)
    a = minimise(land, phi0, solver=solver, tol=1e-10, max_iter=100000, backend="numpy")
    b = minimise(land, phi0, solver=solver, tol=1e-10, max_iter=100000, backend="compiled")
    assert a.converged.all() and b.converged.all()
    np.testing.assert_allclose(b.phases, a.phases, atol=1e-8)
    assert np.abs(b.iterations - a.iterations).max() <= 0.02 * a.iterations.max() + 2
    np.testing.assert_array_less(np.abs(land.forces(b.phases)).max(axis=1), 1e-10 * 1.0001)


def test_structured_networks_relax_through_their_general_matrix():
    rng = np.random.default_rng(2)
    net = architectures.square_lattice(6, 6, 6, 2)
    structured = dataclasses.replace(net, structured=True)
    p = random_params(net, rng)
    x = rng.uniform(-np.pi / 2, np.pi / 2, (4, 6))
    phi0 = rng.uniform(-np.pi, np.pi, (4, net.n_free))
    plain = minimise(build_landscape(net, p, x), phi0, tol=1e-10, backend="compiled")
    via_blocks = minimise(build_landscape(structured, p, x), phi0, tol=1e-10, backend="compiled")
    np.testing.assert_array_equal(plain.phases, via_blocks.phases)


def test_float32_compiled_relaxation_reaches_the_numpy_minimum():
    """float32 (own sine / cosine, fused arithmetic): from near a minimum both back ends end at it."""
    rng = np.random.default_rng(3)
    net = NETWORKS["csr"]()
    p = random_params(net, rng)
    x = rng.uniform(-np.pi / 2, np.pi / 2, (8, len(net.inputs)))
    exact = minimise(build_landscape(net, p, x), rng.uniform(-np.pi, np.pi, (8, net.n_free)), tol=1e-12)
    near = (exact.phases + rng.normal(0, 0.05, exact.phases.shape)).astype(np.float32)
    land = build_landscape(net, p, x, dtype=np.float32)
    for backend in ("numpy", "compiled"):
        res = minimise(land, near, tol=1e-4, backend=backend)
        assert res.converged.all() and res.phases.dtype == np.float32
        np.testing.assert_allclose(res.phases, exact.phases, atol=5e-3, err_msg=backend)


def test_unsupported_requests_fall_back_or_say_why():
    class Quartic(Cost):
        name = "quartic"

        def terms(self, phi_out, targets):
            return (phi_out - targets) ** 4

        def grad(self, phi_out, targets):
            return 4 * (phi_out - targets) ** 3

    rng = np.random.default_rng(4)
    land, phi0 = landscape("dense", rng, beta=0.1, cost=Quartic())
    assert minimise(land, phi0, tol=1e-8).converged.all()  # auto: numpy
    with pytest.raises(ValueError, match="cost .* not built into the compiled loop"):
        minimise(land, phi0, backend="compiled")
    with pytest.raises(ValueError, match="numpy only"):
        minimise(land, phi0, solver="nesterov", backend="compiled")
    with pytest.raises(ValueError, match="unknown relaxation backend"):
        minimise(land, phi0, backend="gpu")


def test_results_do_not_depend_on_the_number_of_threads():
    """Bit for bit: relaxations, and a whole EP gradient (free and nudged phases), on 1 and 2 threads."""
    rng = np.random.default_rng(5)
    net = architectures.square_lattice(10, 10, 10, 2)
    params = random_params(net, rng)
    x = rng.uniform(-np.pi / 2, np.pi / 2, (64, 10))
    y = targets_for(rng.integers(0, 2, 64), 2)
    land = build_landscape(net, params, x, dtype=np.float32)
    phi0 = rng.uniform(-np.pi, np.pi, (64, net.n_free)).astype(np.float32)
    one, two, three = (minimise(land, phi0, threads=k) for k in (1, 2, 3))
    for field in ("phases", "iterations", "converged", "max_force"):
        np.testing.assert_array_equal(getattr(one, field), getattr(two, field))
        np.testing.assert_array_equal(getattr(one, field), getattr(three, field))
    grads = [ep_gradient(DigitalXYMachine(net, threads=k), params, x, y, beta=0.1, cost=LogCosineCost(),
                         rng=np.random.default_rng(6)).grad for k in (1, 2)]
    for name in ("w", "h", "psi"):
        np.testing.assert_array_equal(getattr(grads[0], name), getattr(grads[1], name))


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
def test_lbfgs_on_a_frustrated_strongly_nudged_network_ends_lower_and_converged(backend):
    """Strong random couplings (many uphill quasi-Newton trials) and a log-cosine nudge of beta = 2 from outputs
    anti-aligned with their targets: every sample still ends at max|force| < tol, below its start energy."""
    rng = np.random.default_rng(7)
    net = architectures.all_to_all(3, 12, 3)
    p = random_params(net, rng)
    p = type(p)(4.0 * p.w, p.h, p.psi)
    x = rng.uniform(-np.pi / 2, np.pi / 2, (32, 3))
    y = targets_for(rng.integers(0, 3, 32), 3)
    land = build_landscape(net, p, x, beta=2.0, cost=LogCosineCost(), targets=y)
    phi0 = rng.uniform(-np.pi, np.pi, (32, net.n_free))
    phi0[:, land.out] = y + np.pi - 0.01
    res = minimise(land, phi0, solver="lbfgs", tol=1e-9, max_iter=100000, backend=backend)
    assert res.converged.all()
    assert np.all(land.energy(res.phases) < land.energy(phi0))
