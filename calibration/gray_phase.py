"""SLM gray -> phase response, measured through the camera, as the lookup table slmsuite encodes with.

Every spin is injection-locked by its clamp tile showing a binary grating of period 4 px whose pixels take the
gray levels 0 and g: its first order is proportional to e^{i phi(0)} - e^{i phi(g)}, so the locked phase is
(phi(0) + phi(g))/2 + const. With every coupling dark, the spin follows the field whatever its strength.
Reading all spins (phase shifting) for each g and taking the circular mean over spins of the change since the
first level gives Delta(g) = (phi(g) - phi(g_1))/2, so phi(g) = 2 Delta(g) up to a constant. The
result is ``gamma`` in units of 2 pi, increasing with level (slmsuite's convention for ``SLM.set_gamma``),
zero at level 0. Level 0 itself would give no first order, so the sweep starts above it and extrapolates.
"""

from __future__ import annotations

import numpy as np

from .session import CalibrationFailed, RigSession
from .spots import MIN_MODULATION


def _gray(session: RigSession, phase: np.ndarray) -> np.ndarray:
    """Integer display of a phase image with the SLM's sign convention and linear scaling (no LUT)."""
    slm = session.slm
    return (np.rint(slm._gamma_sign * phase * slm.bitresolution / (2 * np.pi)).astype(np.int64)
            % slm.bitresolution).astype(slm.dtype)


def measure_gray_phase(session: RigSession, n_levels: int = 48) -> tuple[dict, dict]:
    slm, layout = session.slm, session.layout
    bitres = slm.bitresolution
    levels = np.unique(np.linspace(bitres / (2 * n_levels), bitres - 1, n_levels).round().astype(np.int64))
    t, p = layout.config.tile_px, layout.config.period_px
    x = np.arange(t)
    high = (x % p) >= p // 2  # binary grating: the second half of each period shows level g, the first 0
    steps = 2 * np.pi * np.arange(4) / 4
    reads = []
    for g in levels:
        frames = []
        for delta in steps:
            eta, alpha = session.settings(delta)
            display = _gray(session, layout.image(eta, alpha))
            for r0, c0 in layout.tile_origin[layout.clamp_tile]:
                display[r0:r0 + t, c0 + x[high]] = g
                display[r0:r0 + t, c0 + x[~high]] = 0
            session.show_display(display)
            frames.append(session.grab(1)[0])
        est = session.read_spots(np.array(frames), steps)
        session.require_light(np.array(frames), est.modulation, MIN_MODULATION)
        reads.append(est.theta)
    reads = np.array(reads)  # (levels, spins)
    change = np.angle(np.mean(np.exp(1j * (reads - reads[0])), axis=1))
    phi = 2 * np.unwrap(change)
    phi *= np.sign(phi[-1] - phi[0]) or 1.0
    slope = (phi[-1] - phi[0]) / (levels[-1] - levels[0])
    gamma = (phi - phi[0] + slope * levels[0]) / (2 * np.pi)
    if not np.all(np.diff(gamma) > -0.02):
        raise CalibrationFailed("measured gray->phase response is not monotonic: readout too noisy?")
    spread = np.abs(np.angle(np.exp(1j * (reads - reads[0] - change[:, None])))).max()
    return ({"levels": levels, "gamma": gamma, "bitresolution": np.array(bitres)},
            {"range_2pi": float(gamma[-1] - gamma[0]), "spin_spread_rad": float(spread)})


def apply_gray_phase(slm, arrays: dict) -> None:
    """Load the measured response into slmsuite's lookup table (encodings then realise the asked phase)."""
    slm.set_gamma(arrays["gamma"], levels=arrays["levels"])


def gray_phase_truth_error(truth, arrays: dict) -> dict:
    x = arrays["levels"] / float(arrays["bitresolution"])
    f = x + truth.gamma_a * np.sin(2 * np.pi * x) / (2 * np.pi)
    d = arrays["gamma"] - f
    d -= d.mean()
    return {"gamma_rms_2pi": float(np.sqrt(np.mean(d ** 2)))}
