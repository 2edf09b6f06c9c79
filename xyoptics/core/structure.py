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

from .operators import CouplingOperator, SubsetOperator


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

    @property
    def offset(self) -> int | None:
        """The constant index difference b - a of every bond, if there is one (a stencil diagonal)."""
        d = self.b.indices() - self.a.indices()
        return int(d.flat[0]) if np.all(d == d.flat[0]) and d.flat[0] != 0 else None


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
    """x @ W over the spins ``lo .. lo + m - 1`` for a network whose bonds are partly grouped in blocks.

    Blocks whose two views differ by a constant index offset d (lattice bonds and skip connections on one grid)
    merge into one weight vector per d, applied as two contiguous shifted multiply-adds -- a stencil. Other
    blocks (local layers between grids) are applied view by view -- a sum over kernel offsets. Remaining bonds
    go through a sparse matrix. Bonds with zero weight, or with an endpoint outside the range, contribute
    nothing. Use ``structured_operator`` to build one; it falls back to embedding when the range cuts a block.
    """

    dense = False

    def __init__(self, edges: np.ndarray, weights: np.ndarray, blocks: tuple[Block, ...], lo: int, m: int, dtype):
        self.n, self.dtype, self.lo = int(m), np.dtype(dtype), int(lo)
        weights = np.asarray(weights, dtype=np.float64)
        inside = (edges >= lo).all(1) & (edges < lo + m).all(1)
        weights = np.where(inside, weights, 0.0)
        in_block = np.zeros(len(edges), dtype=bool)
        diagonals: dict[int, np.ndarray] = {}
        self.views = []
        for blk in blocks:
            sel = slice(blk.first, blk.first + blk.size)
            in_block[sel] = True
            w = weights[sel]
            if not np.any(w):
                continue
            ia, ib = blk.a.indices().ravel() - lo, blk.b.indices().ravel() - lo
            if blk.offset is not None:
                lo_end, d = (ia, blk.offset) if blk.offset > 0 else (ib, -blk.offset)
                diag = diagonals.setdefault(int(d), np.zeros(self.n - d))
                np.add.at(diag, lo_end[w != 0], w[w != 0])
            else:
                self.views.append((_shift(blk.a, -lo), _shift(blk.b, -lo), w.reshape(blk.a.h, blk.a.w)))
        self.diagonals = [(d, v.astype(self.dtype)) for d, v in sorted(diagonals.items())]
        self.views = [(a, b, w.astype(self.dtype)) for a, b, w in self.views]
        rest = ~in_block & (weights != 0)
        self.rest = (CouplingOperator(self.n, edges[rest] - lo, weights[rest], dtype) if rest.any() else None)
        row_sums = np.zeros(self.n)
        for d, v in self.diagonals:
            row_sums[:self.n - d] += np.abs(v)
            row_sums[d:] += np.abs(v)
        for a, b, w in self.views:
            np.add.at(row_sums, a.indices().ravel(), np.abs(w).ravel())
            np.add.at(row_sums, b.indices().ravel(), np.abs(w).ravel())
        self._row_sums = row_sums + (self.rest.abs_row_sums() if self.rest is not None else 0.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = self.rest(x) if self.rest is not None else np.zeros_like(x)
        n = self.n
        for d, v in self.diagonals:
            y[:, :n - d] += v * x[:, d:]
            y[:, d:] += v * x[:, :n - d]
        for a, b, w in self.views:
            a.of(y)[...] += w * b.of(x)
            b.of(y)[...] += w * a.of(x)
        return y

    def abs_row_sums(self) -> np.ndarray:
        return self._row_sums


def _shift(view: GridView, by: int) -> GridView:
    return GridView(view.start + by, view.grid, view.r0, view.c0, view.h, view.w, view.step)


def structured_operator(n: int, edges: np.ndarray, weights: np.ndarray, blocks: tuple[Block, ...], dtype,
                        subset: np.ndarray | None = None):
    """The block operator on all n spins, or restricted to the spins ``subset`` (bonds with an endpoint outside
    it dropped). A contiguous subset that holds every grid touched by a non-stencil block with non-zero weights
    is served directly; otherwise the full operator runs on an embedded vector."""
    if subset is None:
        return BlockOperator(edges, weights, blocks, 0, n, dtype)
    subset = np.asarray(subset, dtype=np.int64)
    lo, m = (int(subset[0]), len(subset)) if len(subset) else (0, 0)
    contiguous = m > 0 and subset[-1] == lo + m - 1
    if contiguous and all(_grid_inside(v, lo, m) for blk in blocks for v in (blk.a, blk.b)
                          if blk.offset is None and np.any(weights[blk.first:blk.first + blk.size])):
        return BlockOperator(edges, weights, blocks, lo, m, dtype)
    keep = np.zeros(n, dtype=bool)
    keep[subset] = True
    weights = np.where(keep[edges].all(1), weights, 0.0)
    return SubsetOperator(BlockOperator(edges, weights, blocks, 0, n, dtype), subset)


def _grid_inside(view: GridView, lo: int, m: int) -> bool:
    return view.start >= lo and view.start + view.grid[0] * view.grid[1] <= lo + m


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
