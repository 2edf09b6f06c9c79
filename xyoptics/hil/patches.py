"""Sparse spot weights: each camera spot's weights on its own pixels only.

A spot of width sigma covers about pi (3 sigma)^2 pixels (~110 for sigma = 2 px) of a camera with 10^5 - 10^6,
so spot i is stored as P flat pixel indices ``index[i]`` (row-major, ``row * cols + col``) with weights
``weight[i] >= 0``; rows with fewer pixels are padded with weight 0 (pointing at pixel 0). Integrating n spots
over a stack of N frames then costs N n P operations instead of N n H W, and a frame is only read at the
pixels some spot uses (``gather``).

Every readout function accepts these patches or dense weights (n_spots, H, W), which become patches of their
non-zero pixels (``SpotPatches.from_dense``), so both give the same numbers.
"""

from __future__ import annotations

import numpy as np

CONTRIB_REL = 1e-3  # relative weight above which a pixel counts as part of a spot (saturation flags)
CUT_SIGMAS = 3.0  # Gaussian spot weights end at this many widths from the centre


class SpotPatches:
    """Spot weights ``weight`` (n_spots, P) on flat pixel indices ``index`` (n_spots, P) of a camera frame of
    ``shape`` (rows, cols). Weights are non-negative with a positive sum per spot (``norm``)."""

    def __init__(self, index, weight, shape):
        self.index = np.asarray(index, dtype=np.intp)
        self.weight = np.asarray(weight, dtype=np.float64)
        self.shape = (int(shape[0]), int(shape[1]))
        if self.index.shape != self.weight.shape or self.index.ndim != 2:
            raise ValueError(f"spot patch indices {self.index.shape} and weights {self.weight.shape} must be "
                             f"equal 2-d shapes (n_spots, pixels)")
        if self.index.size and (self.index.min() < 0 or self.index.max() >= self.shape[0] * self.shape[1]):
            raise ValueError(f"spot patch pixels outside the {self.shape[1]}x{self.shape[0]} frame")
        if not np.all(np.isfinite(self.weight)) or np.any(self.weight < 0):
            raise ValueError("spot weights must be finite and non-negative")
        self.norm = self.weight.sum(axis=1)
        if np.any(self.norm <= 0):
            raise ValueError("spot weights must be non-negative with a positive sum per spot")
        peak = self.weight.max(axis=1, keepdims=True)
        self.contributing = self.weight > CONTRIB_REL * peak
        self.rows, self.cols = np.divmod(self.index, self.shape[1])
        self._carriers: dict[tuple[float, float], np.ndarray] = {}
        self._pooling: dict[tuple, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def gaussian(cls, centres, sigma, shape, cut_sigmas: float = CUT_SIGMAS) -> "SpotPatches":
        """Weights exp(-d^2 / (2 sigma_i^2)) within ``cut_sigmas`` sigma_i of each centre (row, col; pixels),
        inside the frame. ``sigma`` (pixels) is one width or one per spot."""
        centres = np.asarray(centres, dtype=float).reshape(-1, 2)
        n = len(centres)
        sigma = np.asarray(sigma, dtype=float).ravel()
        if sigma.size not in (1, n):
            raise ValueError(f"{sigma.size} spot widths for {n} spots")
        sigma = np.broadcast_to(sigma, n)
        half = int(np.ceil(cut_sigmas * sigma.max(initial=0.0))) + 1
        offsets = np.arange(-half, half + 1)
        base = np.rint(centres).astype(np.int64)
        rows = base[:, 0, None, None] + offsets[None, :, None]  # (n, K, 1)
        cols = base[:, 1, None, None] + offsets[None, None, :]  # (n, 1, K)
        d2 = (rows - centres[:, 0, None, None]) ** 2 + (cols - centres[:, 1, None, None]) ** 2
        s = sigma[:, None, None]
        inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
        weight = np.where((d2 <= (cut_sigmas * s) ** 2) & inside, np.exp(-d2 / (2 * s ** 2)), 0.0)
        index = np.where(inside, rows * shape[1] + cols, 0)
        return cls(*_compact(index.reshape(n, -1), weight.reshape(n, -1)), shape)

    @classmethod
    def from_dense(cls, weights) -> "SpotPatches":
        """Patches of the non-zero pixels of dense weights (n_spots, H, W)."""
        w = np.asarray(weights, dtype=float)
        if w.ndim != 3:
            raise ValueError(f"spot weights must have shape (n_spots, H, W), got {w.shape}")
        flat = w.reshape(len(w), -1)
        if np.any(flat < 0) or np.any(flat.sum(axis=1) <= 0):
            raise ValueError("spot weights must be non-negative with a positive sum per spot")
        return cls(*_compact(np.broadcast_to(np.arange(flat.shape[1]), flat.shape), flat), w.shape[1:])

    def dense(self) -> np.ndarray:
        """Dense weights (n_spots, H, W)."""
        out = np.zeros((len(self), self.shape[0] * self.shape[1]))
        np.add.at(out, (np.arange(len(self))[:, None], self.index), self.weight)
        return out.reshape(len(self), *self.shape)

    def select(self, spots) -> "SpotPatches":
        """The patches of ``spots`` (indices), in that order."""
        spots = np.asarray(spots, dtype=np.intp)
        return SpotPatches(self.index[spots], self.weight[spots], self.shape)

    def gather(self, frames) -> np.ndarray:
        """Pixel values under every patch: (..., H, W) -> (..., n_spots, P), in the frames' dtype."""
        frames = np.asarray(frames)
        if frames.shape[-2:] != self.shape:
            raise ValueError(f"frames of shape {frames.shape[-2:]} do not match spots on a "
                             f"{self.shape[1]}x{self.shape[0]} camera")
        return frames.reshape(frames.shape[:-2] + (-1,))[..., self.index]

    def average(self, values) -> np.ndarray:
        """Weighted mean over each patch, sum_p w_ip v_ip / sum_p w_ip: (..., n_spots, P) -> (..., n_spots)."""
        return np.einsum("...np,np->...n", values, self.weight) / self.norm

    def carrier(self, wave_vector) -> np.ndarray:
        """e^{+i k.x} at every patch pixel, x = (row, col) in pixels, k = (k_row, k_col) in rad/pixel."""
        key = tuple(float(k) for k in wave_vector)
        if key not in self._carriers:
            self._carriers[key] = np.exp(1j * (key[0] * self.rows + key[1] * self.cols))
        return self._carriers[key]

    def pooling_weights(self, wave_vector, dtype=np.float64) -> np.ndarray:
        """(n_spots, P, 3): the normalised weights w_i / sum w_i and their products with the carrier's real and
        imaginary parts, in ``dtype``: what ``readout.pooled_phase_shifting`` contracts frames with."""
        key = (tuple(float(k) for k in wave_vector), np.dtype(dtype).str)
        if key not in self._pooling:
            weight = self.weight / self.norm[:, None]
            carrier = self.carrier(wave_vector)
            self._pooling[key] = np.stack([weight, weight * carrier.real, weight * carrier.imag], -1).astype(dtype)
        return self._pooling[key]

    def saturated(self, gathered, level) -> np.ndarray:
        """Per spot: a contributing pixel (weight above ``CONTRIB_REL`` of the spot's peak) reaches ``level`` in
        any of the gathered frames (..., n_spots, P)."""
        hot = np.asarray(gathered) >= level
        hot = hot.reshape((-1,) + hot.shape[-2:]).any(axis=0)
        return (hot & self.contributing).any(axis=1)


def _compact(index: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each spot's weighted pixels first, then as few zero-weight entries (pointing at pixel 0) as the spot with
    the most pixels leaves."""
    width = max(int(np.count_nonzero(weight, axis=1).max(initial=0)), 1)
    order = np.argsort(weight == 0, axis=1, kind="stable")[:, :width]
    weight = np.take_along_axis(weight, order, axis=1)
    return np.where(weight > 0, np.take_along_axis(index, order, axis=1), 0), weight
