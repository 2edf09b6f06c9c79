"""Light-path self-test: is there a working optical XY machine behind the SLM and the camera?

Run before any training step (``xyoptics rig check``, and every lab session before its first step). Three
stages, in order; the first that fails raises ``SelfTestFailed`` naming itself:

1. ``dark``: with the beam shutter closed the spots show no fringes, and with it open they do: the median
   fringe modulation B (counts) must grow at least ``LIGHT_RATIO`` times. Skipped (and reported so) when the
   rig has no shutter.
2. ``reference``: every spin locked at phase 0 by its clamp tile while the reference piston steps through the
   phase-shifting sequence. Each spot must be modulated: B_i >= ``MIN_SNR`` * sigma_B with sigma_B the noise
   of the pooled modulation as the readout judges it (``readout.modulation_noise``: the fit residual pooled
   over the spot, or the calibrated dark noise; when the fit is exact, 1e-3 of the brightest spot's B). No reference beam, no light or a frozen camera fail here.
3. ``pilot``: a pilot spin locked in turn at 0, pi/2, pi and 3 pi/2 next to a gauge spin locked at 0. The read
   phase difference must follow the written one, |wrap((d_m - d_0) - m pi/2)| <= ``PILOT_TOL_RAD``. A frozen
   SLM, a camera that does not see the spins, or a device pair without XY physics fails here.
"""

from __future__ import annotations

import numpy as np

from ..core.angles import wrap
from ..core.machine import DeviceFault
from .readout import modulation_noise

LIGHT_RATIO = 10.0  # open / closed median fringe modulation
MIN_SNR = 10.0  # fringe modulation over its noise, per spot
PILOT_TOL_RAD = 0.5  # pilot steps are pi/2 = 1.57 rad apart
PILOT_STEPS = np.arange(4) * np.pi / 2


class SelfTestFailed(DeviceFault):
    """The light path failed a self-test stage; ``stage`` names it."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"light-path self-test failed at stage '{stage}': {message}")
        self.stage = stage


def _modulation_noise(machine, est) -> np.ndarray:
    """sigma_B per spot (counts) as the readout judges it (``readout.modulation_noise``), with a floor where the
    fit is exact (a noiseless rig): 1e-3 of the brightest spot's modulation / MIN_SNR."""
    sigma = modulation_noise(est, machine.n_steps, machine.noise_factor, machine.dark_noise)
    return np.maximum(sigma, max(1e-3 * float(np.max(est.modulation, initial=0.0)) / MIN_SNR, 1e-12))


def check_dark(machine, shutter) -> dict:
    if shutter is None:
        return {"status": "skipped", "reason": "no shutter configured"}
    zero = np.zeros(machine.network.n_spins)
    shutter.close()
    try:
        closed, _ = machine.read_clamped(zero)
    finally:
        shutter.open()
    opened, _ = machine.read_clamped(zero)
    b_closed, b_open = float(np.median(closed.modulation)), float(np.median(opened.modulation))
    report = {"status": "ok", "median_modulation_closed": b_closed, "median_modulation_open": b_open}
    if not b_open > LIGHT_RATIO * b_closed:
        raise SelfTestFailed("dark", f"fringes with the shutter closed ({b_closed:.3g} counts) are not well below "
                                     f"those with it open ({b_open:.3g}): is the shutter blocking the beam, and "
                                     f"does light reach the camera?")
    return report


def check_reference(machine) -> dict:
    est, saturated = machine.read_clamped(np.zeros(machine.network.n_spins))
    noise = _modulation_noise(machine, est)
    snr = np.asarray(est.modulation, dtype=float) / noise
    report = {"status": "ok", "min_snr": float(snr.min()), "median_modulation": float(np.median(est.modulation)),
              "saturated_spots": int(np.count_nonzero(saturated))}
    weak = np.flatnonzero(~(snr >= MIN_SNR))
    if len(weak):
        raise SelfTestFailed("reference", f"{len(weak)} of {len(snr)} spots show no reference fringes "
                                          f"(signal/noise {snr.min():.2g} < {MIN_SNR:g}; spins {weak[:5].tolist()}): "
                                          f"no reference beam, no light, or a camera that does not see the spots")
    if saturated.any():
        raise SelfTestFailed("reference", f"{int(saturated.sum())} spots saturate the camera: lower the exposure "
                                          f"or the laser power")
    return report


def check_pilot(machine, pilot: int | None = None, gauge: int = 0) -> dict:
    n = machine.network.n_spins
    if n < 2:
        raise SelfTestFailed("pilot", "the pilot test needs at least two spins on the rig")
    pilot = n - 1 if pilot is None else pilot
    diffs = []
    for phase in PILOT_STEPS:
        written = np.zeros(n)
        written[pilot] = phase
        est, _ = machine.read_clamped(written)
        diffs.append(float(wrap(est.theta[pilot] - est.theta[gauge])))
    errors = np.abs(wrap(np.array(diffs) - diffs[0] - PILOT_STEPS))
    report = {"status": "ok", "pilot": int(pilot), "gauge": int(gauge), "max_error_rad": float(errors.max()),
              "read_steps_rad": [float(wrap(d - diffs[0])) for d in diffs]}
    if errors.max() > PILOT_TOL_RAD:
        raise SelfTestFailed("pilot", f"spin {pilot} written at 0, pi/2, pi, 3pi/2 was read at "
                                      f"{np.round(report['read_steps_rad'], 2).tolist()} rad (error up to "
                                      f"{errors.max():.2f} > {PILOT_TOL_RAD} rad): the rig does not follow the "
                                      f"SLM (frozen or unresponsive SLM, or no XY optics behind it)")
    return report


def light_path_check(machine, shutter=None) -> dict:
    """Run the stages in order on an ``OpticalXYMachine`` (and the rig's shutter, if any); returns a report per
    stage or raises ``SelfTestFailed`` at the first stage that fails."""
    report = {"dark": check_dark(machine, shutter)}
    report["reference"] = check_reference(machine)
    report["pilot"] = check_pilot(machine)
    return report
