"""Coupling operators: the product (W x)_i = sum_j W_ij x_j for a symmetric coupling matrix W.

Every architecture stores one scalar per bond, so W is real symmetric with zero diagonal. One product per
relaxation step serves every site: with z_i = exp(i phi_i) the coupling part of the force is
Im(z_i conj((W z)_i)), so we apply W to the stacked rows [cos phi; sin phi]. The operator is chosen from the
graph's density: a dense matrix (one BLAS call) for small or dense graphs, CSR sparse otherwise.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: Graphs with at most this many spins, or at least this bond density, use a dense matrix.
DENSE_MAX_SPINS = 400
DENSE_MIN_DENSITY = 0.1


class CouplingOperator:
    """Applies a fixed symmetric coupling matrix to a batch of site vectors x of shape (batch, n)."""

    def __init__(self, n: int, edges: np.ndarray, weights: np.ndarray, dtype=np.float64):
        self.n = int(n)
        self.dtype = np.dtype(dtype)
        edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        weights = np.asarray(weights, dtype=self.dtype)
        density = 2.0 * len(edges) / max(self.n * (self.n - 1), 1)
        self.dense = self.n <= DENSE_MAX_SPINS or density >= DENSE_MIN_DENSITY
        i, j = edges[:, 0], edges[:, 1]
        if self.dense:
            w = np.zeros((self.n, self.n), dtype=self.dtype)
            np.add.at(w, (i, j), weights)
            np.add.at(w, (j, i), weights)
            self.matrix = w
        else:
            rows = np.concatenate([i, j])
            cols = np.concatenate([j, i])
            data = np.concatenate([weights, weights])
            self.matrix = sp.csr_matrix((data, (rows, cols)), shape=(self.n, self.n), dtype=self.dtype)
            self.matrix.sum_duplicates()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Return x @ W (= (W x^T)^T since W is symmetric) for x of shape (batch, n)."""
        if self.dense:
            return x @ self.matrix
        return np.asarray((self.matrix @ x.T).T)

    def abs_row_sums(self) -> np.ndarray:
        """sum_j |W_ij| for each site i: a Gershgorin bound on the coupling part of the Hessian."""
        return np.asarray(abs(self.matrix).sum(axis=1)).ravel()


class SubsetOperator:
    """An operator on all n spins restricted to the sites ``idx``: x_idx -> (x @ W)_idx with x zero elsewhere."""

    def __init__(self, op, idx: np.ndarray):
        self.op, self.n = op, op.n
        idx = np.asarray(idx, dtype=np.int64)
        contiguous = len(idx) > 0 and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx)))
        self.idx = slice(int(idx[0]), int(idx[0]) + len(idx)) if contiguous else idx

    def __call__(self, x: np.ndarray) -> np.ndarray:
        full = np.zeros((len(x), self.n), dtype=x.dtype)
        full[:, self.idx] = x
        return self.op(full)[:, self.idx]

    def abs_row_sums(self) -> np.ndarray:
        return self.op.abs_row_sums()[self.idx]
