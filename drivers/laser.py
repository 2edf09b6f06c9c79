"""A laser controller over pyvisa: identify, set and read power (mW), switch the output.

The rig's maximum power is enforced here, before any command is sent: asking for more is a ``LaserError``
and the instrument never sees the request. Commands (SCPI-like): ``*IDN?``, ``POW <mW>`` / ``POW?``,
``OUTP 1|0`` / ``OUTP?``. The simulated twin is ``drivers/sim/laser.yaml`` for pyvisa-sim, opened with
``backend="<yaml>@sim"``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pyvisa

SIMULATED = str(Path(__file__).with_name("sim") / "laser.yaml") + "@sim"


class LaserError(RuntimeError):
    pass


class LaserController:
    def __init__(self, resource: str, max_power_mw: float, backend: str = "", timeout_ms: int = 2000):
        if max_power_mw <= 0:
            raise LaserError("max_power_mw must be positive")
        self.max_power_mw = float(max_power_mw)
        self.manager = pyvisa.ResourceManager(backend) if backend else pyvisa.ResourceManager()
        try:
            self.instrument = self.manager.open_resource(resource, read_termination="\n", write_termination="\n",
                                                         timeout=timeout_ms)
        except pyvisa.VisaIOError as exc:
            raise LaserError(f"cannot open laser at {resource!r}: {exc}") from None
        try:
            self.identity = self._query("*IDN?")
        except LaserError:
            self.close()
            raise

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
        """Set the output power in mW; refused before sending if it exceeds the rig's maximum."""
        if not 0 <= power_mw <= self.max_power_mw:
            raise LaserError(f"power {power_mw} mW is outside [0, {self.max_power_mw}] mW allowed by the rig")
        self._query(f"POW {power_mw:.3f}")

    @property
    def power_mw(self) -> float:
        return float(self._query("POW?"))

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
