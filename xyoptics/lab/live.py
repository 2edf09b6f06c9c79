"""Live data for a session monitor, through the run folder's ``live/`` subfolder, and the monitor's requests.

A monitor (``xyoptics monitor``) asks for live data by keeping ``live/watch`` fresh (its mtime younger than
``WATCH_TTL_S``). While it is, the trainer, at a step boundary and at most every ``PUBLISH_EVERY_S``, writes
``live/status.json`` (process, step, epoch, steps in the run, laser and shutter read back) and
``live/snapshot.h5`` (the latest camera frame, binned to at most ``MAX_FRAME_PX`` a side, the spot centres and
the phase read at each spot; the free angles of the step's first sample; the coupling of every bond), each
atomically. Without a watching monitor a step costs one clock read, and one ``stat`` of ``live/watch`` per
``CHECK_EVERY_S``: nothing is written.

A monitor that has checked its user's token asks for a safe stop by writing ``live/stop.json``. The trainer
takes it at the next step boundary exactly like a first Ctrl-C (``stopping.StopRequest``, reason "monitor"):
the step in flight ends, a checkpoint is written, the session parks the hardware, and ``xyoptics train
--resume`` continues. A request left over from an earlier session is discarded when a session starts.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ..core.files import read_arrays_h5, write_arrays_h5, write_json_atomic

LIVE = "live"
WATCH, STOP, STATUS, SNAPSHOT = "watch", "stop.json", "status.json", "snapshot.h5"
WATCH_TTL_S = 30.0  # a watch request older than this has ended (the monitor refreshes it every few seconds)
CHECK_EVERY_S = 1.0  # how often the trainer looks for a watch or stop request
PUBLISH_EVERY_S = 2.0  # how often it publishes while watched
MAX_FRAME_PX = 320  # a published camera frame is binned down to at most this many pixels a side


def live_dir(run: str | Path) -> Path:
    return Path(run) / LIVE


def _touch(path: Path) -> None:
    path.parent.mkdir(exist_ok=True)  # in the run folder, never creating that
    path.touch()  # an existing file gets the current time


def request_watch(run: str | Path) -> None:
    """Ask the run's trainer to publish live data (a monitor calls this every few seconds while it watches)."""
    _touch(live_dir(run) / WATCH)


def end_watch(run: str | Path) -> None:
    (live_dir(run) / WATCH).unlink(missing_ok=True)


def is_watched(run: str | Path, now: float | None = None) -> bool:
    try:
        age = (time.time() if now is None else now) - (live_dir(run) / WATCH).stat().st_mtime
    except OSError:
        return False
    return age < WATCH_TTL_S


def request_stop(run: str | Path, by: str) -> None:
    """Ask the run's trainer to stop safely at its next step boundary; ``by`` says who asked (for the log)."""
    request_watch(run)  # the trainer looks for stop requests only while watched
    write_json_atomic(live_dir(run) / STOP, {"by": by, "time": time.time()})


def read_status(run: str | Path) -> dict | None:
    """The trainer's latest ``status.json``, or None before it published one."""
    try:
        return json.loads((live_dir(run) / STATUS).read_text())
    except (FileNotFoundError, ValueError):
        return None


def read_snapshot(run: str | Path) -> dict | None:
    """The arrays of the latest ``snapshot.h5`` (None before one was published)."""
    try:
        return read_arrays_h5(live_dir(run) / SNAPSHOT)
    except (FileNotFoundError, OSError):
        return None


def bin_frame(frame: np.ndarray, max_px: int = MAX_FRAME_PX) -> tuple[np.ndarray, int]:
    """The frame averaged over square blocks of ``factor`` pixels so that no side exceeds ``max_px`` (edge rows and
    columns that fill no whole block are dropped); returns (binned float32 frame, factor)."""
    factor = max(1, -(-max(frame.shape) // max_px))
    rows, cols = frame.shape[0] // factor, frame.shape[1] // factor
    blocks = np.asarray(frame[:rows * factor, :cols * factor], dtype=np.float32)
    return blocks.reshape(rows, factor, cols, factor).mean(axis=(1, 3)), factor


class LivePublisher:
    """The trainer's side of the live channel for the run folder ``out``. ``instrument_state()`` returns the
    instruments' read-back (``drivers.instruments.LabInstruments.snapshot``), or is None without instruments.
    ``clock``: monotonic seconds (tests pass their own)."""

    def __init__(self, out: str | Path, instrument_state=None, clock=time.monotonic):
        self.out, self.instrument_state, self.clock = Path(out), instrument_state, clock
        self.started = time.time()
        self._next_check = self._next_publish = 0.0
        self._warned = False
        (live_dir(self.out) / STOP).unlink(missing_ok=True)  # from an earlier session: not this one's to act on

    def after_step(self, trainer, estimate, stop) -> None:
        """Called by the trainer at every step boundary with itself, the step's ``EPEstimate`` and its
        ``StopRequest``: takes a stop request, publishes while watched."""
        now = self.clock()
        if now < self._next_check:
            return
        self._next_check = now + CHECK_EVERY_S
        if not is_watched(self.out):
            return
        try:
            self._take_stop_request(stop)
            if now >= self._next_publish:
                self._next_publish = now + PUBLISH_EVERY_S
                self.publish(trainer, estimate)
        except Exception as exc:  # the monitor's trouble (a full disk, a removed folder) never stops the training
            if not self._warned:
                warnings.warn(f"live data for the monitor not written: {type(exc).__name__}: {exc}", RuntimeWarning,
                              stacklevel=2)
                self._warned = True

    def _take_stop_request(self, stop) -> None:
        request = live_dir(self.out) / STOP
        if request.exists():
            request.unlink(missing_ok=True)
            if not stop.requested:
                stop.request("monitor")
                print("\nstop requested from the monitor: stopping after the current step", file=sys.stderr)

    def publish(self, trainer, estimate) -> None:
        """Write ``status.json`` and ``snapshot.h5`` for the trainer's committed state."""
        s, net = trainer.state, trainer.net
        status = {"pid": os.getpid(), "host": socket.gethostname(), "session_started": self.started,
                  "time": time.time(), "step": s.step, "epoch": s.epoch, "epochs": trainer.cfg.epochs,
                  "steps_total": trainer.cfg.epochs * trainer.n_batches, "network": net.name,
                  "instruments": self._instruments()}
        arrays = {"spin_angles": estimate.free.phases[0], "couplings": s.params.w[net.edge_param],
                  "step": np.int64(s.step)}
        machine = trainer.machine
        frame = getattr(machine, "last_frame", None)
        if frame is not None:  # an optical machine: the frame and the spots of its latest readout
            binned, factor = bin_frame(np.asarray(frame))
            arrays.update(frame=binned, frame_bin=np.int64(factor), camera_shape=np.asarray(frame.shape),
                          spot_centres=machine.layout.spot_centres[machine.layout.spin_index.ravel()],
                          spot_phases=machine.last_spot_phases)
        write_arrays_h5(live_dir(self.out) / SNAPSHOT, arrays)
        write_json_atomic(live_dir(self.out) / STATUS, status)

    def _instruments(self) -> dict:
        if self.instrument_state is None:
            return {}
        try:
            return self.instrument_state()
        except Exception as exc:  # a read-back failure is the trainer's next check to handle, not the monitor's
            return {"error": f"{type(exc).__name__}: {exc}"}
