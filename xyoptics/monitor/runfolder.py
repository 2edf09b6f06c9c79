"""Reading a run folder while its run writes it: the metrics appended since the last look, whether the run is
running or has ended, the trainer's live data (``xyoptics.lab.live``), and the records a session leaves
(summary, calibration, rig snapshot). Nothing here writes.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..config import TrainConfig
from ..core.files import read_arrays_h5
from ..core.network import XYNetwork
from ..lab import live


class MetricsTail:
    """The complete lines appended to ``metrics.jsonl`` since the last ``read``. A resumed run replaces the file
    (it keeps only the lines its checkpoint covers): then ``read`` starts over and says so."""

    def __init__(self, path: Path):
        self.path = path
        self._inode: int | None = None
        self._offset = 0

    def read(self) -> tuple[bool, list[dict]]:
        """(restarted, new records): ``restarted`` is True when the records start from the file's beginning
        again, so whatever was read before is to be forgotten."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            restarted, self._inode, self._offset = self._inode is not None, None, 0
            return restarted, []
        restarted = stat.st_ino != self._inode or stat.st_size < self._offset
        if restarted:
            self._inode, self._offset = stat.st_ino, 0
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[:data.rfind(b"\n") + 1]
        self._offset += len(complete)
        return restarted, [json.loads(line) for line in complete.splitlines() if line.strip()]


@dataclass(frozen=True)
class RunState:
    """``phase``: "waiting" (no run in the folder yet), "running", "ended" or "lost" (a process that published
    live data and is gone without a summary); ``text`` says it for a person."""

    phase: str
    text: str

    @property
    def running(self) -> bool:
        return self.phase == "running"


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (on POSIX; elsewhere assumed, since Windows' ``os.kill``
    would end it)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunFolder:
    """One run folder, read on demand. The network is built once from ``config.yaml`` (for its geometry)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._network: XYNetwork | None = None
        self.network_problem: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def state(self) -> RunState:
        """Running while the metrics (or the trainer's live status) are newer than ``summary.json``, which a
        session writes last; ended otherwise. A trainer on this host that published and whose process is gone
        without a newer summary is "lost" (killed)."""
        metrics, summary = _mtime(self.path / "metrics.jsonl"), _mtime(self.path / "summary.json")
        status_time = _mtime(live.live_dir(self.path) / live.STATUS)
        latest = max((t for t in (metrics, status_time) if t is not None), default=None)
        if summary is not None and (latest is None or summary >= latest):
            return RunState("ended", (self.summary() or {}).get("status", "ended"))
        if latest is None:
            return RunState("waiting", "waiting for the run to start")
        status = live.read_status(self.path)
        if status is not None and status.get("host") == socket.gethostname() and not process_alive(int(status["pid"])):
            return RunState("lost", f"not running: process {status['pid']} ended without a summary "
                                    f"(killed?); resume with xyoptics train --resume {self.path}")
        return RunState("running", "running")

    def seconds_since_metrics(self, now: float) -> float | None:
        t = _mtime(self.path / "metrics.jsonl")
        return None if t is None else now - t

    # -- records --------------------------------------------------------------------------------------------
    def summary(self) -> dict | None:
        return _read_json(self.path / "summary.json")

    def session(self) -> dict | None:
        return _read_json(self.path / "session.json")

    def calibration(self) -> dict | None:
        return _read_json(self.path / "calibration.json")

    def rig_snapshot(self) -> dict | None:
        """The latest session's device and instrument snapshot."""
        snapshots = _read_json(self.path / "rig_snapshot.json")
        return snapshots[-1] if snapshots else None

    def live_status(self) -> dict | None:
        return live.read_status(self.path)

    def snapshot_mtime(self) -> float | None:
        return _mtime(live.live_dir(self.path) / live.SNAPSHOT)

    def live_snapshot(self) -> dict | None:
        return live.read_snapshot(self.path)

    def params_mtime(self) -> float | None:
        return _mtime(self.path / "params.h5")

    def final_couplings(self) -> np.ndarray | None:
        """The coupling of every bond from ``params.h5`` (written when a session ends), or None."""
        net = self.network()
        if net is None or not (self.path / "params.h5").exists():
            return None
        try:
            return read_arrays_h5(self.path / "params.h5")["w"][net.edge_param]
        except (OSError, KeyError):
            return None

    def network(self) -> XYNetwork | None:
        """The run's network (geometry, bonds, inputs, outputs), built from ``config.yaml`` once it exists; None
        (and ``network_problem`` says why) where it cannot be built."""
        if self._network is None and self.network_problem is None and (self.path / "config.yaml").exists():
            from ..lab.build import prepare  # loads the task's data to size the network

            try:
                cfg = TrainConfig.model_validate(yaml.safe_load((self.path / "config.yaml").read_text()))
                self._network = prepare(cfg)[2]
            except Exception as exc:  # the page shows everything else without the geometry
                self.network_problem = f"{type(exc).__name__}: {exc}"
        return self._network
