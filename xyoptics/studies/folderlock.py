"""One driving process per study folder: an exclusive lock on ``OUT/study.lock`` while a study runs there.

Two processes driving the same folder would train the same runs twice and overwrite each other's records
(and ``--restart`` in one would delete the records the other is writing). ``hold_study_folder(out)`` takes the
lock (``xyoptics.core.exclusive``: non-blocking, the holder's pid, host, command line and start time written
into the file) and a second process is refused with a ``StudyFolderBusy`` that names the holder. The lock is
re-entrant within one process (the command line holds it around the whole study, every ``run_tasks`` inside
takes it again), cleared on exit, and dropped by the OS when the holding process dies, so a crash leaves
nothing to clean up. Worker processes never take it. Where the platform has no file locks, folders are not
locked.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from ..core import exclusive
from ..core.schema import ConfigError

LOCK = "study.lock"


class StudyFolderBusy(ConfigError):
    """Another running process drives a study in this folder."""


@contextmanager
def hold_study_folder(out_dir: str | Path):
    """Hold ``out_dir``'s study lock for the block (creating the folder); raise ``StudyFolderBusy`` when
    another process holds it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not exclusive.AVAILABLE:  # pragma: no cover
        yield
        return
    path = out_dir.resolve() / LOCK
    exclusive.acquire(path, exclusive.holder_info("study"), lambda info: _busy(out_dir, info))
    try:
        yield
    finally:
        exclusive.release(path)


def _busy(out_dir: Path, info: dict | None) -> StudyFolderBusy:
    who = exclusive.describe_holder(info) if info else "another process that has not recorded itself yet"
    return StudyFolderBusy(f"{out_dir} is in use by another running study ({who}); wait for it to end or stop "
                           f"it (Ctrl-C / kill, it records what it has), then run the command again")
