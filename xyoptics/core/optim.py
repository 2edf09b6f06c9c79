"""First-order optimisers acting on ``Params`` (descent on the gradient of the cost).

SGD: theta <- theta - lr g.  Momentum: v <- mu v + g, theta <- theta - lr v.
Adam (Kingma & Ba 2015): m <- b1 m + (1-b1) g, s <- b2 s + (1-b2) g^2,
theta <- theta - lr m_hat / (sqrt(s_hat) + eps) with bias-corrected m_hat, s_hat.
"""

from __future__ import annotations

import numpy as np

from .network import Params


class Optimizer:
    """Base class: ``step(params, grad)`` returns new parameters; ``state_dict`` / ``load_state_dict`` for
    checkpoints. Parameter groups absent from ``trainable`` are left unchanged."""

    def __init__(self, lr: float, trainable=Params.NAMES):
        if lr <= 0:
            raise ValueError("learning rate must be positive")
        unknown = set(trainable) - set(Params.NAMES)
        if unknown:
            raise ValueError(f"unknown parameter groups {sorted(unknown)}")
        self.lr, self.trainable, self.t = float(lr), tuple(trainable), 0
        self.slots: dict[str, dict[str, np.ndarray]] = {}

    def step(self, params: Params, grad: Params) -> Params:
        self.t += 1
        new = {}
        for name in Params.NAMES:
            p = getattr(params, name)
            new[name] = p - self._update(name, np.asarray(getattr(grad, name), dtype=p.dtype)) \
                if name in self.trainable else p
        return Params(**new)

    def _slot(self, name: str, key: str, like: np.ndarray) -> np.ndarray:
        return self.slots.setdefault(name, {}).setdefault(key, np.zeros_like(like))

    def _update(self, name: str, g: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"t": self.t, "slots": {n: {k: v.copy() for k, v in d.items()} for n, d in self.slots.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        self.slots = {n: {k: np.array(v) for k, v in d.items()} for n, d in state["slots"].items()}


class SGD(Optimizer):
    def _update(self, name, g):
        return self.lr * g


class Momentum(Optimizer):
    def __init__(self, lr: float, momentum: float = 0.9, **kw):
        super().__init__(lr, **kw)
        self.momentum = float(momentum)

    def _update(self, name, g):
        v = self._slot(name, "v", g)
        v *= self.momentum
        v += g
        return self.lr * v


class Adam(Optimizer):
    def __init__(self, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, **kw):
        super().__init__(lr, **kw)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def _update(self, name, g):
        m, s = self._slot(name, "m", g), self._slot(name, "s", g)
        m *= self.beta1
        m += (1 - self.beta1) * g
        s *= self.beta2
        s += (1 - self.beta2) * g * g
        m_hat = m / (1 - self.beta1 ** self.t)
        s_hat = s / (1 - self.beta2 ** self.t)
        return self.lr * m_hat / (np.sqrt(s_hat) + self.eps)


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}
