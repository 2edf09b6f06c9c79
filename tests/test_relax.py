"""Relaxation: landscape forces, convergence, honest reporting of non-converged samples."""

import numpy as np
import pytest

from conftest import random_params
from xyoptics.core import architectures
from xyoptics.core.costs import CosineCost, LogCosineCost
from xyoptics.core.network import Params
from xyoptics.core.relax import build_landscape, minimise
from xyoptics.core.solvers import SOLVERS


def setup(rng, batch=5):
    net = architectures.all_to_all(3, 5, 2)
    p = random_params(net, rng)
    x = rng.uniform(-np.pi / 2, np.pi / 2, (batch, 3))
    return net, p, x


def test_landscape_forces_equal_network_forces_on_free_spins():
    rng = np.random.default_rng(1)
    net, p, x = setup(rng)
    phi = net.random_phases(rng, x)
    land = build_landscape(net, p, x)
    np.testing.assert_allclose(land.forces(phi[:, net.free]), net.forces(p, phi)[:, net.free], atol=1e-12)
    # the landscape energy differs from E only by the constant input-input bond energy
    phi2 = net.random_phases(rng, x)
    np.testing.assert_allclose(land.energy(phi[:, net.free]) - land.energy(phi2[:, net.free]),
                               net.energy(p, phi) - net.energy(p, phi2), atol=1e-12)


@pytest.mark.parametrize("cost", [LogCosineCost(), CosineCost()])
@pytest.mark.parametrize("with_gains", [False, True])
def test_nudged_forces_are_minus_gradient_of_nudged_energy(cost, with_gains):
    rng = np.random.default_rng(2)
    net, p, x = setup(rng)
    y = np.where(rng.random((5, 2)) < 0.5, np.pi / 2, -np.pi / 2)
    gains = rng.uniform(0.5, 3.0, (5, 2)) if with_gains else None
    land = build_landscape(net, p, x, beta=0.3, cost=cost, targets=y, gains=gains)
    phi = rng.uniform(-np.pi, np.pi, (5, net.n_free))
    h = 1e-6
    fd = np.zeros_like(phi)
    for k in range(net.n_free):
        d = np.zeros(net.n_free)
        d[k] = h
        fd[:, k] = -(land.energy(phi + d) - land.energy(phi - d)) / (2 * h)
    np.testing.assert_allclose(land.forces(phi), fd, rtol=1e-6, atol=1e-8)


SOLVER_BACKENDS = [(name, "numpy") for name in SOLVERS] + [("lbfgs", "compiled"), ("fire", "compiled")]


@pytest.mark.parametrize("solver, backend", SOLVER_BACKENDS)
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-9), (np.float32, 1e-4)])
def test_relaxation_reaches_tolerance_and_lowers_energy(solver, backend, dtype, tol):
    rng = np.random.default_rng(3)
    net, p, x = setup(rng, batch=16)
    land = build_landscape(net, p, x, dtype=dtype)
    phi0 = rng.uniform(-np.pi, np.pi, (16, net.n_free)).astype(dtype)
    res = minimise(land, phi0, solver=solver, tol=tol, max_iter=200000, backend=backend)
    assert res.phases.dtype == dtype
    assert res.converged.all() and res.n_unconverged == 0
    assert np.all(res.max_force < tol)
    np.testing.assert_array_less(np.max(np.abs(land.forces(res.phases)), 1), tol * 1.0001)
    assert np.all(land.energy(res.phases) < land.energy(phi0))


def test_every_solver_finds_the_gradient_flows_minimum_from_nearby():
    rng = np.random.default_rng(4)
    net, p, x = setup(rng, batch=8)
    land = build_landscape(net, p, x)
    first = minimise(land, rng.uniform(-np.pi, np.pi, (8, net.n_free)), tol=1e-10)
    start = first.phases + rng.normal(0, 0.02, first.phases.shape)
    flow = minimise(land, start, solver="euler", tol=1e-10, max_iter=500000)
    assert flow.converged.all()
    np.testing.assert_allclose(flow.phases, first.phases, atol=1e-7)
    for solver in SOLVERS:
        res = minimise(land, start, solver=solver, tol=1e-10, max_iter=500000)
        assert res.converged.all()
        np.testing.assert_allclose(res.phases, flow.phases, atol=1e-7, err_msg=solver)


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
def test_iteration_cap_is_reported_as_not_converged(backend):
    rng = np.random.default_rng(5)
    net, p, x = setup(rng, batch=6)
    land = build_landscape(net, p, x)
    res = minimise(land, rng.uniform(-np.pi, np.pi, (6, net.n_free)), tol=1e-8, max_iter=3, backend=backend)
    assert not res.converged.any() and res.n_unconverged == 6
    assert np.all(res.iterations == 3)
    assert np.all(res.max_force >= 1e-8)


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
def test_partial_convergence_keeps_sample_order(backend):
    """Samples that converge early are frozen; the rest keep running; results land in the right rows."""
    rng = np.random.default_rng(6)
    net, p, x = setup(rng, batch=10)
    land = build_landscape(net, p, x)
    phi0 = rng.uniform(-np.pi, np.pi, (10, net.n_free))
    together = minimise(land, phi0, tol=1e-9, backend=backend)
    for k in (0, 7):
        alone = minimise(land.take(np.arange(10) == k), phi0[k:k + 1], tol=1e-9, backend=backend)
        np.testing.assert_allclose(alone.phases[0], together.phases[k], atol=1e-12)
        assert alone.iterations[0] == together.iterations[k]
    assert len(set(together.iterations)) > 1


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
def test_nan_parameters_raise_instead_of_returning_values(backend):
    rng = np.random.default_rng(7)
    net, p, x = setup(rng, batch=2)
    bad = Params(np.full_like(p.w, np.nan), p.h, p.psi)
    land = build_landscape(net, bad, x)
    with pytest.raises(FloatingPointError, match="non-finite"):
        minimise(land, rng.uniform(-np.pi, np.pi, (2, net.n_free)), backend=backend)


def test_nudge_without_cost_is_rejected():
    rng = np.random.default_rng(8)
    net, p, x = setup(rng, batch=2)
    with pytest.raises(ValueError, match="needs a cost"):
        build_landscape(net, p, x, beta=0.1)
