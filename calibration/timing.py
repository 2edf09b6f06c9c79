"""SLM settle time, measured through the camera: how long after a write the frames show the new state.

Two images A and B lock every spin to different phases. After A has settled, B is written and one frame is
grabbed after a delay d (without the session's own settle wait). Frames closer (Euclidean distance) to the
settled B frame than to the settled A frame count as switched. A geometric sweep of d brackets the switch;
bisection narrows the bracket to ``rel_precision``; the result is the bracket's upper end (seconds).
"""

from __future__ import annotations

import numpy as np

from .session import CalibrationFailed, RigSession


def _switched(session: RigSession, a, b, frame_a, frame_b, delay: float) -> bool:
    session.show(*a, wait=False)
    session.clock.sleep(10 * session.settle_time_s + 0.05)
    session.show(*b, wait=False)
    session.clock.sleep(delay)
    frame = session.grab(1)[0]
    return np.linalg.norm(frame - frame_b) < np.linalg.norm(frame - frame_a)


def measure_settle_time(session: RigSession, longest_s: float = 1.0, shortest_s: float = 1e-5,
                        rel_precision: float = 0.05) -> tuple[dict, dict]:
    n = session.n_spins
    a = session.clamped(np.zeros(n))
    b = session.clamped(np.full(n, np.pi / 2))
    session.show(*a, wait=False)
    session.clock.sleep(longest_s)
    frame_a = session.grab(1)[0]
    session.show(*b, wait=False)
    session.clock.sleep(longest_s)
    frame_b = session.grab(1)[0]
    if np.linalg.norm(frame_a - frame_b) < 10 * np.sqrt(frame_a.size):
        raise CalibrationFailed("the camera frame does not change when the SLM image does: is the light on?")
    delays = np.geomspace(shortest_s, longest_s, 25)
    switched = [_switched(session, a, b, frame_a, frame_b, d) for d in delays]
    if not any(switched):
        raise CalibrationFailed(f"frames never showed the new image within {longest_s} s")
    k = int(np.argmax(switched))
    lo, hi = (0.0 if k == 0 else delays[k - 1]), delays[k]
    while hi - lo > rel_precision * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if _switched(session, a, b, frame_a, frame_b, mid) else (mid, hi)
    return {"settle_time_s": np.array(hi)}, {"bracket_s": float(hi - lo)}


def settle_truth_error(truth, arrays: dict) -> dict:
    return {"settle_rel_error": float(arrays["settle_time_s"] / truth.settle_time_s - 1)}
