"""The network representation shared by every architecture, and its XY energy, forces and parameter gradients.

Energy of a configuration of spin angles phi (radians), couplings W_b on bonds b = (i, j), and a bias field of
amplitude h_i and direction psi_i on every non-input site:

    E(phi) = - sum_b W_b cos(phi_i - phi_j) - sum_i h_i cos(phi_i - psi_i)            (dimensionless)

Bond b uses coupling parameter w[edge_param[b]], so several bonds may share one trainable number (CNN-like
layers). Input spins are clamped: their force is zero and they carry no bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .operators import CouplingOperator
from .structure import Block, block_correlations, check_blocks, structured_operator


@dataclass(frozen=True)
class Params:
    """Trainable parameters: coupling parameters ``w`` (n_coupling_params,), bias amplitudes ``h`` and
    directions ``psi`` (n_spins,), in radians for psi. Entries of h and psi on input sites are unused.

    Gradients use the same container, optionally with a leading batch axis.
    """

    w: np.ndarray
    h: np.ndarray
    psi: np.ndarray

    NAMES = ("w", "h", "psi")

    def map(self, fn, *others: "Params") -> "Params":
        """Apply ``fn`` field by field, zipping in the same fields of ``others``."""
        return Params(*(fn(getattr(self, n), *(getattr(o, n) for o in others)) for n in self.NAMES))

    def astype(self, dtype) -> "Params":
        return self.map(lambda a: np.asarray(a, dtype=dtype))

    def as_dict(self) -> dict[str, np.ndarray]:
        return {n: getattr(self, n) for n in self.NAMES}

    @classmethod
    def from_dict(cls, d: dict) -> "Params":
        return cls(*(np.asarray(d[n]) for n in cls.NAMES))


@dataclass(frozen=True, eq=False)
class XYNetwork:
    """An XY spin network: ``n_spins`` angles, bonds ``edges`` (n_bonds, 2) using coupling parameters
    ``edge_param`` (n_bonds,), clamped ``inputs`` and read-out ``outputs`` (index arrays, in class order).

    Optional: ``blocks`` group bonds of lattice-like structure (see ``structure``); with ``structured`` True
    every coupling product and bond correlation goes through them (stencils and kernel-offset sums) instead of
    the general dense / CSR path. Both give the same numbers; the general path is the default because it
    measured faster here (``benchmarks/operators.py``). ``positions`` (n_spins, 2) place each site for plots."""

    n_spins: int
    edges: np.ndarray
    edge_param: np.ndarray
    inputs: np.ndarray
    outputs: np.ndarray
    name: str = "graph"
    n_coupling_params: int = field(default=-1)
    blocks: tuple[Block, ...] = ()
    positions: np.ndarray | None = None
    structured: bool = False

    def __post_init__(self):
        edges = np.asarray(self.edges, dtype=np.int64).reshape(-1, 2)
        edge_param = np.asarray(self.edge_param, dtype=np.int64).reshape(-1)
        inputs = np.asarray(self.inputs, dtype=np.int64).reshape(-1)
        outputs = np.asarray(self.outputs, dtype=np.int64).reshape(-1)
        n = int(self.n_spins)
        if len(edge_param) != len(edges):
            raise ValueError(f"edge_param has {len(edge_param)} entries for {len(edges)} bonds")
        if edges.size and (edges.min() < 0 or edges.max() >= n):
            raise ValueError(f"bond endpoints must lie in [0, {n})")
        if np.any(edges[:, 0] == edges[:, 1]):
            raise ValueError("a bond may not join a spin to itself")
        for label, idx in (("inputs", inputs), ("outputs", outputs)):
            if idx.size and (idx.min() < 0 or idx.max() >= n or len(np.unique(idx)) != len(idx)):
                raise ValueError(f"{label} must be distinct indices in [0, {n})")
        if np.intersect1d(inputs, outputs).size:
            raise ValueError("a spin cannot be both an input and an output")
        n_params = int(edge_param.max()) + 1 if self.n_coupling_params < 0 and len(edge_param) else 0
        n_params = max(n_params, self.n_coupling_params)
        if edge_param.size and (edge_param.min() < 0 or edge_param.max() >= n_params):
            raise ValueError(f"edge_param must lie in [0, {n_params})")
        for name, value in (("n_spins", n), ("edges", edges), ("edge_param", edge_param),
                            ("inputs", inputs), ("outputs", outputs), ("n_coupling_params", n_params)):
            object.__setattr__(self, name, value)
        blocks = tuple(self.blocks)
        check_blocks(edges, blocks)
        object.__setattr__(self, "blocks", blocks)
        if self.positions is not None:
            pos = np.asarray(self.positions, dtype=np.float64)
            if pos.shape != (n, 2):
                raise ValueError(f"positions must have shape ({n}, 2), got {pos.shape}")
            object.__setattr__(self, "positions", pos)
        free = np.ones(n, dtype=bool)
        free[inputs] = False
        object.__setattr__(self, "free", free)
        shared = not np.array_equal(edge_param, np.arange(len(edges)))
        sharing = (sp.csr_matrix((np.ones(len(edges)), (np.arange(len(edges)), edge_param)),
                                 shape=(len(edges), n_params)) if shared else None)
        object.__setattr__(self, "_sharing", sharing)

    # -- counts ------------------------------------------------------------------------------------------
    @property
    def n_couplings(self) -> int:
        """Number of physical bonds."""
        return len(self.edges)

    @property
    def n_free(self) -> int:
        return int(self.free.sum())

    @property
    def n_parameters(self) -> int:
        """Trainable numbers: coupling parameters plus h and psi on every non-input site."""
        return self.n_coupling_params + 2 * self.n_free

    def bond_weights(self, params: Params) -> np.ndarray:
        """W_b for every bond (n_bonds,)."""
        return np.asarray(params.w)[self.edge_param]

    @property
    def uses_blocks(self) -> bool:
        return self.structured and bool(self.blocks)

    def operator(self, params: Params, dtype=np.float64):
        """The coupling product x -> x @ W (structured path when ``uses_blocks``)."""
        w = self.bond_weights(params)
        if self.uses_blocks:
            return structured_operator(self.n_spins, self.edges, w, self.blocks, dtype)
        return CouplingOperator(self.n_spins, self.edges, w, dtype)

    def free_operator(self, params: Params, dtype=np.float64, general: bool = False):
        """The coupling product restricted to free spins: x_free -> (x @ W)_free over bonds between free spins
        (a dense / CSR ``CouplingOperator`` when ``general``, whatever the network's own path)."""
        both = self.free[self.edges[:, 0]] & self.free[self.edges[:, 1]]
        free_idx = np.flatnonzero(self.free)
        if self.uses_blocks and not general:
            weights = np.where(both, self.bond_weights(params), 0.0)
            return structured_operator(self.n_spins, self.edges, weights, self.blocks, dtype, subset=free_idx)
        new_index = np.cumsum(self.free) - 1
        return CouplingOperator(len(free_idx), new_index[self.edges[both]], self.bond_weights(params)[both], dtype)

    def bias_field(self, params: Params, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
        """Bias field h_i (cos psi_i, sin psi_i) on non-input sites, zero on inputs."""
        h = np.where(self.free, params.h, 0.0)
        return (h * np.cos(params.psi)).astype(dtype), (h * np.sin(params.psi)).astype(dtype)

    def init_params(self, rng: np.random.Generator, coupling_std: float | None = None,
                    bias_max: float = 0.5, dtype=np.float64) -> Params:
        """Random initial parameters: w ~ N(0, coupling_std^2) with coupling_std = 1/sqrt(mean degree of the
        free spins) unless given, h ~ U(0, bias_max), psi ~ U(-pi, pi)."""
        if coupling_std is None:
            degree = np.bincount(self.edges.ravel(), minlength=self.n_spins)[self.free]
            coupling_std = 1.0 / np.sqrt(max(degree.mean() if degree.size else 1.0, 1.0))
        w = rng.normal(0.0, coupling_std, self.n_coupling_params)
        h = np.where(self.free, rng.uniform(0.0, bias_max, self.n_spins), 0.0)
        psi = rng.uniform(-np.pi, np.pi, self.n_spins)
        return Params(w, h, psi).astype(dtype)

    # -- energy, forces, gradients (full network, batched: phases has shape (batch, n_spins)) -----------
    def energy(self, params: Params, phases: np.ndarray) -> np.ndarray:
        """E(phi) for each sample, shape (batch,)."""
        phases = np.atleast_2d(phases)
        c, s = np.cos(phases), np.sin(phases)
        wc, ws = field_from(self.operator(params, phases.dtype), c, s)
        hx, hy = self.bias_field(params, phases.dtype)
        return -0.5 * np.sum(c * wc + s * ws, axis=1) - (c @ hx + s @ hy)

    def forces(self, params: Params, phases: np.ndarray) -> np.ndarray:
        """-dE/dphi, shape (batch, n_spins); zero on clamped inputs."""
        phases = np.atleast_2d(phases)
        c, s = np.cos(phases), np.sin(phases)
        hx, hy = self.bias_field(params, phases.dtype)
        wc, ws = field_from(self.operator(params, phases.dtype), c, s)
        return np.where(self.free, c * (ws + hy) - s * (wc + hx), 0.0).astype(phases.dtype)

    def bond_correlations(self, phases: np.ndarray) -> np.ndarray:
        """cos(phi_i - phi_j) for every bond, shape (batch, n_bonds): the quantity EP measures."""
        phases = np.atleast_2d(phases)
        if not self.uses_blocks:
            return np.cos(phases[:, self.edges[:, 0]] - phases[:, self.edges[:, 1]])
        out = np.empty((len(phases), self.n_couplings), dtype=phases.dtype)
        filled = block_correlations(self.blocks, np.cos(phases), np.sin(phases), out)
        rest = self.edges[~filled]
        out[:, ~filled] = np.cos(phases[:, rest[:, 0]] - phases[:, rest[:, 1]])
        return out

    def parameter_gradients(self, params: Params, phases: np.ndarray) -> Params:
        """dE/dw, dE/dh, dE/dpsi per sample (leading batch axis).

        dE/dw_k = -sum_{b: edge_param[b] = k} cos(phi_i - phi_j); dE/dh_i = -cos(phi_i - psi_i);
        dE/dpsi_i = -h_i sin(phi_i - psi_i); both bias derivatives vanish on input sites."""
        phases = np.atleast_2d(phases)
        dw = -self.bond_correlations(phases)
        if self._sharing is not None:
            dw = np.asarray((self._sharing.T @ dw.T).T)
        rel = phases - np.asarray(params.psi, dtype=phases.dtype)
        dh = np.where(self.free, -np.cos(rel), 0.0)
        dpsi = np.where(self.free, -np.asarray(params.h, dtype=phases.dtype) * np.sin(rel), 0.0)
        return Params(dw.astype(phases.dtype), dh.astype(phases.dtype), dpsi.astype(phases.dtype))

    def with_inputs(self, phases: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """Copy of ``phases`` (batch, n_spins) with the input spins set to ``inputs`` (batch, n_inputs)."""
        out = np.array(phases, copy=True)
        out[:, self.inputs] = inputs
        return out

    def random_phases(self, rng: np.random.Generator, inputs: np.ndarray, dtype=np.float64) -> np.ndarray:
        """Start state: every non-input spin uniform in [-pi, pi), inputs clamped to ``inputs``."""
        inputs = np.atleast_2d(inputs)
        phases = rng.uniform(-np.pi, np.pi, (len(inputs), self.n_spins)).astype(dtype)
        return self.with_inputs(phases, inputs)


def field_from(op, c: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W cos phi, W sin phi) with one operator call on the stacked batch."""
    y = op(np.concatenate([c, s], axis=0))
    return y[: len(c)], y[len(c):]
