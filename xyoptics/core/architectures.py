"""Builders for network architectures, all on the one representation of ``XYNetwork``.

Spin order: inputs first, outputs last. Every builder sets ``positions`` for plots. The lattice-like builders
also record their bonds as ``blocks`` for the structured path (a stencil, or a sum over kernel offsets),
which ``dataclasses.replace(net, structured=True)`` switches on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import shortest_path

from .network import XYNetwork
from .structure import Block, GridView


def graph(n_spins: int, edges, inputs, outputs, edge_param=None, name: str = "graph", **extra) -> XYNetwork:
    """An explicit graph (e.g. a custom hardware topology); bonds get their own parameter unless
    ``edge_param`` says which bonds share one."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if edge_param is None:
        edge_param = np.arange(len(edges))
    return XYNetwork(n_spins, edges, edge_param, inputs, outputs, name=name, **extra)


def _column_positions(sizes: Sequence[int]) -> np.ndarray:
    """Sites of consecutive layers as vertical columns x = 0, 1, ..., centred on y = 0."""
    return np.concatenate([np.stack([np.full(s, k, float), np.arange(s)[::-1] - (s - 1) / 2], 1)
                           for k, s in enumerate(sizes) if s > 0])


def all_to_all(n_inputs: int, n_hidden: int, n_outputs: int) -> XYNetwork:
    """Every pair of spins coupled (N(N-1)/2 bonds); inputs first, outputs last."""
    n = n_inputs + n_hidden + n_outputs
    i, j = np.triu_indices(n, k=1)
    return graph(n, np.stack([i, j], axis=1), np.arange(n_inputs), np.arange(n - n_outputs, n),
                 name=f"all_to_all({n_inputs},{n_hidden},{n_outputs})",
                 positions=_column_positions([n_inputs, n_hidden, n_outputs]))


def _dense_between(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.stack(np.meshgrid(lo, hi, indexing="ij"), axis=-1).reshape(-1, 2)


def layered(sizes: Sequence[int]) -> XYNetwork:
    """Dense layered network, e.g. ``layered([64, 200, 10])``: bonds only between consecutive layers;
    the first layer is the input, the last the output."""
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"layered() needs at least two non-empty layers, got {sizes}")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    edges = np.concatenate([_dense_between(np.arange(starts[k], starts[k + 1]), np.arange(starts[k + 1], starts[k + 2]))
                            for k in range(len(sizes) - 1)])
    n = int(starts[-1])
    return graph(n, edges, np.arange(sizes[0]), np.arange(n - sizes[-1], n),
                 name="layered(" + "-".join(map(str, sizes)) + ")", positions=_column_positions(sizes))


class _Bonds:
    """Accumulates bonds, their parameters and blocks while a builder runs."""

    def __init__(self):
        self.edges, self.params, self.blocks, self.n_params = [], [], [], 0

    @property
    def count(self) -> int:
        return sum(len(e) for e in self.edges)

    def add(self, edges: np.ndarray, shared: bool = False) -> None:
        """Bonds with a fresh parameter each, or one fresh parameter for all of them (``shared``)."""
        self.params.append(np.full(len(edges), self.n_params) if shared
                           else self.n_params + np.arange(len(edges)))
        self.n_params += 1 if shared else len(edges)
        self.edges.append(np.asarray(edges, dtype=np.int64).reshape(-1, 2))

    def add_block(self, a: GridView, b: GridView, shared: bool = False) -> None:
        block = Block(self.count, a, b)
        self.blocks.append(block)
        self.add(block.edges(), shared)

    def add_grid_neighbours(self, start: int, grid: tuple[int, int], dist: int = 1, every: int = 1,
                            along: str = "both") -> None:
        """Bonds (r, c)-(r, c+dist) ("rows") and (r, c)-(r+dist, c) ("cols") of a grid, one bond every ``every``
        sites in each direction."""
        rows, cols = grid
        if along in ("rows", "both") and cols > dist:
            h, w = -(-rows // every), -(-(cols - dist) // every)
            self.add_block(GridView(start, grid, 0, 0, h, w, every), GridView(start, grid, 0, dist, h, w, every))
        if along in ("cols", "both") and rows > dist:
            h, w = -(-(rows - dist) // every), -(-cols // every)
            self.add_block(GridView(start, grid, 0, 0, h, w, every), GridView(start, grid, dist, 0, h, w, every))

    def network(self, n: int, inputs, outputs, name: str, positions) -> XYNetwork:
        return XYNetwork(n, np.concatenate(self.edges), np.concatenate(self.params), inputs, outputs, name=name,
                         n_coupling_params=self.n_params, blocks=tuple(self.blocks), positions=positions)


def _spread(k: int, length: int) -> np.ndarray:
    """k positions spread evenly over 0 .. length-1 (cell centres)."""
    if not 1 <= k <= length:
        raise ValueError(f"cannot place {k} sites along an edge of {length}")
    return ((np.arange(k) + 0.5) * length / k).astype(np.int64)


def _sites(spec, row: int, rows: int, cols: int) -> np.ndarray:
    """Grid indices for an int count (spread along ``row``) or a sequence of (r, c)."""
    if isinstance(spec, (int, np.integer)):
        return row * cols + _spread(int(spec), cols)
    rc = np.asarray(spec, dtype=np.int64).reshape(-1, 2)
    if rc.size and (rc.min() < 0 or rc[:, 0].max() >= rows or rc[:, 1].max() >= cols):
        raise ValueError(f"sites {rc.tolist()} lie outside the {rows}x{cols} lattice")
    return rc[:, 0] * cols + rc[:, 1]


def _skip_candidates(rows: int, cols: int, dist: int, along: str) -> list[np.ndarray]:
    idx = np.arange(rows * cols).reshape(rows, cols)
    out = []
    if along in ("rows", "both"):
        out.append(np.stack([idx[:, :-dist].ravel(), idx[:, dist:].ravel()], 1))
    if along in ("cols", "both"):
        out.append(np.stack([idx[:-dist].ravel(), idx[dist:].ravel()], 1))
    return out


def graph_distances(n: int, edges: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Shortest-path lengths in bonds (len(sources), n) over the undirected graph ``edges``; inf if unreachable."""
    adj = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    return shortest_path(adj, directed=False, unweighted=True, indices=np.asarray(sources))


def distance_keeping_skips(n: int, base: np.ndarray, candidates: np.ndarray, n_skip: int, inputs: np.ndarray,
                           outputs: np.ndarray) -> np.ndarray:
    """``n_skip`` of the ``candidates`` bonds, taken in a low-discrepancy order over the candidate list (so they
    spread over the lattice) and kept only if, added to ``base`` and the skips kept so far, every input-output
    graph distance stays what it is in ``base``. Raises ValueError when fewer than ``n_skip`` can be kept."""
    target = graph_distances(n, base, inputs)[:, outputs]
    order = np.argsort((np.arange(len(candidates)) * 0.6180339887498949) % 1.0, kind="stable")
    kept: list[np.ndarray] = []
    for k in order:
        if len(kept) == n_skip:
            break
        trial = np.concatenate([base, *kept, candidates[k:k + 1]])
        if np.array_equal(graph_distances(n, trial, inputs)[:, outputs], target):
            kept.append(candidates[k:k + 1])
    if len(kept) < n_skip:
        raise ValueError(f"only {len(kept)} of {len(candidates)} candidate skips keep every input-output distance; "
                         f"n_skip={n_skip} is too many")
    return np.concatenate(kept)


def square_lattice(rows: int, cols: int, inputs=2, outputs=1, *, skip_length: int | None = None,
                   skip_along: str = "both", skip_every: int = 1, n_skip: int | None = None,
                   keep_distance: bool = False) -> XYNetwork:
    """rows x cols sites with nearest-neighbour bonds and open boundaries.

    ``inputs`` / ``outputs``: a count spread evenly along row 0 / the last row, or explicit (r, c) sites.
    Skip connections of length ``skip_length`` join (r, c)-(r, c+l) ("rows") and/or (r, c)-(r+l, c) ("cols"):
    one every ``skip_every`` sites on every ``skip_every``-th line, or exactly ``n_skip`` of them spread evenly
    over all candidates (split evenly between directions), which keeps the bond count fixed across l.
    ``keep_distance`` (with ``n_skip``): the control placement, ``n_skip`` skips that leave every input-output
    graph distance as in the plain lattice (``distance_keeping_skips``)."""
    if rows < 1 or cols < 1:
        raise ValueError("a lattice needs at least one row and one column")
    if skip_along not in ("rows", "cols", "both"):
        raise ValueError("skip_along must be 'rows', 'cols' or 'both'")
    grid = (rows, cols)
    bonds = _Bonds()
    bonds.add_grid_neighbours(0, grid)
    name = f"square_lattice({rows}x{cols})"
    if skip_length is not None:
        if not 2 <= skip_length < max(rows, cols):
            raise ValueError(f"skip_length must lie in [2, {max(rows, cols) - 1}]")
        if keep_distance:
            if n_skip is None:
                raise ValueError("keep_distance needs an explicit n_skip")
            cands = np.concatenate(_skip_candidates(rows, cols, skip_length, skip_along))
            bonds.add(distance_keeping_skips(rows * cols, np.concatenate(bonds.edges), cands, n_skip,
                                             _sites(inputs, 0, rows, cols), _sites(outputs, rows - 1, rows, cols)))
        elif n_skip is None:
            bonds.add_grid_neighbours(0, grid, skip_length, skip_every, skip_along)
        else:
            cands = [c for c in _skip_candidates(rows, cols, skip_length, skip_along) if len(c)]
            shares = np.diff(np.round(np.linspace(0, n_skip, len(cands) + 1)).astype(int))
            for cand, k in zip(cands, shares):
                if k > len(cand):
                    raise ValueError(f"n_skip={n_skip} exceeds the {len(cand)} candidate skip bonds of length "
                                     f"{skip_length} per direction")
                bonds.add(cand[np.round(np.linspace(0, len(cand) - 1, k)).astype(int)] if k else cand[:0])
        name = f"square_lattice({rows}x{cols},skip={skip_length}{',same distance' if keep_distance else ''})"
    sites_in, sites_out = _sites(inputs, 0, rows, cols), _sites(outputs, rows - 1, rows, cols)
    r, c = np.divmod(np.arange(rows * cols), cols)
    return bonds.network(rows * cols, sites_in, sites_out, name, np.stack([c, -r], 1).astype(float))


@dataclass(frozen=True)
class LocalLayer:
    """A hidden lattice layer of ``channels`` grids; each site couples to a ``window`` x ``window`` patch of
    every channel of the previous layer, patches ``stride`` apart. ``shared``: one kernel weight per
    (source channel, channel, offset) -- a CNN-like layer; ``intra``: nearest-neighbour bonds inside each grid."""

    window: int
    stride: int = 1
    channels: int = 1
    shared: bool = False
    intra: bool = False


def local_layers(input_shape: tuple[int, int], layers: Sequence[LocalLayer], n_outputs: int) -> XYNetwork:
    """Stacked lattices: an input grid, local (LCL or CNN-like) hidden layers, and ``n_outputs`` output spins
    densely coupled to the last hidden layer. E.g. 28x28 -> window 6, stride 1 -> 23x23 -> 10 outputs has
    19,044 + 5,290 bonds."""
    if not layers:
        raise ValueError("local_layers() needs at least one hidden layer")
    bonds = _Bonds()
    prev = [(0, tuple(input_shape))]  # (start index, grid shape) of each channel of the previous layer
    n, x0, pos = input_shape[0] * input_shape[1], 0.0, [_grid_positions(input_shape, 0.0, 0.0)]
    for layer in layers:
        ph, pw = prev[0][1]
        h, w = (ph - layer.window) // layer.stride + 1, (pw - layer.window) // layer.stride + 1
        if h < 1 or w < 1:
            raise ValueError(f"window {layer.window} does not fit a {ph}x{pw} layer")
        x0 += pw + 2
        current = []
        for q in range(layer.channels):
            current.append((n, (h, w)))
            pos.append(_grid_positions((h, w), x0, -q * (h + 1)))
            for start, grid in prev:
                for a in range(layer.window):
                    for b in range(layer.window):
                        bonds.add_block(GridView(start, grid, a, b, h, w, layer.stride),
                                        GridView(n, (h, w), 0, 0, h, w), shared=layer.shared)
            n += h * w
        if layer.intra:
            for start, grid in current:
                bonds.add_grid_neighbours(start, grid)
        prev = current
        x0 += w
    last = np.arange(prev[0][0], n)
    outputs = np.arange(n, n + n_outputs)
    bonds.add(_dense_between(last, outputs))
    pos.append(np.stack([np.full(n_outputs, x0 + 3.0), -np.arange(n_outputs) * 2.0], 1))
    desc = ",".join(f"{'cnn' if L.shared else 'lcl'}{L.window}/{L.stride}x{L.channels}{'+sq' if L.intra else ''}"
                    for L in layers)
    return bonds.network(n + n_outputs, np.arange(input_shape[0] * input_shape[1]), outputs,
                         f"local_layers({input_shape[0]}x{input_shape[1]},{desc},{n_outputs})", np.concatenate(pos))


def _grid_positions(shape: tuple[int, int], x0: float, y0: float) -> np.ndarray:
    r, c = np.divmod(np.arange(shape[0] * shape[1]), shape[1])
    return np.stack([x0 + c, y0 - r], 1).astype(float)
