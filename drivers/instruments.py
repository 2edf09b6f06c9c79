"""The rig's lab instruments for a session: laser to its configured power with the output on, shutter open;
and on the way out -- normal end, error or Ctrl-C -- shutter closed and laser output off, so the hardware is
left safe."""

from __future__ import annotations

import logging
from contextlib import contextmanager

from .laser import SIMULATED, LaserController
from .shutter import SerialShutter

log = logging.getLogger(__name__)


@contextmanager
def open_instruments(laser=None, shutter: str | None = None):
    """``laser``: an ``xyoptics.rig.LaserConfig`` (or None); ``shutter``: a serial port / pyserial URL (or None).
    Yields ``(laser_controller, shutter)``, either of which may be None."""
    controller = sh = None
    try:
        if laser is not None:
            backend = SIMULATED if laser.backend == "sim" else laser.backend
            controller = LaserController(laser.resource, laser.max_power_mw, backend=backend)
            controller.set_power(laser.power_mw)
            controller.output(True)
        if shutter:
            sh = SerialShutter(shutter)
            sh.open()
        yield controller, sh
    finally:
        if sh is not None:
            _safely("close the shutter", sh.close)
            _safely("release the shutter port", sh.release)
        if controller is not None:
            _safely("switch the laser output off", lambda: controller.output(False))
            _safely("close the laser session", controller.close)


def _safely(what: str, action) -> None:
    try:
        action()
    except Exception as exc:  # keep going: every other step of making the rig safe must still run
        log.error("could not %s: %s", what, exc)
