"""Angle arithmetic shared by every layer: phases are radians, compared modulo 2*pi."""

from __future__ import annotations

import numpy as np


def wrap(theta):
    """Wrap angles (radians) to (-pi, pi]: wrap(t) = pi - ((pi - t) mod 2*pi), with -pi mapped to +pi.

    >>> wrap(3 * np.pi).item(), wrap(-np.pi).item()
    (3.141592653589793, 3.141592653589793)
    """
    w = np.pi - np.mod(np.pi - np.asarray(theta, dtype=float), 2 * np.pi)
    return np.where(w <= -np.pi, w + 2 * np.pi, w)
