"""Measurement primitives for calibration procedures: they touch the rig only through ``slm.set_phase`` and
``camera.get_image``, so every procedure runs unchanged on real hardware.

The session lays out the rig's whole routing (every bond tile, and per spin a bias, clamp and nudge tile) with
``xyoptics.hil.layout.Layout``, and offers: show tile settings and wait the settle time; clamp every spin to given
phases (injection locking); grab frames; phase-shifting frame stacks with the reference piston stepped.
"""

from __future__ import annotations

import numpy as np

from xyoptics.core.network import XYNetwork
from xyoptics.hil.clock import RealClock
from xyoptics.hil.layout import Calibration, Layout, LayoutConfig, RigTopology
from xyoptics.hil.readout import pooled_phase_shifting
from xyoptics.hil.slmwriter import TileWriter


class CalibrationFailed(RuntimeError):
    """A procedure could not measure what it needs (e.g. no light reaches the camera)."""


class RigSession:
    def __init__(self, slm, camera, topology: RigTopology, layout: LayoutConfig, *,
                 settle_time_s: float | None = None, clock=None, calibration: Calibration = Calibration(),
                 shutter=None):
        topology = topology.physical()  # every replica's tiles and spots are calibrated as tiles and spots
        n = topology.n_spins
        routing = XYNetwork(n, np.array(topology.bonds, dtype=np.int64).reshape(-1, 2),
                            np.arange(len(topology.bonds)), [], [], name="rig routing")
        self.slm, self.camera, self.topology, self.shutter = slm, camera, topology, shutter
        self.layout = Layout(routing, topology, layout, slm.shape, camera.shape, calibration)
        self.settle_time_s = float(slm.settle_time_s if settle_time_s is None else settle_time_s)
        self.clock = clock if clock is not None else getattr(slm, "clock", None) or RealClock()
        self.saturation = 2 ** camera.bitdepth - 1
        self.frames_grabbed = 0
        self.writer = TileWriter(slm, self.layout)
        self.spot_patches = self.layout.spot_patches()  # sparse spot weights, from the calibrated spot map

    @property
    def n_spins(self) -> int:
        return self.topology.n_spins

    def settings(self, reference_piston: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Every tile dark but the reference: (eta, alpha) to fill in."""
        eta, alpha = np.zeros(self.layout.n_tiles), np.zeros(self.layout.n_tiles)
        eta[self.layout.reference_tile], alpha[self.layout.reference_tile] = 1.0, reference_piston
        return eta, alpha

    def clamped(self, phases: np.ndarray, reference_piston: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Every spin injection-locked to ``phases``, reference on, everything else dark."""
        eta, alpha = self.settings(reference_piston)
        eta[self.layout.clamp_tile], alpha[self.layout.clamp_tile] = 1.0, phases
        return eta, alpha

    def show(self, eta: np.ndarray, alpha: np.ndarray, wait: bool = True) -> None:
        """Show tile settings (only changed tiles are re-encoded); wait the settle time and drop stale frames."""
        self.writer.write(eta, alpha)
        if wait:
            self.settle()

    def show_display(self, display: np.ndarray, wait: bool = True) -> None:
        """Show an integer display image as it is (no phase conversion)."""
        self.writer.invalidate()
        self.slm.set_phase(display, settle=False)
        if wait:
            self.settle()

    def settle(self) -> None:
        self.clock.sleep(self.settle_time_s)
        self.camera.flush()

    def read_spots(self, frames: np.ndarray, steps: np.ndarray):
        """Pooled phase-shifting estimate of every spot from a frame stack (``readout.pooled_phase_shifting``)."""
        patches = self.spot_patches
        return pooled_phase_shifting(patches.gather(frames), steps, patches, self.layout.carrier)

    def grab(self, n: int = 1) -> np.ndarray:
        """``n`` frames (n, rows, cols) as float64 counts."""
        self.frames_grabbed += n
        return np.array([np.asarray(self.camera.get_image(), dtype=np.float64) for _ in range(n)])

    def phase_stack(self, eta: np.ndarray, alpha: np.ndarray, n_steps: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """Frames with the reference piston stepped through 2 pi k / n_steps; returns (frames, steps)."""
        steps = 2 * np.pi * np.arange(n_steps) / n_steps
        frames = []
        for delta in steps:
            alpha = alpha.copy()
            alpha[self.layout.reference_tile] = delta
            self.show(eta, alpha)
            frames.append(self.grab(1)[0])
        return np.array(frames), steps

    def require_light(self, frames: np.ndarray, modulation: np.ndarray, minimum: float) -> None:
        """Fail cleanly when the camera sees no interference (light off, shutter closed, misaligned)."""
        if not np.isfinite(modulation).all() or np.max(modulation) < minimum:
            raise CalibrationFailed(f"no interference fringes on the camera (largest modulation "
                                    f"{np.max(modulation):.1f} counts, need {minimum:g}): is the laser on and the "
                                    f"shutter open?")
        if np.any(frames >= self.saturation):
            raise CalibrationFailed("camera frames saturate: lower the exposure or the laser power")
