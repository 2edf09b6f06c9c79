"""``xyshutter://RIG``: a simulated beam shutter on a serial line, for tests and the simulated rig.

It answers the ASCII protocol of ``drivers.shutter.SerialShutter`` (commands end in CR, replies in CR LF):
``*IDN?`` -> identity, ``OPEN`` / ``CLOSE`` -> ``OK``, ``STATE?`` -> ``OPEN`` or ``CLOSED``; anything else ->
``ERR unknown command``. When a simulated rig named RIG exists (``drivers.xyrig.find_engine``), closing the
shutter blocks that rig's light.
"""

from __future__ import annotations

import threading
import urllib.parse

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

IDENTITY = "XYOPTICS,SIMULATED-SHUTTER,0,1.0"


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

    def read(self, size=1):
        if not self.is_open:
            raise PortNotOpenError()
        with self._lock:
            data, self._rx[:] = bytes(self._rx[:size]), self._rx[size:]
        return data

    def write(self, data):
        if not self.is_open:
            raise PortNotOpenError()
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
