"""Builders for network architectures, all on the one representation of ``XYNetwork``.

Spin order is inputs first, then hidden spins, then outputs (one per class, or one for a binary task).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .network import XYNetwork


def graph(n_spins: int, edges, inputs, outputs, edge_param=None, name: str = "graph") -> XYNetwork:
    """An explicit graph (e.g. a custom hardware topology); bonds get their own parameter unless
    ``edge_param`` says which bonds share one."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if edge_param is None:
        edge_param = np.arange(len(edges))
    return XYNetwork(n_spins, edges, edge_param, inputs, outputs, name=name)


def all_to_all(n_inputs: int, n_hidden: int, n_outputs: int) -> XYNetwork:
    """Every pair of spins coupled (N(N-1)/2 bonds); inputs first, outputs last."""
    n = n_inputs + n_hidden + n_outputs
    i, j = np.triu_indices(n, k=1)
    return graph(n, np.stack([i, j], axis=1), np.arange(n_inputs), np.arange(n - n_outputs, n),
                 name=f"all_to_all({n_inputs},{n_hidden},{n_outputs})")


def layered(sizes: Sequence[int]) -> XYNetwork:
    """Dense layered network, e.g. ``layered([64, 200, 10])``: bonds only between consecutive layers;
    the first layer is the input, the last the output."""
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"layered() needs at least two non-empty layers, got {sizes}")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    blocks = []
    for k in range(len(sizes) - 1):
        lo = np.arange(starts[k], starts[k + 1])
        hi = np.arange(starts[k + 1], starts[k + 2])
        blocks.append(np.stack(np.meshgrid(lo, hi, indexing="ij"), axis=-1).reshape(-1, 2))
    n = int(starts[-1])
    return graph(n, np.concatenate(blocks), np.arange(sizes[0]), np.arange(n - sizes[-1], n),
                 name="layered(" + "-".join(map(str, sizes)) + ")")
