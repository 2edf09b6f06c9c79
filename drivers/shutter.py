"""A beam shutter controller on a serial line (pyserial): open, close, state.

Protocol (ASCII, commands end in CR, replies in CR LF): ``*IDN?`` identity, ``OPEN`` / ``CLOSE`` answered by
``OK``, ``STATE?`` answered by ``OPEN`` or ``CLOSED``. The simulated twin is the pyserial URL handler
``xyshutter://RIG`` (drivers/serial_handlers); a real controller is opened by its port name.
"""

from __future__ import annotations

import serial

if "drivers.serial_handlers" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("drivers.serial_handlers")


class ShutterError(RuntimeError):
    pass


class SerialShutter:
    def __init__(self, port: str, baudrate: int = 9600, timeout_s: float = 1.0):
        try:
            self.port = serial.serial_for_url(port, baudrate=baudrate, timeout=timeout_s)
        except (serial.SerialException, ValueError) as exc:
            raise ShutterError(f"cannot open shutter at {port!r}: {exc}") from None
        self.identity = self._ask("*IDN?")

    def _ask(self, command: str) -> str:
        try:
            self.port.reset_input_buffer()
            self.port.write((command + "\r").encode("ascii"))
            reply = self.port.read_until(b"\r\n").decode("ascii", "replace").strip()
        except (serial.SerialException, OSError) as exc:
            raise ShutterError(f"shutter at {self.port.port!r} is not reachable: {exc}") from None
        if not reply:
            raise ShutterError(f"shutter at {self.port.port!r} did not answer {command!r}")
        if reply.startswith("ERR"):
            raise ShutterError(f"shutter refused {command!r}: {reply}")
        return reply

    def open(self) -> None:
        self._ask("OPEN")

    def close(self) -> None:
        self._ask("CLOSE")

    @property
    def is_open(self) -> bool:
        return self._ask("STATE?") == "OPEN"

    def release(self) -> None:
        """Close the serial line (the shutter keeps its state)."""
        self.port.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
