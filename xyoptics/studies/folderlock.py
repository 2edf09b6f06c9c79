"""One driving process per study folder: an exclusive lock on ``OUT/study.lock`` while a study runs there.

Two processes driving the same folder would train the same runs twice and overwrite each other's records
(and ``--restart`` in one would delete the records the other is writing). ``hold_study_folder(out)`` takes a
non-blocking ``flock`` on ``OUT/study.lock`` and writes the holder (pid, host, command line, start time) into
it; a second process is refused with a ``StudyFolderBusy`` that names the holder. The lock is re-entrant
within one process (the command line holds it around the whole study, every ``run_tasks`` inside takes it
again), cleared on exit, and dropped by the OS when the holding process dies, so a crash leaves nothing to
clean up. Worker processes never take it. Where ``fcntl`` is missing (Windows) folders are not locked.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

from ..core.schema import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK = "study.lock"
_held: dict[str, list] = {}  # resolved folder -> [fd, depth] for this process


class StudyFolderBusy(ConfigError):
    """Another running process drives a study in this folder."""


@contextmanager
def hold_study_folder(out_dir: str | Path):
    """Hold ``out_dir``'s study lock for the block (creating the folder); raise ``StudyFolderBusy`` when
    another process holds it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = str(out_dir.resolve())
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    if key in _held:
        _held[key][1] += 1
    else:
        _held[key] = [_take(out_dir / LOCK), 1]
    try:
        yield
    finally:
        _held[key][1] -= 1
        if not _held[key][1]:
            fd = _held.pop(key)[0]
            with suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing drops the flock


def _take(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 1 << 14).decode("utf-8", "replace").strip()
        os.close(fd)
        try:
            info = json.loads(holder)
            who = f"pid {info['pid']} on {info['host']} since {info['started']}: {' '.join(info['argv'])}"
        except (ValueError, KeyError, TypeError):
            who = "another process"
        raise StudyFolderBusy(f"{path.parent} is in use by another running study ({who}); wait for it to end "
                              f"or stop it (Ctrl-C / kill, it records what it has), then run the command "
                              f"again") from None
    except BaseException:
        os.close(fd)
        raise
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "argv": sys.argv,
              "started": datetime.now().astimezone().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(holder) + "\n").encode())
    return fd
