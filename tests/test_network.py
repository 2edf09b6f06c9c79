"""Energy, forces and parameter gradients against central finite differences (float64)."""

import numpy as np
import pytest

from xyoptics.core import architectures, operators
from xyoptics.core.network import Params

H = 1e-6


def rel_err(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12)


def test_energy_matches_definition(net_and_params):
    net, p, rng = net_and_params
    phi = rng.uniform(-np.pi, np.pi, (3, net.n_spins))
    w = net.bond_weights(p)
    i, j = net.edges.T
    bias = np.where(net.free, p.h * np.cos(phi - p.psi), 0.0).sum(1)
    direct = -(w * np.cos(phi[:, i] - phi[:, j])).sum(1) - bias
    # Terms of size O(1) cancel; compare on their scale, not on the (possibly tiny) sum.
    scale = (np.abs(w) * 1.0).sum() + np.abs(p.h).sum()
    np.testing.assert_allclose(net.energy(p, phi), direct, rtol=1e-12, atol=1e-13 * scale)


def test_forces_are_minus_energy_gradient(net_and_params):
    net, p, rng = net_and_params
    phi = rng.uniform(-np.pi, np.pi, (4, net.n_spins))
    fd = np.zeros_like(phi)
    for k in range(net.n_spins):
        d = np.zeros(net.n_spins)
        d[k] = H
        fd[:, k] = -(net.energy(p, phi + d) - net.energy(p, phi - d)) / (2 * H)
    fd[:, net.inputs] = 0.0  # clamped spins feel no force
    f = net.forces(p, phi)
    assert np.all(f[:, net.inputs] == 0.0)
    assert rel_err(f, fd) < 1e-6


@pytest.mark.parametrize("group", ["w", "h", "psi"])
def test_parameter_gradients_match_finite_differences(net_and_params, group):
    net, p, rng = net_and_params
    phi = rng.uniform(-np.pi, np.pi, (3, net.n_spins))
    g = getattr(net.parameter_gradients(p, phi), group)
    base = getattr(p, group)
    fd = np.zeros((len(phi), base.size))
    for k in range(base.size):
        d = np.zeros_like(base)
        d[k] = H
        plus = Params(**{**p.as_dict(), group: base + d})
        minus = Params(**{**p.as_dict(), group: base - d})
        fd[:, k] = (net.energy(plus, phi) - net.energy(minus, phi)) / (2 * H)
    if group != "w":  # bias parameters on clamped inputs do not exist
        fd[:, net.inputs] = 0.0
    assert g.shape == fd.shape
    assert rel_err(g, fd) < 1e-6


def test_shared_parameter_gradient_is_sum_over_its_bonds():
    rng = np.random.default_rng(3)
    edges = np.array([[0, 2], [1, 2], [2, 3], [1, 3]])
    net = architectures.graph(4, edges, [0, 1], [3], edge_param=[0, 0, 1, 0])
    p = Params(np.array([0.3, -0.7]), np.ones(4), np.zeros(4))
    phi = rng.uniform(-np.pi, np.pi, (2, 4))
    corr = np.cos(phi[:, edges[:, 0]] - phi[:, edges[:, 1]])
    g = net.parameter_gradients(p, phi).w
    np.testing.assert_allclose(g[:, 0], -(corr[:, 0] + corr[:, 1] + corr[:, 3]), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g[:, 1], -corr[:, 2], rtol=1e-12, atol=1e-14)
    assert net.n_couplings == 4 and net.n_coupling_params == 2 and net.n_parameters == 2 + 2 * 2


def test_float32_agrees_with_float64(net_and_params):
    net, p, rng = net_and_params
    phi = rng.uniform(-np.pi, np.pi, (5, net.n_spins))
    f32 = net.forces(p.astype(np.float32), phi.astype(np.float32))
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32, net.forces(p, phi), atol=2e-5)
    e32 = net.energy(p.astype(np.float32), phi.astype(np.float32))
    np.testing.assert_allclose(e32, net.energy(p, phi), atol=1e-4)


def test_sparse_operator_equals_dense(monkeypatch):
    rng = np.random.default_rng(0)
    net = architectures.layered([6, 8, 3])
    w = rng.normal(size=net.n_couplings)
    x = rng.normal(size=(4, net.n_spins))
    dense = operators.CouplingOperator(net.n_spins, net.edges, w)
    monkeypatch.setattr(operators, "DENSE_MAX_SPINS", 0)
    monkeypatch.setattr(operators, "DENSE_MIN_DENSITY", 2.0)
    sparse = operators.CouplingOperator(net.n_spins, net.edges, w)
    assert dense.dense and not sparse.dense
    np.testing.assert_allclose(sparse(x), dense(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sparse.abs_row_sums(), dense.abs_row_sums(), rtol=1e-12)


def test_counts_of_builders():
    a = architectures.all_to_all(2, 3, 1)
    assert (a.n_spins, a.n_couplings, a.n_parameters) == (6, 15, 15 + 2 * 4)
    layered = architectures.layered([64, 200, 10])
    assert layered.n_couplings == 64 * 200 + 200 * 10
    assert list(layered.inputs) == list(range(64)) and list(layered.outputs) == list(range(264, 274))


@pytest.mark.parametrize("kwargs, message", [
    (dict(edges=[[0, 5]]), "endpoints"),
    (dict(edges=[[1, 1]]), "itself"),
    (dict(inputs=[0], outputs=[0]), "both an input and an output"),
    (dict(edge_param=[0, 1]), "edge_param has 2 entries"),
])
def test_bad_networks_are_rejected(kwargs, message):
    args = dict(n_spins=3, edges=[[0, 1]], inputs=[0], outputs=[2])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        architectures.graph(**args)
