"""Incremental SLM writes: re-encode only the tiles whose setting changed since the last write.

Between the frames of one phase-shifting readout only the reference tile's piston changes, and between samples
only a few clamp and nudge tiles; re-encoding the whole image (2 million pixels on a 2048x1024 SLM) for that
costs tens of milliseconds, re-encoding one 8x8 tile microseconds. ``TileWriter`` keeps each tile's last
(eta, alpha), converts only the changed tiles' phases to gray levels with the SLM's own conversion
(slmsuite's ``_phase2gray``: its lookup table when one is set, the wavefront correction ``source["phase"]``
added as ``set_phase`` adds it), patches them into the SLM's ``display`` and ``phase`` and hands the display to
the driver (``_set_phase_hw``, the hook every vendor driver implements). The result is identical, level for
level, to ``slm.set_phase(layout.image(eta, alpha))`` -- the tests check it on stock slmsuite SLMs.

The first write, and every write to an SLM whose conversion depends on the whole image (a vendor
``_format_phase_hw`` or ``_gray2display``, a GPU backend, ``phase_scaling`` other than one without a lookup
table), goes through ``set_phase`` in full; the wavefront correction is read at each full write. Anything else
that writes to the SLM, or changes its correction or lookup table, must call ``invalidate()``.
"""

from __future__ import annotations

import numpy as np
from slmsuite.hardware.slms.slm import SLM

from .layout import Layout


def patchable(slm) -> bool:
    """True when an SLM's phase -> display conversion is pixel by pixel, so tiles can be re-encoded alone."""
    klass = type(slm)
    return (isinstance(slm, SLM) and klass._format_phase_hw is SLM._format_phase_hw
            and klass._gray2display is SLM._gray2display and getattr(slm, "xp", np) is np
            and (getattr(slm, "lut", None) is not None or slm.phase_scaling == 1))


class TileWriter:
    """Writes a layout's tile settings to an slmsuite SLM, incrementally where the SLM allows it."""

    def __init__(self, slm, layout: Layout):
        self.slm, self.layout = slm, layout
        self.incremental = patchable(slm)
        self._eta: np.ndarray | None = None
        self._alpha: np.ndarray | None = None
        self._correction: np.ndarray | None = None  # wavefront correction at every tile pixel (rad)
        self.tiles_encoded = 0  # tiles converted in incremental writes (for benchmarks)

    def invalidate(self) -> None:
        """Forget what the SLM shows (someone else wrote to it): the next write is a full one."""
        self._eta = self._alpha = None

    def write(self, eta: np.ndarray, alpha: np.ndarray) -> None:
        """Show tiles of efficiency ``eta`` and phase ``alpha`` (n_tiles,); raises whatever the driver raises."""
        eta, alpha = np.asarray(eta, dtype=float), np.asarray(alpha, dtype=float)
        if not self.incremental or self._eta is None:
            self.invalidate()
            self.slm.set_phase(self.layout.image(eta, alpha), settle=False)
            slm = self.slm
            self._correction = (np.asarray(slm._get_source_phase()).ravel()[self.layout.tile_flat_pixels]
                                if self.incremental and slm.phase_correct and "phase" in slm.source else None)
        else:
            changed = np.flatnonzero((eta != self._eta) | (alpha != self._alpha))
            if len(changed):
                self._patch(changed, eta[changed], alpha[changed])
            self._send()
        self._eta, self._alpha = eta.copy(), alpha.copy()

    def _patch(self, tiles: np.ndarray, eta: np.ndarray, alpha: np.ndarray) -> None:
        slm = self.slm
        pixels = self.layout.tile_flat_pixels[tiles]
        phase = self.layout.tile_phases(eta, alpha).reshape(pixels.shape).astype(slm.phase.dtype)
        if self._correction is not None:
            phase += self._correction[tiles]
        gray = slm._phase2gray(phase, out=np.empty(phase.shape, dtype=slm.display.dtype))
        _scatter(slm.phase, pixels, phase)  # as set_phase leaves it: rounded to whole levels where it rounds
        _scatter(slm.display, pixels, gray)
        self.tiles_encoded += len(tiles)

    def _send(self) -> None:
        slm = self.slm
        slm._set_phase_hw(slm.display)
        if getattr(slm, "viewer", None) is not None:
            slm.viewer.render(slm._viewer_frame)


def _scatter(array: np.ndarray, flat_index: np.ndarray, values: np.ndarray) -> None:
    """array.flat[flat_index] = values, in place (through a flat view where the array is contiguous)."""
    if array.flags.c_contiguous:
        array.reshape(-1)[flat_index] = values
    else:
        np.put(array, flat_index, values)
