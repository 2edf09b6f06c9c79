"""EP gradient estimates against the exact gradient of L(theta) = C(phi0(theta)).

The exact gradient is computed independently by central finite differences in theta, re-relaxing the free
phase from the same start each time (float64, tolerance 1e-12)."""

import numpy as np
import pytest

from conftest import random_params
from xyoptics.core import architectures
from xyoptics.core.costs import CosineCost, LogCosineCost, targets_for
from xyoptics.core.digital import DigitalXYMachine
from xyoptics.core.ep import ep_gradient
from xyoptics.core.network import Params

pytestmark = pytest.mark.xdist_group("ep_exact")  # one worker computes the exact gradients once

TOL = 1e-12


def problem(cost, seed=0):
    rng = np.random.default_rng(seed)
    net = architectures.all_to_all(2, 4, 2)  # 8 spins
    params = random_params(net, rng)
    x = rng.uniform(-np.pi / 2, np.pi / 2, (3, 2))
    y = targets_for(rng.integers(0, 2, 3), 2)
    machine = DigitalXYMachine(net, tol=TOL, max_iter=200000, dtype=np.float64)
    start = net.random_phases(rng, x)
    return machine, params, x, y, start, cost


def exact_gradient(machine, params, x, y, start, cost, h=1e-5):
    out = machine.network.outputs

    def loss(p):
        eq = machine.equilibrate(p, x, start=start)
        assert eq.converged.all()
        return float(np.mean(cost.value(eq.phases[:, out], y)))

    grads = {}
    for name, base in params.as_dict().items():
        g = np.zeros_like(base)
        for k in range(base.size):
            d = np.zeros_like(base)
            d[k] = h
            g[k] = (loss(Params(**{**params.as_dict(), name: base + d}))
                    - loss(Params(**{**params.as_dict(), name: base - d}))) / (2 * h)
        grads[name] = g
    grads["h"][machine.network.inputs] = 0.0
    grads["psi"][machine.network.inputs] = 0.0
    return Params.from_dict(grads)


def flat(p: Params) -> np.ndarray:
    return np.concatenate([p.w, p.h, p.psi])


@pytest.fixture(scope="session", params=["log_cosine", "cosine"])
def case(request):
    cost = LogCosineCost() if request.param == "log_cosine" else CosineCost()
    args = problem(cost)
    return args, flat(exact_gradient(*args))


def ep_error(case, beta, variant):
    (machine, params, x, y, start, cost), exact = case
    est = ep_gradient(machine, params, x, y, beta=beta, cost=cost, rng=np.random.default_rng(0),
                      variant=variant, start=start)
    assert est.n_unconverged == 0
    return np.linalg.norm(flat(est.grad) - exact) / np.linalg.norm(exact)


def test_one_sided_ep_within_one_percent_at_small_beta(case):
    assert ep_error(case, 1e-3, "one_sided") < 0.01


def test_one_sided_error_falls_linearly_in_beta(case):
    e1, e2 = ep_error(case, 1e-2, "one_sided"), ep_error(case, 1e-3, "one_sided")
    assert 5 < e1 / e2 < 20, (e1, e2)


def test_symmetric_error_falls_quadratically_in_beta(case):
    e1, e2 = ep_error(case, 1e-1, "symmetric"), ep_error(case, 1e-2, "symmetric")
    assert 30 < e1 / e2 < 300, (e1, e2)
    assert e2 < ep_error(case, 1e-2, "one_sided") / 10


def test_m_init_averages_over_repeated_starts():
    machine, params, x, y, start, cost = problem(LogCosineCost(), seed=1)
    est = ep_gradient(machine, params, x, y, beta=0.1, cost=cost, rng=np.random.default_rng(2), m_init=4)
    assert est.free.batch_size == 12 and len(est.nudged) == 1
    # equal to the mean of the per-sample estimates
    net = machine.network
    per = net.parameter_gradients(params, est.nudged[0].phases).w - net.parameter_gradients(params, est.free.phases).w
    np.testing.assert_allclose(est.grad.w, per.mean(0) / 0.1, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kw, message", [(dict(beta=0.0), "beta"), (dict(variant="centred"), "variant"),
                                         (dict(m_init=0), "m_init")])
def test_bad_ep_settings_are_rejected(kw, message):
    machine, params, x, y, start, cost = problem(LogCosineCost())
    args = dict(beta=0.1, cost=cost, rng=np.random.default_rng(0))
    args.update(kw)
    with pytest.raises(ValueError, match=message):
        ep_gradient(machine, params, x, y, **args)


@pytest.fixture(scope="session")
def log_cosine_exact():
    args = problem(LogCosineCost())
    return args, flat(exact_gradient(*args))


def test_adaptive_cosine_nudge_estimates_the_log_cosine_gradient(log_cosine_exact):
    """A cosine (injected-field) nudge whose per-output strength is set from the free angles estimates the
    log-cosine loss's gradient as beta -> 0; the plain cosine nudge estimates another loss's."""
    (machine, params, x, y, start, _), exact = log_cosine_exact

    def error(max_gain):
        est = ep_gradient(machine, params, x, y, beta=1e-3, cost=CosineCost(), rng=np.random.default_rng(0),
                          start=start, adaptive_max_gain=max_gain)
        return np.linalg.norm(flat(est.grad) - exact) / np.linalg.norm(exact)

    assert error(1e6) < 0.01
    assert error(None) > 0.1
