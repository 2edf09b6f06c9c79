"""The monitor's actions that change a run, each behind the token printed in the monitor's terminal.

Viewing needs no token. Stopping does: ``RunControl.stop`` checks the token (in constant time), then that the
run is running, then asks its trainer for the safe stop (``xyoptics.lab.live.request_stop``), which the trainer
takes at the next step boundary exactly like a first Ctrl-C. The answers carry HTTP status codes, so the page's
button and ``POST /stop`` say the same: 202 requested, 403 no or wrong token, 409 the run is not running.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from ..lab.live import request_stop
from .runfolder import RunFolder


@dataclass(frozen=True)
class Answer:
    status: int
    message: str

    @property
    def ok(self) -> bool:
        return self.status < 400


def new_token() -> str:
    return secrets.token_urlsafe(16)


class RunControl:
    """The actions on one run folder; ``token`` defaults to a new random one."""

    def __init__(self, folder: RunFolder, token: str | None = None):
        self.folder = folder
        self.token = token or new_token()

    def authorised(self, token: str | None) -> bool:
        return secrets.compare_digest((token or "").strip().encode(), self.token.encode())

    def stop(self, token: str | None, by: str) -> Answer:
        """Ask the run to stop safely; ``by`` names the asker in the request file."""
        if not self.authorised(token):
            return Answer(403, "refused: stopping the run needs the token printed in the monitor's terminal")
        state = self.folder.state()
        if not state.running:
            return Answer(409, f"refused: the run is not running ({state.text})")
        request_stop(self.folder.path, by)
        return Answer(202, "stop requested: the run finishes the step in flight, writes a checkpoint and parks "
                           "the hardware, as on Ctrl-C")
