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


def test_adaptive_gains_turn_the_cosine_force_into_the_log_cosine_force():
    from xyoptics.core.costs import adaptive_gains

    rng = np.random.default_rng(0)
    phi = rng.uniform(-np.pi, np.pi, (50, 3))
    y = np.where(rng.random((50, 3)) < 0.5, np.pi / 2, -np.pi / 2)
    g = adaptive_gains(phi, y, max_gain=1e9)
    np.testing.assert_allclose(g * CosineCost().grad(phi, y), LogCosineCost().grad(phi, y), rtol=1e-9)
    capped = adaptive_gains(phi, y, max_gain=2.0)
    assert capped.max() <= 2.0 and np.all((capped == 2.0) == (g >= 2.0))
    assert np.all(capped >= 0.5 - 1e-9)  # 1 / (1 + cos) is never below one half
    with pytest.raises(ValueError, match="max_gain"):
        adaptive_gains(phi, y, max_gain=0.1)
