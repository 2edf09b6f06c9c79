"""Serving the monitor: a Bokeh server (Tornado underneath) on its own thread and event loop, so it runs beside
a training session in the same process (``xyoptics train --monitor``) or alone (``xyoptics monitor``).

It binds 127.0.0.1 by default; the page's websocket is accepted only from the addresses it was served under.
BokehJS comes from the server's own ``/static`` (the ``bokeh`` package's files), never from a CDN. Besides the
page, ``POST /stop`` (token in the ``X-Token`` header or a ``token`` form field) asks for the safe stop, for
scripts. While the run is running the server keeps its watch request fresh (``xyoptics.lab.live``), so the
trainer publishes its live data; the request is withdrawn when the server stops.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.server.server import BaseServer
from bokeh.server.tornado import BokehTornado
from bokeh.server.util import bind_sockets
from bokeh.settings import settings
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.web import RequestHandler

from ..lab.live import end_watch, request_watch
from .control import RunControl
from .page import MonitorPage
from .runfolder import RunFolder

DEFAULT_PORT = 5006  # Bokeh's own; when it is taken and no port was asked for, any free one
WATCH_EVERY_MS = 5000
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class StopHandler(RequestHandler):
    """``POST /stop``: 202 when the stop was requested, 403 without the right token, 409 when not running."""

    def initialize(self, control: RunControl) -> None:
        self.control = control

    def post(self) -> None:
        token = self.request.headers.get("X-Token") or self.get_body_argument("token", default="")
        answer = self.control.stop(token, by=f"POST /stop from {self.request.remote_ip}")
        self.set_status(answer.status)
        self.finish({"status": answer.status, "message": answer.message})


class MonitorServer:
    """The monitor of the run folder ``run_dir`` on ``host``:``port`` (``port=None``: 5006, or any free port
    when that one is taken). ``start()`` returns once it listens; ``url`` and ``token`` are then set."""

    def __init__(self, run_dir: str | Path, host: str = "127.0.0.1", port: int | None = None,
                 token: str | None = None):
        self.folder = RunFolder(run_dir)
        self.control = RunControl(self.folder, token)
        self.host, self.port = host, port
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop: IOLoop | None = None
        self._watching = False

    @property
    def token(self) -> str:
        return self.control.token

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://{shown}:{self.port}/"

    def start(self) -> MonitorServer:
        self._thread = threading.Thread(target=self._serve, name="xyoptics-monitor", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.add_callback(self._loop.stop)
            self._thread.join(timeout=10)
        if self._watching:
            end_watch(self.folder.path)

    def __enter__(self) -> MonitorServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- on the server's thread -------------------------------------------------------------------------------
    def _bind(self) -> list[socket.socket]:
        if self.port is not None:
            sockets, self.port = bind_sockets(self.host, self.port)
            return sockets
        try:
            sockets, self.port = bind_sockets(self.host, DEFAULT_PORT)
        except OSError:
            sockets, self.port = bind_sockets(self.host, 0)
        return sockets

    def _origins(self) -> list[str]:
        """The host:port names a browser may load the page from: loopback, and the host given (with this
        machine's names when it binds every interface)."""
        names = {*LOOPBACK, self.host}
        if self.host not in LOOPBACK:
            names |= {socket.gethostname(), socket.getfqdn()}
        return sorted(f"[{n}]:{self.port}" if ":" in n else f"{n}:{self.port}" for n in names if n)

    def _serve(self) -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        try:
            settings.resources.set_value("server")  # BokehJS from this server, whatever BOKEH_RESOURCES says
            sockets = self._bind()
            app = BokehTornado({"/": Application(FunctionHandler(self._document))},
                               extra_websocket_origins=self._origins(),
                               extra_patterns=[(r"/stop", StopHandler, {"control": self.control})])
            http = HTTPServer(app)
            http.add_sockets(sockets)
            self._loop = IOLoop.current()
            server = BaseServer(self._loop, app, http)
            server.start()
            self._keep_watching()
            PeriodicCallback(self._keep_watching, WATCH_EVERY_MS).start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.start()
        finally:
            server.stop()

    def _document(self, doc) -> None:
        MonitorPage(doc, self.folder, self.control)

    def _keep_watching(self) -> None:
        """Refresh the watch request while the run may be running (not before it started, not after it ended)."""
        if self.folder.state().phase in ("running", "lost"):
            try:
                request_watch(self.folder.path)
            except OSError:  # the folder went away; the page says what it finds
                return
            self._watching = True
