"""A laser controller over pyvisa: identify, set and read power (mW), switch the output.

The power limit is the smallest of: the site safety file's (``xyoptics.hil.site``), the maximum the instrument
reports (``POW:MAX?``, read at connect; an instrument that refuses or ignores that query reports none) and the
rig file's ``max_power_mw``, which can only lower the other two. With neither a site file nor a reported maximum
the laser is refused at connect. A limit that is not a finite number above zero, from any source, is refused.

Asking for more than the limit is a ``LaserError`` and the instrument never sees the request. Every setting is
read back; a power off by more than ``POWER_TOLERANCE`` is a ``LaserError`` (so the output is never switched on
after it). Commands (SCPI-like): ``*IDN?``, ``POW:MAX?``, ``POW <mW>`` / ``POW?``, ``OUTP 1|0`` / ``OUTP?``. The
simulated twin is ``drivers/sim/laser.yaml`` for pyvisa-sim, opened with ``backend="<yaml>@sim"``.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import pyvisa

from xyoptics.core.schema import ConfigError
from xyoptics.hil.site import ENV, SiteConfig, default_site_path

log = logging.getLogger(__name__)
SIMULATED = str(Path(__file__).with_name("sim") / "laser.yaml") + "@sim"
POWER_TOLERANCE = 0.02  # relative deviation of the read-back laser power that counts as a fault


class LaserError(RuntimeError):
    pass


class LaserLimitError(LaserError, ConfigError):
    """No usable power limit: none known, or one that is not a finite number above zero."""


def within_tolerance(read_mw: float, want_mw: float) -> bool:
    """Whether a read-back power (mW) is within ``POWER_TOLERANCE`` of the power set (mW)."""
    return abs(read_mw - want_mw) <= POWER_TOLERANCE * max(want_mw, 1e-9)


def _checked_limit(value, source: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise LaserLimitError(f"laser power limit from {source} is {value!r}, not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise LaserLimitError(f"laser power limit from {source} is {value} mW; it must be finite and positive")
    return value


class LaserController:
    """``max_power_mw``: the rig file's limit (mW) or None; ``site``: the loaded site file or None. The limits
    found are in ``limits`` (source -> mW: "site", "instrument", "rig"), the one applied in ``max_power_mw`` and
    its source in ``limit_source``."""

    MAX_QUERY = "POW:MAX?"

    def __init__(self, resource: str, max_power_mw: float | None = None, backend: str = "", timeout_ms: int = 2000,
                 site: SiteConfig | None = None):
        limits = {}
        if site is not None:
            limits["site"] = _checked_limit(site.laser_limit(resource), f"site file {site.path or '(in code)'}")
        if max_power_mw is not None:
            limits["rig"] = _checked_limit(max_power_mw, "the rig file (max_power_mw)")
        self.manager = pyvisa.ResourceManager(backend) if backend else pyvisa.ResourceManager()
        try:
            self.instrument = self.manager.open_resource(resource, read_termination="\n", write_termination="\n",
                                                         timeout=timeout_ms)
        except pyvisa.VisaIOError as exc:
            raise LaserError(f"cannot open laser at {resource!r}: {exc}") from None
        try:
            self.identity = self._query("*IDN?")
            reported = self._reported_max()
            if reported is not None:
                limits["instrument"] = _checked_limit(reported, f"the instrument ({self.MAX_QUERY})")
            elif "site" not in limits:
                raise LaserLimitError(
                    f"laser {resource!r} reports no maximum power and there is no site safety file: create "
                    f"{default_site_path()} (or name one with --site FILE or ${ENV}) holding "
                    "'laser_max_power_mw: <mW>'")
        except LaserError:
            self.close()
            raise
        self.limits = {k: limits[k] for k in ("site", "instrument", "rig") if k in limits}
        self.limit_source = min(self.limits, key=self.limits.get)
        self.max_power_mw = self.limits[self.limit_source]

    def _reported_max(self) -> str | None:
        """The instrument's reply to ``MAX_QUERY``, or None when it refuses or does not answer it."""
        try:
            return self._query(self.MAX_QUERY)
        except LaserError as exc:
            log.info("laser reports no maximum power (%s)", exc)
            return None

    def _query(self, command: str) -> str:
        try:
            with warnings.catch_warnings():  # an unterminated reply is judged below, not warned about
                warnings.simplefilter("ignore", UserWarning)
                reply = self.instrument.query(command).strip()
        except pyvisa.errors.Error as exc:  # a timeout, or a session lost with its cable or controller
            raise LaserError(f"laser did not answer {command!r}: {exc}") from None
        if not reply:
            raise LaserError(f"no answer to {command!r} from {self.instrument.resource_name!r}: is a laser there?")
        if reply.startswith("ERROR"):
            raise LaserError(f"laser refused {command!r}: {reply}")
        return reply

    def set_power(self, power_mw: float) -> None:
        """Set the output power (mW) and read it back. Refused before sending if outside [0, limit]; a read-back
        off by more than ``POWER_TOLERANCE`` is a ``LaserError``."""
        command = f"POW {power_mw:.3f}"
        if not (0 <= power_mw <= self.max_power_mw and float(command[4:]) <= self.max_power_mw):
            raise LaserError(f"power {power_mw} mW is outside [0, {self.max_power_mw}] mW allowed by the "
                             f"{self.limit_source} limit")
        self._query(command)
        read = self.power_mw
        if not within_tolerance(read, power_mw):
            raise LaserError(f"laser reads {read} mW after being set to {power_mw} mW (tolerance "
                             f"{POWER_TOLERANCE:.0%})")

    @property
    def power_mw(self) -> float:
        """The power the instrument reports (mW)."""
        reply = self._query("POW?")
        try:
            return float(reply)
        except ValueError:
            raise LaserError(f"laser answered {reply!r} to 'POW?', not a power") from None

    def output(self, on: bool) -> None:
        self._query(f"OUTP {int(bool(on))}")

    @property
    def output_on(self) -> bool:
        return self._query("OUTP?") == "1"

    def close(self) -> None:
        """Close the VISA session (the laser keeps its state). The resource manager is shared by pyvisa
        between all users of the same VISA library, so it stays open."""
        self.instrument.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
