"""Output costs, targets and predictions.

Targets are angles: +pi/2 for the true class, -pi/2 for the others (one output spin per class), or for a
binary task with a single output spin, +pi/2 for class 1 and -pi/2 for class 0. With Delta = phi_o - y_o:

* ``log_cosine``: C = -sum_o log(1 + eps + cos Delta_o), dC/dphi_o = sin Delta / (1 + eps + cos Delta);
  the papers' choice (eps = 0 there). Its nudging force -beta tan(Delta/2) never vanishes at anti-alignment;
  eps > 0 keeps it finite there (at most ~1/sqrt(2 eps)).
* ``cosine``: C = sum_o (1 - cos Delta_o), dC/dphi_o = sin Delta: what an injected optical field of
  amplitude beta and phase y_o physically adds to the energy.
"""

from __future__ import annotations

import numpy as np

LOG_EPS = 1e-6


class Cost:
    """A cost C(phi_out, targets), summed over output spins; arrays have shape (batch, n_outputs)."""

    name: str = ""

    def value(self, phi_out: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """C per sample, shape (batch,)."""
        return np.sum(self.terms(phi_out, targets), axis=-1)

    def terms(self, phi_out: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Each output's share of C, same shape as phi_out."""
        raise NotImplementedError

    def grad(self, phi_out: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """dC/dphi_out, same shape as phi_out."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LogCosineCost(Cost):
    name = "log_cosine"

    def __init__(self, eps: float = LOG_EPS):
        if eps < 0:
            raise ValueError("eps must be >= 0")
        self.eps = float(eps)

    def terms(self, phi_out, targets):
        return -np.log(1.0 + self.eps + np.cos(phi_out - targets))

    def grad(self, phi_out, targets):
        delta = phi_out - targets
        return np.sin(delta) / (1.0 + self.eps + np.cos(delta))


class CosineCost(Cost):
    name = "cosine"

    def terms(self, phi_out, targets):
        return 1.0 - np.cos(phi_out - targets)

    def grad(self, phi_out, targets):
        return np.sin(phi_out - targets)


COSTS = {"log_cosine": LogCosineCost, "cosine": CosineCost}


def adaptive_gains(phi_out: np.ndarray, targets: np.ndarray, max_gain: float, eps: float = LOG_EPS) -> np.ndarray:
    """Per-output strengths g_o = min(1 / (1 + eps + cos Delta_o), max_gain) from the free angles: a cosine nudge
    beta g_o (1 - cos Delta_o) then pulls each output at the free state with the log-cosine cost's force
    beta sin Delta_o / (1 + eps + cos Delta_o), except where the cap binds (near anti-alignment)."""
    if max_gain < 0.5:
        raise ValueError("max_gain must be at least 0.5 (the smallest gain, at alignment)")
    return np.minimum(1.0 / (1.0 + eps + np.cos(np.asarray(phi_out, np.float64) - targets)), max_gain)


def make_cost(name: str) -> Cost:
    try:
        return COSTS[name]()
    except KeyError:
        raise ValueError(f"unknown cost {name!r}; choose from {sorted(COSTS)}") from None


def targets_for(labels: np.ndarray, n_outputs: int) -> np.ndarray:
    """Target angles (n, n_outputs) for integer class labels: +pi/2 on the true class' output, -pi/2 elsewhere;
    with a single output spin, +pi/2 for class 1 and -pi/2 for class 0."""
    labels = np.asarray(labels, dtype=np.int64)
    if n_outputs == 1:
        return np.where(labels == 1, np.pi / 2, -np.pi / 2)[:, None]
    onehot = labels[:, None] == np.arange(n_outputs)[None, :]
    return np.where(onehot, np.pi / 2, -np.pi / 2)


def predict(phi_out: np.ndarray) -> np.ndarray:
    """Class prediction from output angles (batch, n_outputs): argmax_o sin(phi_o); a single output spin
    predicts class 1 when sin(phi_o) > 0."""
    s = np.sin(np.atleast_2d(phi_out))
    if s.shape[1] == 1:
        return (s[:, 0] > 0).astype(np.int64)
    return np.argmax(s, axis=1)
