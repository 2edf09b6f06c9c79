"""Structured fast path for lattice-like networks: bonds grouped into blocks of two strided grid views.

Lattice bonds, skip connections, locally connected and CNN-like layers all pair site (r, c) of one rectangular
view of a grid with site (r, c) of another view of the same shape. A ``Block`` records such a group: bonds
``bonds.start + r * w + c`` join ``a[r, c]`` and ``b[r, c]`` for a view shape (h, w). The coupling product then
becomes a few sliced multiply-adds per block (a stencil for lattices, a sum over kernel offsets -- a
convolution -- for local layers) instead of a gather/scatter over every bond:

    (W x)_a += W_blk * x_b,   (W x)_b += W_blk * x_a,   per block, on (batch, h, w) views.

Blocks are optional metadata on an ``XYNetwork``; the edge list stays the single source of truth, and bonds
outside every block go through a sparse matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .operators import CouplingOperator


@dataclass(frozen=True)
class GridView:
    """A strided rectangle of a grid whose sites occupy spin indices start .. start + rows*cols - 1 in
    row-major order: grid rows r0, r0 + step, ... (h of them) and columns c0, c0 + step, ... (w of them)."""

    start: int
    grid: tuple[int, int]
    r0: int
    c0: int
    h: int
    w: int
    step: int = 1

    def __post_init__(self):
        rows, cols = self.grid
        last_r, last_c = self.r0 + self.step * (self.h - 1), self.c0 + self.step * (self.w - 1)
        if min(self.r0, self.c0) < 0 or last_r >= rows or last_c >= cols or self.h < 1 or self.w < 1:
            raise ValueError(f"view {self} does not fit its {rows}x{cols} grid")

    def of(self, x: np.ndarray) -> np.ndarray:
        """The (batch, h, w) view of site values x (batch, n_spins); writable, no copy."""
        rows, cols = self.grid
        g = x[:, self.start:self.start + rows * cols].reshape(len(x), rows, cols)
        return g[:, self.r0:self.r0 + self.step * (self.h - 1) + 1:self.step,
                 self.c0:self.c0 + self.step * (self.w - 1) + 1:self.step]

    def indices(self) -> np.ndarray:
        """Spin indices of the view, shape (h, w)."""
        rows, cols = self.grid
        r = self.r0 + self.step * np.arange(self.h)
        c = self.c0 + self.step * np.arange(self.w)
        return self.start + r[:, None] * cols + c[None, :]


@dataclass(frozen=True)
class Block:
    """Bonds ``first .. first + h*w - 1`` join ``a[r, c]`` and ``b[r, c]`` (row-major over (h, w))."""

    first: int
    a: GridView
    b: GridView

    def __post_init__(self):
        if (self.a.h, self.a.w) != (self.b.h, self.b.w):
            raise ValueError("the two views of a block must have the same shape")

    @property
    def size(self) -> int:
        return self.a.h * self.a.w

    def edges(self) -> np.ndarray:
        return np.stack([self.a.indices().ravel(), self.b.indices().ravel()], axis=1)


def check_blocks(edges: np.ndarray, blocks: tuple[Block, ...]) -> None:
    """Raise ValueError unless every block's bonds match the edge list exactly and blocks do not overlap."""
    seen = np.zeros(len(edges), dtype=bool)
    for blk in blocks:
        sel = slice(blk.first, blk.first + blk.size)
        if blk.first + blk.size > len(edges) or seen[sel].any():
            raise ValueError(f"block at bond {blk.first} overlaps another or runs past the edge list")
        if not np.array_equal(edges[sel], blk.edges()):
            raise ValueError(f"block at bond {blk.first} does not match the edge list")
        seen[sel] = True


class BlockOperator:
    """x @ W for a network whose bonds are partly grouped in blocks; the rest go through a sparse matrix.

    ``weights`` are the per-bond couplings W_b; zero weights (e.g. bonds masked out because they touch a
    clamped input) simply contribute nothing."""

    dense = False

    def __init__(self, n: int, edges: np.ndarray, weights: np.ndarray, blocks: tuple[Block, ...], dtype):
        self.n, self.dtype = int(n), np.dtype(dtype)
        weights = np.asarray(weights, dtype=self.dtype)
        in_block = np.zeros(len(edges), dtype=bool)
        self.parts = []
        for blk in blocks:
            sel = slice(blk.first, blk.first + blk.size)
            in_block[sel] = True
            w = weights[sel].reshape(blk.a.h, blk.a.w)
            if np.any(w):
                self.parts.append((blk, w))
        rest = ~in_block & (weights != 0)
        self.rest = CouplingOperator(n, edges[rest], weights[rest], dtype) if rest.any() else None
        row_sums = np.zeros(self.n)
        for blk, w in self.parts:
            np.add.at(row_sums, blk.a.indices().ravel(), np.abs(w).ravel())
            np.add.at(row_sums, blk.b.indices().ravel(), np.abs(w).ravel())
        self._row_sums = row_sums + (self.rest.abs_row_sums() if self.rest is not None else 0.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = self.rest(x) if self.rest is not None else np.zeros_like(x)
        for blk, w in self.parts:
            blk.a.of(y)[...] += w * blk.b.of(x)
            blk.b.of(y)[...] += w * blk.a.of(x)
        return y

    def abs_row_sums(self) -> np.ndarray:
        return self._row_sums


def block_correlations(blocks: tuple[Block, ...], c: np.ndarray, s: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Fill out[:, bonds of each block] with cos(phi_a - phi_b) = c_a c_b + s_a s_b; returns a mask of the
    bonds it filled."""
    filled = np.zeros(out.shape[1], dtype=bool)
    for blk in blocks:
        sel = slice(blk.first, blk.first + blk.size)
        corr = blk.a.of(c) * blk.b.of(c) + blk.a.of(s) * blk.b.of(s)
        out[:, sel] = corr.reshape(len(c), -1)
        filled[sel] = True
    return filled
