"""Camera dark frame and per-pixel noise, with the beam shutter closed.

With no light on the sensor, the mean of ``n_frames`` frames is the dark frame D(x) (counts) and their standard
deviation the per-pixel noise sigma(x) (read noise plus quantisation, counts). The shutter is opened again
whatever happens. Without a shutter the procedure cannot run and says so; if the frames still show fringes
(shutter not closing), it fails rather than store a bright "dark" frame.
"""

from __future__ import annotations

import numpy as np

from .session import CalibrationFailed, RigSession

SHUTTER_TIME_S = 0.05


def measure_dark(session: RigSession, n_frames: int = 16) -> tuple[dict, dict]:
    if session.shutter is None:
        raise CalibrationFailed("no shutter configured (rig config 'shutter'): cannot block the light for a "
                                "dark frame")
    session.shutter.close()
    try:
        session.clock.sleep(SHUTTER_TIME_S)
        frames = session.grab(n_frames)
    finally:
        session.shutter.open()
        session.clock.sleep(SHUTTER_TIME_S)
    dark, noise = frames.mean(axis=0), frames.std(axis=0, ddof=1)
    if np.percentile(dark, 99.9) - np.median(dark) > 20 * max(float(np.median(noise)), 1.0):
        raise CalibrationFailed("the 'dark' frames still show light: is the shutter closing?")
    return {"dark": dark, "noise": noise}, {"dark_mean_counts": float(dark.mean()),
                                             "noise_median_counts": float(np.median(noise))}


def dark_truth_error(truth, arrays: dict) -> dict:
    """Against the simulated camera's dark offset and read noise (plus quantisation noise 1/sqrt(12))."""
    return {"dark_offset_error_counts": float(arrays["dark"].mean() - truth.dark_offset_counts),
            "noise_rel_error": float(np.median(arrays["noise"]) / np.hypot(truth.read_noise_counts, np.sqrt(1 / 12))
                                     - 1)}
