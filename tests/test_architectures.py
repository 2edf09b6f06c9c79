"""Lattices, skip connections, local (LCL / CNN-like) layers: counts, and the structured fast path against the
general sparse path (float64)."""

import dataclasses

import numpy as np
import pytest

from conftest import random_params
from xyoptics.core.architectures import LocalLayer, graph_distances, local_layers, square_lattice
from xyoptics.core.network import Params
from xyoptics.core.relax import build_landscape

NETS = {
    "lattice": lambda: square_lattice(6, 7, inputs=3, outputs=2),
    "lattice+skip": lambda: square_lattice(7, 7, inputs=2, outputs=1, skip_length=3, skip_every=2),
    "lattice+fixed-skip": lambda: square_lattice(6, 6, inputs=[(0, 0), (2, 3)], outputs=1, skip_length=4,
                                                 n_skip=9),
    "lcl": lambda: local_layers((8, 8), [LocalLayer(3, stride=1)], 3),
    "lcl-stride2+sq": lambda: local_layers((9, 9), [LocalLayer(3, stride=2, channels=2, intra=True)], 2),
    "cnn-2layer": lambda: local_layers((10, 10), [LocalLayer(3, channels=2, shared=True),
                                                  LocalLayer(2, stride=2, channels=2, shared=True, intra=True)], 4),
}


@pytest.fixture(params=sorted(NETS))
def pair(request):
    net = NETS[request.param]()
    assert net.blocks and not net.uses_blocks, "builder should record its blocks; general path by default"
    fast = dataclasses.replace(net, structured=True)
    assert fast.uses_blocks
    return fast, net, random_params(net, np.random.default_rng(0))


def test_structured_path_equals_sparse_path(pair):
    net, plain, p = pair
    rng = np.random.default_rng(1)
    phi = rng.uniform(-np.pi, np.pi, (4, net.n_spins))
    np.testing.assert_allclose(net.energy(p, phi), plain.energy(p, phi), rtol=0, atol=1e-10)
    np.testing.assert_allclose(net.forces(p, phi), plain.forces(p, phi), rtol=0, atol=1e-10)
    for name in Params.NAMES:
        np.testing.assert_allclose(getattr(net.parameter_gradients(p, phi), name),
                                   getattr(plain.parameter_gradients(p, phi), name), rtol=0, atol=1e-10)


def test_structured_landscape_equals_sparse_landscape(pair):
    net, plain, p = pair
    rng = np.random.default_rng(2)
    x = rng.uniform(-np.pi / 2, np.pi / 2, (3, len(net.inputs)))
    phi = rng.uniform(-np.pi, np.pi, (3, net.n_free))
    a, b = build_landscape(net, p, x), build_landscape(plain, p, x)
    np.testing.assert_allclose(a.forces(phi), b.forces(phi), rtol=0, atol=1e-10)
    np.testing.assert_allclose(a.energy(phi), b.energy(phi), rtol=0, atol=1e-10)
    assert np.isclose(a.curvature_bound, b.curvature_bound)


def test_lcl_example_has_the_published_coupling_count():
    net = local_layers((28, 28), [LocalLayer(6, stride=1)], 10)
    assert net.n_couplings == 19044 + 5290
    assert net.n_spins == 784 + 529 + 10 and len(net.inputs) == 784
    assert net.n_parameters == 24334 + 2 * (529 + 10)


def test_cnn_kernel_gradient_is_sum_of_its_bonds():
    net = local_layers((7, 7), [LocalLayer(3, channels=2, shared=True)], 2)
    assert net.n_coupling_params == 2 * 9 + (2 * 25) * 2  # two 3x3 kernels, then dense output bonds
    rng = np.random.default_rng(3)
    p = random_params(net, rng)
    phi = rng.uniform(-np.pi, np.pi, (2, net.n_spins))
    per_bond = -np.cos(phi[:, net.edges[:, 0]] - phi[:, net.edges[:, 1]])
    g = net.parameter_gradients(p, phi).w
    for k in range(net.n_coupling_params):
        np.testing.assert_allclose(g[:, k], per_bond[:, net.edge_param == k].sum(1), atol=1e-12)


def test_lattice_counts_and_placement():
    net = square_lattice(5, 5, inputs=2, outputs=1)
    assert net.n_couplings == 2 * 5 * 4 and list(net.inputs) == [1, 3] and list(net.outputs) == [22]
    skip = square_lattice(10, 10, 2, 1, skip_length=3, skip_every=1)
    assert skip.n_couplings == 180 + 2 * 10 * 7
    fixed = [square_lattice(10, 10, 2, 1, skip_length=l, n_skip=24).n_couplings for l in (2, 4, 8)]
    assert fixed == [180 + 24] * 3
    assert net.positions.shape == (25, 2)


def _bfs(n, edges, source):
    """Breadth-first distances, written out independently of scipy's shortest_path."""
    nbrs = [[] for _ in range(n)]
    for a, b in edges:
        nbrs[a].append(b)
        nbrs[b].append(a)
    dist, frontier = {source: 0}, [source]
    while frontier:
        nxt = []
        for u in frontier:
            for v in nbrs[u]:
                if v not in dist:
                    dist[v] = dist[u] + 1
                    nxt.append(v)
        frontier = nxt
    return dist


@pytest.mark.parametrize("size, n_skip, lengths", [(8, 16, (2, 4, 6)), (10, 20, (3, 8))])
def test_distance_keeping_skips_keep_every_input_output_distance(size, n_skip, lengths):
    plain = square_lattice(size, size, 2, 1)
    out = int(plain.outputs[0])
    base = [_bfs(plain.n_spins, plain.edges, int(i))[out] for i in plain.inputs]
    for length in lengths:
        spread = square_lattice(size, size, 2, 1, skip_length=length, n_skip=n_skip)
        control = square_lattice(size, size, 2, 1, skip_length=length, n_skip=n_skip, keep_distance=True)
        assert spread.n_couplings == control.n_couplings == plain.n_couplings + n_skip
        skips = control.edges[plain.n_couplings:]
        r, c = np.divmod(skips, size)
        assert np.all(np.abs(r[:, 0] - r[:, 1]) + np.abs(c[:, 0] - c[:, 1]) == length)  # all of length l
        assert [_bfs(control.n_spins, control.edges, int(i))[out] for i in control.inputs] == base
        assert min(_bfs(spread.n_spins, spread.edges, int(i))[out] for i in spread.inputs) < min(base)
    assert graph_distances(plain.n_spins, plain.edges, plain.inputs)[:, plain.outputs].ravel().tolist() == base
    with pytest.raises(ValueError, match="keep every input-output distance"):
        square_lattice(8, 8, 2, 1, skip_length=7, n_skip=16, keep_distance=True)
    with pytest.raises(ValueError, match="needs an explicit n_skip"):
        square_lattice(8, 8, 2, 1, skip_length=3, keep_distance=True)


def test_bad_lattices_are_rejected():
    with pytest.raises(ValueError, match="cannot place 6"):
        square_lattice(3, 5, inputs=6)
    with pytest.raises(ValueError, match="skip_length"):
        square_lattice(4, 4, skip_length=4)
    with pytest.raises(ValueError, match="exceeds"):
        square_lattice(4, 4, skip_length=3, n_skip=100)
    with pytest.raises(ValueError, match="does not fit"):
        local_layers((4, 4), [LocalLayer(5)], 2)
