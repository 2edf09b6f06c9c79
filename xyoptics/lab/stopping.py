"""Stopping a session safely: SIGINT (Ctrl-C) and SIGTERM ask the training loop to stop at the next step
boundary instead of killing it mid-measurement.

The first signal only sets a flag (``StopRequest.requested``); the loop sees it after the step in flight,
writes a checkpoint and returns, and the caller parks the hardware. A second SIGINT raises KeyboardInterrupt
at once for a user who cannot wait -- the loop still checkpoints the last completed step on its way out.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A flag set by a signal (or by ``request``); ``reason`` names what asked for the stop."""

    def __init__(self):
        self.reason: str | None = None

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.request(name)
        print(f"\n{name}: stopping after the current step (Ctrl-C again to stop at once)", file=sys.stderr)


@contextmanager
def stop_on_signals():
    """Yield a ``StopRequest`` that SIGINT and SIGTERM set while the block runs; the previous handlers are
    restored on exit. Outside the main thread (where Python cannot install handlers) the request only
    responds to ``request``."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop._handle) for s in SIGNALS}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
