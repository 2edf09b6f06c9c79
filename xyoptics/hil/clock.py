"""Clocks: real time for lab devices, virtual time for simulated ones (``sleep`` advances it instantly, so a
simulated rig honours settle times without making tests wait)."""

from __future__ import annotations

import time


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(float(seconds), 0.0))


class VirtualClock:
    def __init__(self, start: float = 0.0):
        self.t = float(start)

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(float(seconds), 0.0)
