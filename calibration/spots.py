"""Spot map and per-spin optical path offsets, measured through the SLM and camera only.

Spot map. With every spin injection-locked and the reference stepped through four pistons, per-pixel phase
shifting gives the fringe modulation B(x) = 2 |a_i g_i(x)| r, proportional to each spot's field profile. In a
window of one spot pitch around each nominal centre, the B-weighted variance per axis, s^2 = 2 sigma^2 for a
Gaussian intensity spot of width sigma, gives the width, and the B-weighted centroid a first centre; the centre
is then refined twice as the centroid within 2.5 widths of the previous one, which keeps a displaced spot's own
tail in and its neighbours' tails out (centre error 0.11 px rms on the default rig, 0.25 px with twice its
spot jitter). All of it works on one small window per spot (the pitch box plus room for the disc), so the cost
grows with the number of spots, not with spots times camera pixels. (slmsuite's Fourier calibration maps SLM
k-space to camera pixels for holograms; the spins' spots here are fixed by the optics, not steered by the SLM,
so it does not apply.)

Path offsets. With every spin locked to phase 0, the read angle of spin i is o_i minus a common reference
phase; averaging ``repeats`` reads (circular mean) and removing the common part (zero circular mean) leaves the
per-spin offsets o_i in radians, which the readout subtracts. The same reads give each spot's pooled fringe
modulation and phase-shifting residual (counts, mean over the repeats), which the readout's quality floors
compare every later measurement with. Neighbouring spots' field tails reach into each spot's readout weights,
so these offsets hold for spins that all show the same phase (as every spot's crosstalk is then in phase).

Spot mixing (used by the transfer procedure, which needs unbiased angles of spins at different phases). A
pooled read of spot i is linear in the spin fields, z_i = c sum_j K_ij e^{i phi_j} (c: the read's common
reference phase and power; spin amplitudes are fixed), with K_ij != 0 only for spots whose fields reach i's
weights. ``measure_spot_mixing`` measures K with every spin clamped to known phase patterns, and
``SpotMixing.unmix`` solves K u = z for each read: arg u_i is spin i's phase, path offset and crosstalk
removed.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu
from scipy.spatial import cKDTree

from xyoptics.core.angles import wrap
from xyoptics.hil.patches import CUT_SIGMAS
from xyoptics.hil.readout import phase_shifting

from .session import RigSession

MIN_MODULATION = 20.0  # counts: below this no fringes are considered present
MIXING_FLOOR = 1e-3  # a spot's field below this fraction of its peak does not count as reaching another spot
MIXING_READS = 16  # at least this many reads measure the spot mixing


def measure_spot_map(session: RigSession, repeats: int = 2) -> tuple[dict, dict]:
    """Spot centres (n_spins, 2) and widths (n_spins,) in camera pixels."""
    layout = session.layout
    eta, alpha = session.clamped(np.zeros(session.n_spins))
    modulation = 0.0
    for _ in range(repeats):
        frames, steps = session.phase_stack(eta, alpha)
        modulation = modulation + phase_shifting(frames, steps).modulation / repeats
    session.require_light(frames, modulation, MIN_MODULATION)
    pitch = layout.config.spot_pitch_px
    nominal = np.asarray(layout.spot_centres, dtype=float)
    # one local window per spot, wide enough for its pitch box and for the disc around a displaced centre
    half = int(np.ceil(pitch / 2 + 2.5 * pitch / 4)) + 1
    offsets = np.arange(-half, half + 1)
    base = np.rint(nominal).astype(np.int64)
    rows, cols = (base[:, 0, None] + offsets)[:, :, None], (base[:, 1, None] + offsets)[:, None, :]
    height, width = modulation.shape
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    window = np.where(inside, modulation[rows.clip(0, height - 1), cols.clip(0, width - 1)], 0.0)  # (n, K, K)
    box = inside & (np.abs(rows - nominal[:, 0, None, None]) <= pitch / 2) & (
        np.abs(cols - nominal[:, 1, None, None]) <= pitch / 2)
    cy, cx, widths = _centroid(window, rows, cols, box)
    radius = 2.5 * np.minimum(widths, pitch / 4)
    for _ in range(2):  # then a disc around the estimate: the spot's own tail in, its neighbours' tails out
        d2 = (rows - cy[:, None, None]) ** 2 + (cols - cx[:, None, None]) ** 2
        disc = inside & (d2 <= radius[:, None, None] ** 2)
        cy, cx, _ = _centroid(window, rows, cols, disc)
    centres = np.stack([cy, cx], axis=1)
    quality = {"min_modulation_counts": float(min(modulation[tuple(np.round(c).astype(int))] for c in centres)),
               "max_shift_px": float(np.max(np.hypot(*(centres - layout.spot_centres).T)))}
    return {"centres": centres, "widths": widths}, quality


def _centroid(window, rows, cols, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per spot: B-weighted centre (row, col) and width (px) of the fringe modulation ``window`` (n, K, K) inside
    ``mask``, with the noise floor (below 2 % of the masked peak) ignored."""
    w = np.where(mask, window, 0.0)
    w = np.where(w > 0.02 * w.max(axis=(1, 2), keepdims=True), w, 0.0)
    total = w.sum(axis=(1, 2))
    cy, cx = (w * rows).sum(axis=(1, 2)) / total, (w * cols).sum(axis=(1, 2)) / total
    var = (w * ((rows - cy[:, None, None]) ** 2 + (cols - cx[:, None, None]) ** 2)).sum(axis=(1, 2)) / total / 2
    return cy, cx, np.sqrt(var / 2)


def measure_path_offsets(session: RigSession, repeats: int = 4) -> tuple[dict, dict]:
    """Per-spin path offsets (n_spins,) in radians, zero circular mean."""
    eta, alpha = session.clamped(np.zeros(session.n_spins))
    reads, modulation, residual = [], [], []
    for _ in range(repeats):
        frames, steps = session.phase_stack(eta, alpha)
        est = session.read_spots(frames, steps)
        session.require_light(frames, est.modulation, MIN_MODULATION)
        reads.append(est.theta)
        modulation.append(est.modulation)
        residual.append(est.residual)
    reads = np.array(reads)
    mean = np.angle(np.mean(np.exp(1j * reads), axis=0))
    offsets = wrap(mean - np.angle(np.mean(np.exp(1j * mean))))
    spread = np.abs(wrap(reads - mean)).max()
    # the references of the readout's quality floors: each spot's modulation and residual with every spin locked
    return ({"offsets": offsets, "modulation": np.mean(modulation, axis=0), "residual": np.mean(residual, axis=0)},
            {"repeat_spread_rad": float(spread)})


class SpotMixing:
    """The readout's linear spot mixing K (n_spins x n_spins, sparse): a pooled phase-shifting read of spot i is
    z_i = m_i e^{i theta_i} = c sum_j K_ij e^{i phi_j} for spin phases phi (c: the read's common reference phase
    and power). ``unmix`` returns the spin phases of reads, crosstalk and path offsets removed."""

    def __init__(self, matrix):
        self.matrix = sparse.csc_matrix(matrix)
        self._solve = splu(self.matrix).solve
        diag = np.abs(self.matrix.diagonal())
        off = abs(self.matrix - sparse.diags(self.matrix.diagonal())).tocsr()
        self.max_leak = float(off.multiply(1 / diag[:, None]).max()) if off.nnz else 0.0  # largest |K_ij / K_ii|

    def unmix(self, theta: np.ndarray, modulation: np.ndarray) -> np.ndarray:
        """Spin phases (rad, up to the read's common phase) from a read's spot phases and modulations."""
        return np.angle(self._solve((modulation * np.exp(1j * theta)).astype(complex)))


def measure_spot_mixing(session: RigSession) -> SpotMixing:
    """Measure K (``SpotMixing``) with every spin clamped. Spot j's field reaches spot i's readout weights only
    within ``mixing_radius``; spots get colours q so that the spots within that radius of any spot all differ
    (greedy), and in read t = 0 .. T - 1 spot j is clamped to phase p_j(t) = 2 pi (q_j + 1) t / T, T the
    smallest prime that exceeds the colour count and is at least ``MIXING_READS``: every spot then steps through
    the same T phases (so the clamps' own phase errors are common to all spots) at its own frequency. Then
    K_ij = (1/T) sum_t (z_i(t) / c(t)) e^{-i p_j(t)} picks out the one spot of each colour near i. The common
    factor c(t) (the reference's phase and power drift between reads) is estimated from the own terms,
    c(t) ~ sum_i z_i(t) conj(K_ii e^{i p_i(t)}) / sum_i |K_ii|^2, and K estimated again."""
    layout = session.layout
    n = session.n_spins
    near = [np.array([i]) for i in range(n)]
    if n > 1:
        pairs = cKDTree(layout.spot_centres).query_pairs(mixing_radius(layout), output_type="ndarray")
        graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        graph = (graph + graph.T + sparse.identity(n)).tocsr()
        near = np.split(graph.indices, graph.indptr[1:-1])
    colour = np.full(n, -1)
    for i in range(n):  # distance-2 colouring: a spot's neighbours all differ from each other and from it
        taken = {colour[k] for j in near[i] for k in near[j]}
        colour[i] = next(c for c in range(n) if c not in taken)
    count = max(colour.max() + 2, MIXING_READS)
    while any(count % d == 0 for d in range(2, int(np.sqrt(count)) + 1)):
        count += 1
    phases = 2 * np.pi * np.outer(np.arange(count), colour + 1) / count  # (reads, spins)
    z = []
    for p in phases:
        frames, steps = session.phase_stack(*session.clamped(p))
        est = session.read_spots(frames, steps)
        session.require_light(frames, est.modulation, MIN_MODULATION)
        z.append(est.modulation * np.exp(1j * est.theta))
    z, u = np.array(z), np.exp(1j * phases)
    rows = np.concatenate([np.full(len(k), i) for i, k in enumerate(near)])
    cols = np.concatenate(near)
    common = np.ones(count, dtype=complex)
    for _ in range(2):
        values = np.mean(z[:, rows] / common[:, None] * np.conj(u[:, cols]), axis=0)
        own = values[rows == cols]
        common = (z * np.conj(own * u)).sum(axis=1) / np.sum(np.abs(own) ** 2)
        common /= np.mean(common)
    return SpotMixing(sparse.coo_matrix((values, (rows, cols)), shape=(n, n)))


def mixing_radius(layout) -> float:
    """Distance (px) beyond which a spot's field, a Gaussian of width sqrt(2) sigma, stays below ``MIXING_FLOOR``
    of its peak everywhere inside another spot's readout weights (cut at ``CUT_SIGMAS`` widths)."""
    sigma = layout.config.spot_sigma_px if layout.calibration.spot_sigma is None else layout.calibration.spot_sigma
    sigma = float(np.max(sigma))
    return (CUT_SIGMAS + 2 * np.sqrt(np.log(1 / MIXING_FLOOR))) * sigma


def spot_map_truth_error(truth, arrays: dict) -> dict:
    d = arrays["centres"] - truth.spot_centres
    return {"centre_rms_px": float(np.sqrt(np.mean(np.sum(d ** 2, axis=1)))),
            "width_rms_rel": float(np.sqrt(np.mean((arrays["widths"] / truth.spot_sigma - 1) ** 2)))}


def path_offsets_truth_error(truth, arrays: dict) -> dict:
    d = wrap(arrays["offsets"] - truth.path_offsets)
    d = wrap(d - np.angle(np.mean(np.exp(1j * d))))
    return {"offset_rms_rad": float(np.sqrt(np.mean(d ** 2)))}
