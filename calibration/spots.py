"""Spot map and per-spin optical path offsets, measured through the SLM and camera only.

Spot map. With every spin injection-locked and the reference stepped through four pistons, per-pixel phase
shifting gives the fringe modulation B(x) = 2 |a_i g_i(x)| r, proportional to each spot's field profile. In a
window of one spot pitch around each nominal centre, the B-weighted variance per axis, s^2 = 2 sigma^2 for a
Gaussian intensity spot of width sigma, gives the width, and the B-weighted centroid a first centre; the centre
is then refined twice as the centroid within 2.5 widths of the previous one, which keeps a displaced spot's own
tail in and its neighbours' tails out (centre error 0.11 px rms on the default rig, 0.25 px with twice its
spot jitter). (slmsuite's Fourier calibration maps SLM k-space to camera pixels for holograms; the spins'
spots here are fixed by the optics, not steered by the SLM, so it does not apply.)

Path offsets. With every spin locked to phase 0, the read angle of spin i is o_i minus a common reference
phase; averaging ``repeats`` reads (circular mean) and removing the common part (zero circular mean) leaves the
per-spin offsets o_i in radians, which the readout subtracts. The same reads give each spot's pooled fringe
modulation and phase-shifting residual (counts, mean over the repeats), which the readout's quality floors
compare every later measurement with.
"""

from __future__ import annotations

import numpy as np

from xyoptics.core.angles import wrap
from xyoptics.hil.readout import phase_shifting

from .session import RigSession

MIN_MODULATION = 20.0  # counts: below this no fringes are considered present


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
    rows, cols = np.mgrid[:modulation.shape[0], :modulation.shape[1]]
    centres = np.zeros((session.n_spins, 2))
    widths = np.zeros(session.n_spins)
    for i, (r0, c0) in enumerate(layout.spot_centres):
        box = (np.abs(rows - r0) <= pitch / 2) & (np.abs(cols - c0) <= pitch / 2)
        cy, cx, widths[i] = _centroid(modulation, rows, cols, box)
        radius = 2.5 * min(widths[i], pitch / 4)
        for _ in range(2):  # then a disc around the estimate: the spot's own tail in, its neighbours' tails out
            disc = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius ** 2
            cy, cx, _ = _centroid(modulation, rows, cols, disc)
        centres[i] = cy, cx
    quality = {"min_modulation_counts": float(min(modulation[tuple(np.round(c).astype(int))] for c in centres)),
               "max_shift_px": float(np.max(np.hypot(*(centres - layout.spot_centres).T)))}
    return {"centres": centres, "widths": widths}, quality


def _centroid(modulation, rows, cols, window) -> tuple[float, float, float]:
    """B-weighted centre (row, col) and width (px) of the fringe modulation inside ``window``, with the noise
    floor (below 2 % of the window's peak) ignored."""
    w = np.where(window, modulation, 0.0)
    w = np.where(w > 0.02 * w.max(), w, 0.0)
    total = w.sum()
    cy, cx = (w * rows).sum() / total, (w * cols).sum() / total
    var = ((w * ((rows - cy) ** 2 + (cols - cx) ** 2)).sum() / total) / 2
    return float(cy), float(cx), float(np.sqrt(var / 2))


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


def spot_map_truth_error(truth, arrays: dict) -> dict:
    d = arrays["centres"] - truth.spot_centres
    return {"centre_rms_px": float(np.sqrt(np.mean(np.sum(d ** 2, axis=1)))),
            "width_rms_rel": float(np.sqrt(np.mean((arrays["widths"] / truth.spot_sigma - 1) ** 2)))}


def path_offsets_truth_error(truth, arrays: dict) -> dict:
    d = wrap(arrays["offsets"] - truth.path_offsets)
    d = wrap(d - np.angle(np.mean(np.exp(1j * d))))
    return {"offset_rms_rad": float(np.sqrt(np.mean(d ** 2)))}
