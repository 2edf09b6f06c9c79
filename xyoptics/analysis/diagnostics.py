"""Where a trained network does its work: per-site and per-bond maps of "affected" and "marginal" regions.

Following Wang, Wanjura & Marquardt (2026), a site is *affected* when its equilibrium angle responds to the
training signal or to the inputs, and *marginal* when it barely moves. All angles are in radians; differences
are wrapped to (-pi, pi] before taking magnitudes, wrap(d) = pi - ((pi - d) mod 2 pi).

* nudge response (rad):       r_i = < |wrap(phi^beta_i - phi^0_i)| >_batch
  phi^0 a free equilibrium from a random start, phi^beta the equilibrium of E + beta C reached from phi^0
  (the two EP phases). For small beta, r_i ~ beta |d phi_i / d beta|.
* input sensitivity (rad/rad): s_i = < |wrap(phi^0_i(x + delta e_k) - phi^0_i(x))| / delta >_{batch, k}
  a one-sided finite difference of the free equilibrium w.r.t. each input angle x_k, every perturbed
  relaxation starting from the unperturbed equilibrium (so it follows the same local minimum).
* bond maps (dimensionless couplings): |W_b| and |W_b - W_b(previous)| per physical bond b.

Both site maps are zero on the clamped inputs. ``DiagnosticsRecorder`` stacks snapshots during training and
writes them to HDF5 (``core.files.write_arrays_h5``); ``plots.render_diagnostics`` draws them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.angles import wrap
from ..core.costs import Cost
from ..core.files import write_arrays_h5
from ..core.machine import Nudge, XYMachine
from ..core.network import Params, XYNetwork

SITE_MAPS = ("nudge_response", "input_sensitivity")
BOND_MAPS = ("abs_w", "abs_dw")


wrap_angle = wrap  # angle differences wrapped to (-pi, pi]


def nudge_response(machine: XYMachine, params: Params, inputs: np.ndarray, targets: np.ndarray, *,
                   beta: float, cost: Cost, rng: np.random.Generator) -> np.ndarray:
    """Mean over the batch of |wrap(phi^beta_i - phi^0_i)| for every site, shape (n_spins,), in radians.

    ``inputs`` (batch, n_inputs) and ``targets`` (batch, n_outputs) in radians; the free phase starts from
    random angles drawn with ``rng``, the nudged phase (E + beta C) from the free equilibrium."""
    net = machine.network
    x = np.atleast_2d(inputs)
    free = machine.equilibrate(params, x, rng=rng)
    nudged = machine.equilibrate(params, x, nudge=Nudge(beta, np.atleast_2d(targets), cost), start=free)
    out = np.mean(np.abs(wrap_angle(nudged.phases.astype(np.float64) - free.phases)), axis=0)
    out[net.inputs] = 0.0
    return out


def input_sensitivity(machine: XYMachine, params: Params, inputs: np.ndarray, *, delta: float = 1e-2,
                      rng: np.random.Generator) -> np.ndarray:
    """Mean over the batch and the input spins k of |wrap(phi0(x + delta e_k) - phi0(x))| / delta,
    shape (n_spins,), in radians per radian of input angle.

    One free relaxation from a random start (``rng``), then all batch * n_inputs perturbed copies in a single
    ``equilibrate`` call, each started from its unperturbed equilibrium. Finite-difference error is O(delta)
    plus the machine's residual tolerance divided by delta."""
    if delta <= 0:
        raise ValueError("delta must be positive")
    net = machine.network
    x = np.atleast_2d(np.asarray(inputs, dtype=np.float64))
    batch, n_in = x.shape
    free = machine.equilibrate(params, x, rng=rng)
    if n_in == 0:
        return np.zeros(net.n_spins)
    # copy k of the batch has input k shifted by delta: shape (n_in, batch, n_in) -> (n_in * batch, n_in)
    shifted = x[None, :, :] + delta * np.eye(n_in)[:, None, :]
    start = np.tile(free.phases, (n_in, 1))
    moved = machine.equilibrate(params, shifted.reshape(n_in * batch, n_in), start=start)
    diff = wrap_angle(moved.phases.astype(np.float64) - start)
    out = np.mean(np.abs(diff), axis=0) / delta
    out[net.inputs] = 0.0
    return out


def bond_maps(net: XYNetwork, params: Params, previous: Params | None = None) -> dict[str, np.ndarray]:
    """{"abs_w": |W_b|} per bond (n_bonds,), plus "abs_dw": |W_b - W_b(previous)| when ``previous`` is given.
    Bonds sharing one coupling parameter show the same value."""
    w = net.bond_weights(params).astype(np.float64)
    maps = {"abs_w": np.abs(w)}
    if previous is not None:
        maps["abs_dw"] = np.abs(w - net.bond_weights(previous).astype(np.float64))
    return maps


class DiagnosticsRecorder:
    """Snapshots of the site and bond maps during training.

    ``abs_dw`` of each snapshot is measured against the previously recorded parameters, or for the first
    snapshot against ``initial`` (typically the parameters before training); without ``initial`` the first
    snapshot's ``abs_dw`` is all zeros. ``delta`` is the input-sensitivity step (rad)."""

    def __init__(self, initial: Params | None = None, *, delta: float = 1e-2):
        self.delta = float(delta)
        self._reference = initial
        self._epochs: list[int] = []
        self._maps: dict[str, list[np.ndarray]] = {k: [] for k in SITE_MAPS + BOND_MAPS}

    def __len__(self) -> int:
        return len(self._epochs)

    def record(self, epoch: int, machine: XYMachine, params: Params, x: np.ndarray, targets: np.ndarray, *,
               beta: float, cost: Cost, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Measure all four maps for ``params`` on the batch ``x`` / ``targets``; returns this snapshot."""
        net = machine.network
        snap = {"nudge_response": nudge_response(machine, params, x, targets, beta=beta, cost=cost, rng=rng),
                "input_sensitivity": input_sensitivity(machine, params, x, delta=self.delta, rng=rng)}
        snap.update(bond_maps(net, params, self._reference))
        snap.setdefault("abs_dw", np.zeros(net.n_couplings))
        for k in self._maps:
            self._maps[k].append(snap[k])
        self._epochs.append(int(epoch))
        self._reference = params.map(np.copy)
        return snap

    def arrays(self) -> dict[str, np.ndarray]:
        """"epochs" (k,), "nudge_response" and "input_sensitivity" (k, n_spins), "abs_w" and "abs_dw"
        (k, n_bonds), all float64 except the integer epochs."""
        if not self._epochs:
            raise ValueError("nothing recorded yet")
        out = {"epochs": np.asarray(self._epochs, dtype=np.int64)}
        out.update({k: np.stack(v).astype(np.float64) for k, v in self._maps.items()})
        return out

    def state_dict(self) -> dict:
        """Snapshots and reference parameters as arrays, for checkpoints."""
        state = {"delta": self.delta, "epochs": np.asarray(self._epochs, dtype=np.int64)}
        state.update({k: np.asarray(v) for k, v in self._maps.items() if v})
        if self._reference is not None:
            state["reference"] = self._reference.as_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.delta = float(state["delta"])
        self._epochs = [int(e) for e in state["epochs"]]
        self._maps = {k: list(state[k]) if k in state else [] for k in self._maps}
        self._reference = Params(**state["reference"]) if "reference" in state else None

    def save(self, path: str | Path, attrs: dict | None = None) -> None:
        """Write ``arrays()`` to one HDF5 file (atomically), with ``delta`` and any ``attrs`` as attributes."""
        write_arrays_h5(path, self.arrays(), {"delta": self.delta, **(attrs or {})})
