"""The XYMachine seam as implemented by the digital machine."""

import numpy as np
import pytest

from conftest import random_params
from xyoptics.core import architectures
from xyoptics.core.costs import LogCosineCost, targets_for
from xyoptics.core.digital import DigitalXYMachine
from xyoptics.core.machine import Nudge, XYMachine


def make(**kw):
    net = architectures.layered([2, 4, 2])
    return DigitalXYMachine(net, **kw), random_params(net, np.random.default_rng(0))


def test_digital_machine_is_an_xymachine():
    machine, _ = make()
    assert isinstance(machine, XYMachine)


def test_equilibrium_keeps_inputs_and_reports_convergence():
    machine, p = make(tol=1e-5)
    x = np.array([[0.5, -1.0], [1.2, 0.3]])
    eq = machine.equilibrate(p, x, rng=np.random.default_rng(1))
    assert eq.phases.shape == (2, 8) and eq.phases.dtype == np.float32
    np.testing.assert_allclose(eq.phases[:, :2], x, rtol=1e-6)
    assert eq.converged.all() and np.all(eq.residual < 1e-5) and eq.n_unconverged == 0


def test_nudge_moves_outputs_toward_targets():
    machine, p = make(tol=1e-6, dtype=np.float64)
    x = np.array([[0.5, -1.0]])
    y = targets_for(np.array([0]), 2)
    free = machine.equilibrate(p, x, rng=np.random.default_rng(1))
    cost = LogCosineCost()
    nudged = machine.equilibrate(p, x, nudge=Nudge(0.5, y, cost), start=free)
    out = machine.network.outputs
    assert cost.value(nudged.phases[:, out], y)[0] < cost.value(free.phases[:, out], y)[0]


def test_tiny_iteration_cap_is_reported():
    machine, p = make(tol=1e-9, max_iter=2)
    eq = machine.equilibrate(p, np.zeros((3, 2)), rng=np.random.default_rng(2))
    assert eq.n_unconverged == 3 and np.all(eq.iterations == 2)


def test_seeded_starts_are_reproducible_and_required():
    machine, p = make()
    x = np.zeros((2, 2))
    a = machine.equilibrate(p, x, rng=np.random.default_rng(5)).phases
    b = machine.equilibrate(p, x, rng=np.random.default_rng(5)).phases
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="Generator"):
        machine.equilibrate(p, x)
    with pytest.raises(ValueError, match="expected 2 input angles"):
        machine.equilibrate(p, np.zeros((2, 3)), rng=np.random.default_rng(0))
