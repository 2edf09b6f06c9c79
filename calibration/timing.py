"""SLM settle time, measured through the camera: how long after a write the frames no longer tell the new image
from its settled state.

Two images A and B lock every spin to phase 0 and differ in the reference tile's piston (0 and pi/2): the write
a phase-shifting readout makes before every frame. While the pixels move between two offset blazed gratings the
reference beam loses power and shifts its phase, which shifts and dims the fringes all over the frame. A probe at delay d: show A and let it
settle, show B, grab one frame F after d (no settle wait of the session's own), then, once B has surely settled,
two frames B1 and B2. The frame has settled when ``||F - B1|| <= NOISE_FACTOR ||B2 - B1||``: its distance to the
settled image is within the camera noise of two frames of the same state (Euclidean norms over all pixels).

1. Half-switch time t_1/2: the first delay of a geometric sweep at which F is closer to a settled-B frame than
   to a settled-A frame. Liquid crystals respond roughly exponentially, so the image is surely settled after
   ``SETTLED_AFTER`` t_1/2 (residual 2^-SETTLED_AFTER); probes wait that long, which keeps the reference-phase
   drift between F and B1 small.
2. Settle time: a geometric sweep of d from t_1/2 to that wait brackets the first settled frame; bisection
   narrows the bracket to ``rel_precision``; the result is its upper end (seconds). A response slower than the
   noise can tell (its residual still visible at the longest wait) fails the procedure.
"""

from __future__ import annotations

import numpy as np

from .session import CalibrationFailed, RigSession

NOISE_FACTOR = 1.1  # a settled frame is at most this many noise distances from another settled frame
SETTLED_AFTER = 40  # half-switch times after which the image counts as surely settled


class _Probe:
    def __init__(self, session: RigSession):
        self.session = session
        n = session.n_spins
        self.a = session.clamped(np.zeros(n), reference_piston=0.0)
        self.b = session.clamped(np.zeros(n), reference_piston=np.pi / 2)
        self.frames = 0

    def frame_after(self, delay: float, settle_a: float) -> np.ndarray:
        """One frame ``delay`` seconds after writing B over an A settled for ``settle_a`` seconds."""
        s = self.session
        s.show(*self.a, wait=False)
        s.clock.sleep(settle_a)
        s.show(*self.b, wait=False)
        s.clock.sleep(delay)
        self.frames += 1
        return s.grab(1)[0]

    def half_switched(self, delay: float, frame_a: np.ndarray, frame_b: np.ndarray, longest_s: float) -> bool:
        frame = self.frame_after(delay, longest_s)
        return np.linalg.norm(frame - frame_b) < np.linalg.norm(frame - frame_a)

    def settled(self, delay: float, wait: float) -> bool:
        frame = self.frame_after(delay, wait)
        self.session.clock.sleep(wait)
        b1, b2 = self.session.grab(2)
        self.frames += 2
        return np.linalg.norm(frame - b1) <= NOISE_FACTOR * np.linalg.norm(b2 - b1)


def _first(test, delays: np.ndarray) -> int | None:
    for k, d in enumerate(delays):
        if test(d):
            return k
    return None


def measure_settle_time(session: RigSession, longest_s: float = 1.0, shortest_s: float = 1e-5,
                        rel_precision: float = 0.05) -> tuple[dict, dict]:
    probe = _Probe(session)
    session.show(*probe.a, wait=False)
    session.clock.sleep(longest_s)
    frame_a = session.grab(1)[0]
    session.show(*probe.b, wait=False)
    session.clock.sleep(longest_s)
    frame_b = session.grab(1)[0]
    if np.linalg.norm(frame_a - frame_b) < 10 * np.sqrt(frame_a.size):
        raise CalibrationFailed("the camera frame does not change when the SLM image does: is the light on?")
    delays = np.geomspace(shortest_s, longest_s, 25)
    k = _first(lambda d: probe.half_switched(d, frame_a, frame_b, longest_s), delays)
    if k is None:
        raise CalibrationFailed(f"frames never showed the new image within {longest_s} s")
    half = float(delays[k])
    wait = min(SETTLED_AFTER * half, longest_s)
    delays = np.geomspace(half, wait, 12)
    k = _first(lambda d: probe.settled(d, wait), delays)
    if k is None:
        raise CalibrationFailed(f"frames still differ from the settled image {wait:.3g} s after a write "
                                f"(more than the camera noise): the SLM settles too slowly or the rig drifts")
    lo, hi = (0.0 if k == 0 else delays[k - 1]), float(delays[k])
    while hi - lo > rel_precision * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if probe.settled(mid, wait) else (mid, hi)
    return ({"settle_time_s": np.array(hi)},
            {"bracket_s": float(hi - lo), "half_switch_s": half, "probe_frames": probe.frames})


def settle_truth_error(truth, arrays: dict) -> dict:
    return {"settle_rel_error": float(arrays["settle_time_s"] / truth.settle_time_s - 1)}
