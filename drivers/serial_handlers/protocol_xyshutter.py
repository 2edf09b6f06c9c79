"""``xyshutter://RIG``: a simulated beam shutter on a serial line, for tests and the simulated rig.

It answers the ASCII protocol of ``drivers.shutter.SerialShutter`` (commands end in CR, replies in CR LF):
``*IDN?`` -> identity, ``OPEN`` / ``CLOSE`` -> ``OK``, ``STATE?`` -> ``OPEN`` or ``CLOSED``; anything else ->
``ERR unknown command``. When a simulated rig named RIG exists (``drivers.xyrig.find_engine``), closing the
shutter blocks that rig's light.

Fault injection for tests: ``unplug(RIG)`` makes every open line to that shutter fail as a pulled USB cable
does (``SerialException`` on read and write) until ``replug(RIG)``; the shutter keeps its state meanwhile.
"""

from __future__ import annotations

import threading
import urllib.parse

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

IDENTITY = "XYOPTICS,SIMULATED-SHUTTER,0,1.0"
_UNPLUGGED: set[str] = set()


def unplug(rig: str) -> None:
    _UNPLUGGED.add(rig)


def replug(rig: str) -> None:
    _UNPLUGGED.discard(rig)


class Serial(SerialBase):
    def __init__(self, *args, **kwargs):
        self._rx = bytearray()   # bytes waiting for the host to read
        self._tx = bytearray()   # partial command from the host
        self._lock = threading.Lock()
        self._open_state = True
        self._rig = ""
        super().__init__(*args, **kwargs)

    def open(self):
        if self._port is None:
            raise SerialException("port must be configured before it can be used")
        if self.is_open:
            raise SerialException("port is already open")
        if self.from_url(self.port) in _UNPLUGGED:
            raise SerialException(f"{self.port}: no such device")
        self._rig = self.from_url(self.port)
        from drivers.xyrig import find_engine

        engine = find_engine(self._rig)
        self._open_state = True if engine is None else bool(engine.light)
        self.is_open = True

    def close(self):
        self.is_open = False

    def from_url(self, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "xyshutter":
            raise SerialException(f"expected a URL of the form xyshutter://RIG, got {url!r}")
        return parts.netloc

    def _reconfigure_port(self):
        pass

    @property
    def in_waiting(self):
        with self._lock:
            return len(self._rx)

    def _check_line(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()
        if self._rig in _UNPLUGGED:
            raise SerialException(f"xyshutter://{self._rig}: device disconnected")

    def read(self, size=1):
        self._check_line()
        with self._lock:
            data, self._rx[:] = bytes(self._rx[:size]), self._rx[size:]
        return data

    def write(self, data):
        self._check_line()
        with self._lock:
            self._tx += bytes(data)
            while b"\r" in self._tx:
                line, _, rest = bytes(self._tx).partition(b"\r")
                self._tx[:] = rest
                self._rx += (self._answer(line.decode("ascii", "replace").strip()) + "\r\n").encode("ascii")
        return len(data)

    def _answer(self, command: str) -> str:
        if command == "*IDN?":
            return IDENTITY
        if command in ("OPEN", "CLOSE"):
            self._open_state = command == "OPEN"
            from drivers.xyrig import find_engine

            engine = find_engine(self._rig)
            if engine is not None:
                engine.light = self._open_state
            return "OK"
        if command == "STATE?":
            return "OPEN" if self._open_state else "CLOSED"
        return "ERR unknown command"

    def reset_input_buffer(self):
        with self._lock:
            self._rx.clear()

    def reset_output_buffer(self):
        with self._lock:
            self._tx.clear()
