"""The rig's lab instruments for one session: laser at its configured power with the output on, shutter open;
checked before every training step; and parked on the way out -- normal end, error, Ctrl-C or SIGTERM -- with
the shutter closed and the laser output off, so the hardware is left safe.

The laser runs at most at the smallest of the site file's limit (``site``, see ``xyoptics.hil.site``), the
laser's reported maximum and the rig file's ``max_power_mw`` (``drivers/laser.py``).

``check()`` raises ``InstrumentFault`` (a ``DeviceFault``, so training retries the step and then stops safely)
when an instrument does not answer -- after one attempt to reconnect it and restore its settings -- or reports
an unexpected state. A shutter found closed is never reopened: something closed it (an interlock, a person).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

from xyoptics.core.machine import DeviceFault

from .laser import POWER_TOLERANCE, SIMULATED, LaserController, LaserError, within_tolerance  # noqa: F401
from .shutter import SerialShutter, ShutterError

log = logging.getLogger(__name__)


class InstrumentFault(DeviceFault):
    pass


class LabInstruments:
    """``laser``: an ``xyoptics.hil.rig.LaserConfig`` (or None); ``shutter``: a serial port / pyserial URL (or
    None); ``site``: the loaded ``xyoptics.hil.site.SiteConfig`` (or None). Nothing is contacted until
    ``open()``."""

    def __init__(self, laser=None, shutter: str | None = None, site=None):
        self.laser_config, self.shutter_port, self.site = laser, shutter, site
        self.laser: LaserController | None = None
        self.shutter: SerialShutter | None = None
        self.reconnects = 0
        self.parked: dict | None = None  # the read-back of the last park()

    # -- connections ------------------------------------------------------------------------------------
    def _connect_laser(self, switch_on: bool = True) -> None:
        cfg = self.laser_config
        backend = SIMULATED if cfg.backend == "sim" else cfg.backend
        self.laser = LaserController(cfg.resource, cfg.max_power_mw, backend=backend, site=self.site)
        if switch_on:
            self.laser.set_power(cfg.power_mw)
            self.laser.output(True)

    def _connect_shutter(self, open_it: bool) -> None:
        self.shutter = SerialShutter(self.shutter_port)
        if open_it:
            self.shutter.open()

    def open(self) -> None:
        """Laser to its power with the output on, then the shutter open."""
        if self.laser_config is not None:
            self._connect_laser()
        if self.shutter_port:
            self._connect_shutter(open_it=True)

    # -- during the run ---------------------------------------------------------------------------------
    def _check_laser(self) -> None:
        want = self.laser_config.power_mw
        try:
            on, power = self.laser.output_on, self.laser.power_mw
        except LaserError as exc:
            log.warning("laser not answering (%s); reconnecting", exc)
            _safely("close the stale laser session", self.laser.close)
            try:
                self._connect_laser()
            except LaserError as again:
                raise InstrumentFault(f"laser not answering: {again}") from None
            self.reconnects += 1
            on, power = self.laser.output_on, self.laser.power_mw
        if not on:
            raise InstrumentFault("laser output is off (switched off outside this session?)")
        if not within_tolerance(power, want):
            raise InstrumentFault(f"laser reads {power} mW, set to {want} mW")

    def _check_shutter(self) -> None:
        try:
            is_open = self.shutter.is_open
        except ShutterError as exc:
            log.warning("shutter not answering (%s); reconnecting", exc)
            _safely("release the stale shutter line", self.shutter.release)
            try:
                self._connect_shutter(open_it=False)
                is_open = self.shutter.is_open
            except ShutterError as again:
                raise InstrumentFault(f"shutter not answering: {again}") from None
            self.reconnects += 1
        if not is_open:
            raise InstrumentFault("shutter is closed (interlock or closed by hand); not reopening it")

    def check(self) -> None:
        """Every instrument answers and is as the session set it; else ``InstrumentFault``."""
        if self.laser is not None:
            self._check_laser()
        if self.shutter is not None:
            self._check_shutter()

    def snapshot(self) -> dict:
        """Identities and read-back settings, for the run folder; for the laser also the limit applied
        (``max_power_mw``), its source (``limit_from``), every limit found (``limits_mw``, source -> mW) and the
        site file read (``site_file``, or None)."""
        out = {}
        if self.laser is not None:
            site_file = self.site.path if self.site is not None else None
            out["laser"] = {"resource": self.laser_config.resource, "identity": self.laser.identity,
                            "power_mw": self.laser.power_mw, "output_on": self.laser.output_on,
                            "max_power_mw": self.laser.max_power_mw, "limit_from": self.laser.limit_source,
                            "limits_mw": dict(self.laser.limits),
                            "site_file": str(site_file) if site_file is not None else None}
        if self.shutter is not None:
            out["shutter"] = {"port": self.shutter_port, "identity": self.shutter.identity,
                              "open": self.shutter.is_open}
        return out

    # -- leaving it safe --------------------------------------------------------------------------------
    def park(self) -> dict:
        """Shutter closed, laser output off; returns what the instruments then report (or why they could not)."""
        report = {}
        if self.shutter is not None:
            report["shutter"] = _safely("close the shutter",
                                        lambda: (self.shutter.close(), "open" if self.shutter.is_open else "closed")[1])
        if self.laser is not None:
            report["laser_output"] = _safely("switch the laser output off", self._laser_off)
        self.parked = report
        return report

    def _laser_off(self) -> str:
        try:
            self.laser.output(False)
        except LaserError as exc:  # session lost: reconnect just to switch off
            log.warning("laser not answering (%s); reconnecting to switch it off", exc)
            _safely("close the stale laser session", self.laser.close)
            self._connect_laser(switch_on=False)
            self.laser.output(False)
        return "on" if self.laser.output_on else "off"

    def close(self) -> None:
        """Release the lines (the instruments keep their state)."""
        if self.shutter is not None:
            _safely("release the shutter port", self.shutter.release)
        if self.laser is not None:
            _safely("close the laser session", self.laser.close)


@contextmanager
def open_instruments(laser=None, shutter: str | None = None, site=None):
    """Open the instruments (``LabInstruments.open``; ``site``: the loaded site file or None) and yield them; on
    any exit park them (unless the block already did) and release them."""
    instruments = LabInstruments(laser, shutter, site)
    try:
        instruments.open()
        yield instruments
    finally:
        if instruments.parked is None:
            instruments.park()
        instruments.close()


def _safely(what: str, action):
    """Run ``action``; on failure log it and return an error string -- every other step of making the rig
    safe must still run."""
    try:
        return action()
    except Exception as exc:
        log.error("could not %s: %s", what, exc)
        return f"error: {exc}"
