"""Optimisers against hand-computed updates."""

import numpy as np
import pytest

from xyoptics.core.network import Params
from xyoptics.core.optim import SGD, Adam, Momentum


def P(w, h=0.0, psi=0.0):
    return Params(np.array([w], float), np.array([h], float), np.array([psi], float))


def test_sgd():
    out = SGD(0.5).step(P(1.0, 2.0, 3.0), P(0.2, -0.4, 1.0))
    assert np.allclose([out.w[0], out.h[0], out.psi[0]], [0.9, 2.2, 2.5])


def test_momentum_two_steps():
    opt = Momentum(0.1, momentum=0.9)
    p = opt.step(P(1.0), P(1.0))          # v = 1      -> 1 - 0.1
    p = opt.step(p, P(2.0))               # v = 0.9 + 2 -> 0.9 - 0.29
    assert np.isclose(p.w[0], 0.61)


def test_adam_two_steps():
    opt = Adam(0.01, beta1=0.9, beta2=0.999, eps=0.0, trainable=["w"])
    p = opt.step(P(1.0), P(4.0))          # first step moves by lr * sign(g)
    assert np.isclose(p.w[0], 0.99)
    p = opt.step(p, P(-2.0))
    m = (0.9 * 0.4 + 0.1 * -2.0) / (1 - 0.9 ** 2)
    s = (0.999 * 0.001 * 16 + 0.001 * 4) / (1 - 0.999 ** 2)
    assert np.isclose(p.w[0], 0.99 - 0.01 * m / np.sqrt(s))


def test_untrained_groups_stay_and_state_round_trips():
    opt = Adam(0.1, trainable=["w"])
    p = opt.step(P(1.0, 2.0, 3.0), P(1.0, 1.0, 1.0))
    assert p.h[0] == 2.0 and p.psi[0] == 3.0 and p.w[0] != 1.0
    twin = Adam(0.1, trainable=["w"])
    twin.load_state_dict(opt.state_dict())
    a, b = opt.step(p, P(0.3)), twin.step(p, P(0.3))
    assert a.w[0] == b.w[0]


def test_bad_optimizer_settings():
    with pytest.raises(ValueError, match="positive"):
        SGD(0.0)
    with pytest.raises(ValueError, match="unknown parameter groups"):
        SGD(0.1, trainable=["J"])
