"""Site / bond diagnostics against direct equilibrate calls, the recorder's arrays and file, and the plots."""

import numpy as np
import pytest

from conftest import random_params
from xyoptics.analysis.diagnostics import DiagnosticsRecorder, bond_maps, input_sensitivity, nudge_response, wrap_angle
from xyoptics.analysis.plots import plot_bond_map, plot_learning_curves, plot_site_map, render_diagnostics
from xyoptics.core import architectures
from xyoptics.core.architectures import LocalLayer
from xyoptics.core.costs import LogCosineCost, targets_for
from xyoptics.core.digital import DigitalXYMachine
from xyoptics.core.files import read_arrays_h5
from xyoptics.core.machine import Nudge

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def direct_abs_diff(a, b):
    """|a - b| wrapped, by an independent route (complex phase)."""
    return np.abs(np.angle(np.exp(1j * (a - b))))


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(3)
    net = architectures.square_lattice(4, 5, inputs=2, outputs=1)
    params = random_params(net, rng)
    machine = DigitalXYMachine(net, tol=1e-8, dtype=np.float64)
    x = rng.uniform(-np.pi / 2, np.pi / 2, (4, 2))
    y = targets_for(np.array([0, 1, 0, 1]), 1)
    return net, machine, params, x, y


def test_wrap_angle_range():
    d = np.array([-3 * np.pi, -np.pi, -0.1, 0.0, np.pi, 2 * np.pi + 0.2, 5.0])
    w = wrap_angle(d)
    assert np.all(w > -np.pi) and np.all(w <= np.pi)
    np.testing.assert_allclose(np.exp(1j * w), np.exp(1j * d), atol=1e-12)
    assert w[1] == pytest.approx(np.pi)


def test_nudge_response(problem):
    net, machine, params, x, y = problem
    cost = LogCosineCost()
    small = nudge_response(machine, params, x, y, beta=0.05, cost=cost, rng=np.random.default_rng(7))
    large = nudge_response(machine, params, x, y, beta=0.2, cost=cost, rng=np.random.default_rng(7))
    assert small.shape == (net.n_spins,)
    assert np.all(small >= 0) and np.all(large >= 0)
    assert np.all(small[net.inputs] == 0) and np.all(large[net.inputs] == 0)
    out = net.outputs[0]
    assert 0 < small[out] < large[out]

    beta = 0.1
    got = nudge_response(machine, params, x, y, beta=beta, cost=cost, rng=np.random.default_rng(11))
    free = machine.equilibrate(params, x, rng=np.random.default_rng(11))
    nudged = machine.equilibrate(params, x, nudge=Nudge(beta, y, cost), start=free)
    np.testing.assert_allclose(got, direct_abs_diff(nudged.phases, free.phases).mean(axis=0), atol=1e-12)


def test_input_sensitivity_matches_direct_finite_difference(problem):
    net, machine, params, x, _ = problem
    delta = 1e-3
    got = input_sensitivity(machine, params, x, delta=delta, rng=np.random.default_rng(5))
    assert got.shape == (net.n_spins,)
    assert np.all(got >= 0) and np.all(got[net.inputs] == 0)
    free = machine.equilibrate(params, x, rng=np.random.default_rng(5))
    per_input = []
    for k in range(x.shape[1]):
        xk = x.copy()
        xk[:, k] += delta
        moved = machine.equilibrate(params, xk, start=free)
        per_input.append(direct_abs_diff(moved.phases, free.phases).mean(axis=0) / delta)
    expected = np.mean(per_input, axis=0)
    expected[net.inputs] = 0.0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got[net.outputs[0]] > 0


def test_bond_maps_follow_edge_param():
    rng = np.random.default_rng(0)
    net = architectures.local_layers((5, 5), [LocalLayer(3, shared=True)], 2)  # shared kernel weights
    w0, w1 = random_params(net, rng), random_params(net, rng)
    maps = bond_maps(net, w1, w0)
    np.testing.assert_array_equal(maps["abs_w"], np.abs(w1.w)[net.edge_param])
    np.testing.assert_allclose(maps["abs_dw"], np.abs(w1.w - w0.w)[net.edge_param])
    assert maps["abs_dw"].shape == (net.n_couplings,)
    assert "abs_dw" not in bond_maps(net, w1)


def test_recorder_arrays_and_file(problem, tmp_path):
    net, machine, p0, x, y = problem
    p1 = p0.map(lambda a: a + 0.01)
    p2 = p1.map(lambda a: a * 1.1)
    rec = DiagnosticsRecorder(p0)
    rng = np.random.default_rng(2)
    for epoch, p in ((1, p1), (3, p2)):
        rec.record(epoch, machine, p, x, y, beta=0.1, cost=LogCosineCost(), rng=rng)
    arrays = rec.arrays()
    assert arrays["epochs"].tolist() == [1, 3]
    for key in ("nudge_response", "input_sensitivity"):
        assert arrays[key].shape == (2, net.n_spins)
    for key in ("abs_w", "abs_dw"):
        assert arrays[key].shape == (2, net.n_couplings)
    np.testing.assert_allclose(arrays["abs_dw"][0], np.abs(p1.w - p0.w)[net.edge_param])
    np.testing.assert_allclose(arrays["abs_dw"][1], np.abs(p2.w - p1.w)[net.edge_param])
    rec.save(tmp_path / "diag.h5")
    back = read_arrays_h5(tmp_path / "diag.h5")
    assert sorted(back) == sorted(arrays)
    for key, a in arrays.items():
        np.testing.assert_array_equal(back[key], a)
    with pytest.raises(ValueError):
        DiagnosticsRecorder().arrays()


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_SIGNATURE


@pytest.mark.parametrize("build", [
    lambda: architectures.square_lattice(4, 5, inputs=2, outputs=1),
    lambda: architectures.local_layers((6, 6), [LocalLayer(3)], 2),
    lambda: architectures.layered([3, 5, 2]),
], ids=["lattice", "local_layers", "layered"])
def test_plots_write_png(build, tmp_path):
    net = build()
    rng = np.random.default_rng(1)
    arrays = {"epochs": np.array([1, 2]),
              "nudge_response": rng.uniform(0, 1, (2, net.n_spins)),
              "input_sensitivity": rng.uniform(0, 1, (2, net.n_spins)),
              "abs_w": rng.uniform(0, 1, (2, net.n_couplings)),
              "abs_dw": np.zeros((2, net.n_couplings))}  # a constant map must still render
    paths = render_diagnostics(net, arrays, tmp_path / "diag")
    assert [p.name for p in paths] == ["nudge_response.png", "input_sensitivity.png", "abs_w.png", "abs_dw.png"]
    for p in paths:
        assert_png(p)
    assert_png(plot_site_map(net, arrays["nudge_response"][0], tmp_path / "site.png", title="t", cmap="magma"))
    assert_png(plot_bond_map(net, arrays["abs_w"][0], tmp_path / "bond.png", title="t"))


def test_learning_curves_png(tmp_path):
    metrics = [{"epoch": e, "train_accuracy": 0.5 + 0.1 * e, "test_accuracy": 0.4 + 0.1 * e,
                "train_cost": 1.0 / e} for e in range(1, 5)]
    path = tmp_path / "curves.png"
    plot_learning_curves(metrics, path)
    assert_png(path)
    with pytest.raises(ValueError):
        plot_learning_curves([], tmp_path / "none.png")


def test_site_map_needs_positions(tmp_path):
    net = architectures.graph(3, [[0, 1], [1, 2]], [0], [2])
    assert net.positions is None
    with pytest.raises(ValueError, match="positions"):
        plot_site_map(net, np.zeros(3), tmp_path / "x.png")
    with pytest.raises(ValueError, match="positions"):
        plot_bond_map(net, np.zeros(2), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
