"""Costs, targets and predictions."""

import numpy as np
import pytest

from xyoptics.core.costs import CosineCost, LogCosineCost, make_cost, predict, targets_for


@pytest.mark.parametrize("cost", [LogCosineCost(), LogCosineCost(eps=0.0), CosineCost()])
def test_cost_gradient_matches_finite_differences(cost):
    rng = np.random.default_rng(0)
    phi = rng.uniform(-2.5, 2.5, (6, 3))
    y = targets_for(rng.integers(0, 3, 6), 3)
    h = 1e-6
    fd = np.zeros_like(phi)
    for k in range(3):
        d = np.zeros(3)
        d[k] = h
        fd[:, k] = (cost.value(phi + d, y) - cost.value(phi - d, y)) / (2 * h)
    np.testing.assert_allclose(cost.grad(phi, y), fd, rtol=1e-6, atol=1e-9)


def test_cost_values_match_formulas():
    phi, y = np.array([[0.3, -1.0]]), np.array([[np.pi / 2, -np.pi / 2]])
    d = phi - y
    assert np.isclose(LogCosineCost(eps=0).value(phi, y)[0], -np.sum(np.log(1 + np.cos(d))))
    assert np.isclose(CosineCost().value(phi, y)[0], np.sum(1 - np.cos(d)))
    # the log cost's nudging force is tan(Delta/2)
    np.testing.assert_allclose(LogCosineCost(eps=0).grad(phi, y), np.tan(d / 2))


def test_log_cost_is_finite_when_anti_aligned():
    c = LogCosineCost()
    phi, y = np.array([[np.pi / 2]]), np.array([[-np.pi / 2]])
    assert np.isfinite(c.value(phi, y)).all() and np.isfinite(c.grad(phi + 1e-4, y)).all()
    assert abs(c.grad(phi + 1e-3, y)[0, 0]) > 100  # still pushes hard away from anti-alignment


def test_targets_and_predictions():
    y = targets_for(np.array([2, 0]), 3)
    np.testing.assert_allclose(y, [[-np.pi / 2, -np.pi / 2, np.pi / 2], [np.pi / 2, -np.pi / 2, -np.pi / 2]])
    assert list(predict(y)) == [2, 0]
    single = targets_for(np.array([0, 1, 1]), 1)
    assert single.shape == (3, 1) and list(predict(single)) == [0, 1, 1]
    with pytest.raises(ValueError, match="unknown cost"):
        make_cost("hinge")
