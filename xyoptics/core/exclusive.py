"""Exclusive, non-blocking file locks that name their holder: the mechanism under rig locks and study-folder locks.

``acquire(path, holder, busy)`` opens ``path`` (created if missing), takes an exclusive lock on it without waiting
and writes ``holder`` (a JSON-able dict, ``holder_info()`` by default) into it; when another process holds it,
``busy(info)`` is raised, ``info`` being what that holder wrote (None if nothing yet). ``release(path)`` clears
the file and drops the lock. A dead process's lock is dropped by the OS, so a file still naming a holder while
its lock is free is stale: ``acquire`` takes it over and returns the stale holder's info. Lock files are never
deleted (unlinking races with the next taker); a free one is empty.

Scope: per process and re-entrant (counted per path; the outer holder info stays); a forked child closes (never
unlocks) the descriptors it inherits. POSIX uses ``flock``; Windows a one-byte ``msvcrt.locking`` region far past
the holder info (untested there). ``AVAILABLE`` is False where neither exists.
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import socket
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from pathlib import Path

try:
    import fcntl
    msvcrt = None
except ImportError:  # pragma: no cover - Windows
    fcntl = None
    try:
        import msvcrt
    except ImportError:
        msvcrt = None

AVAILABLE = fcntl is not None or msvcrt is not None
_WIN_OFFSET = 1 << 30  # msvcrt locks are mandatory: lock a byte far past the holder info, which stays readable


def user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no name for this uid (containers)
        return str(os.getuid()) if hasattr(os, "getuid") else "?"


def holder_info(purpose: str) -> dict:
    """This process as a lock holder: pid, host, user, command line, purpose, start time."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "user": user(), "argv": list(sys.argv),
            "purpose": purpose, "started": datetime.now().astimezone().isoformat(timespec="seconds")}


def describe_holder(info: dict) -> str:
    """One line: pid, user@host, purpose, start time, command line."""
    return (f"pid {info.get('pid')} ({info.get('user')}@{info.get('host')}) for {info.get('purpose')!r} "
            f"since {info.get('started')}, command: {shlex.join(map(str, info.get('argv') or [])) or '?'}")


def running(info: dict) -> bool | None:
    """Whether the holder's pid runs: None when it cannot be told (other host, bad pid, not POSIX)."""
    pid = info.get("pid")
    if os.name != "posix" or info.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it runs, under another user
    except OSError:
        return None
    return True


def _lock(fd: int, take: bool) -> bool:
    """Take (non-blocking; False if held elsewhere) or drop the exclusive lock on ``fd``."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, (fcntl.LOCK_EX | fcntl.LOCK_NB) if take else fcntl.LOCK_UN)
        else:  # pragma: no cover - Windows
            os.lseek(fd, _WIN_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK if take else msvcrt.LK_UNLCK, 1)
    except OSError as exc:
        if take and (fcntl is None or isinstance(exc, BlockingIOError)):
            return False
        raise
    return True


def _read(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 1 << 16).decode("utf-8", "replace").strip()
    with suppress(ValueError):
        if isinstance(info := json.loads(raw), dict):
            return info
    return {"unreadable": raw[:200]} if raw else None


_held: dict[str, list] = {}  # lock file -> [fd, count]; this process's locks
_guard = threading.RLock()


def _forget_in_child() -> None:
    """After fork: the child closes (never unlocks) the inherited descriptors; the parent keeps its locks."""
    global _guard
    _guard = threading.RLock()
    for fd, _ in _held.values():
        with suppress(OSError):
            os.close(fd)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def acquire(path: Path, holder: dict, busy: Callable[[dict | None], Exception]) -> dict | None:
    """Take the lock on ``path`` (or count a re-entry) and record ``holder`` in it; raise ``busy(info)`` when
    another process holds it. Returns the info of a stale holder taken over, if any."""
    with _guard:
        if str(path) in _held:
            _held[str(path)][1] += 1
            return None
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags, 0o666)
        try:
            if not _lock(fd, True):
                raise busy(_read(fd))
            old = _read(fd)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(holder, indent=1) + "\n").encode())
        except BaseException:
            os.close(fd)
            raise
        _held[str(path)] = [fd, 1]
    return old


def release(path: Path) -> None:
    """Undo one ``acquire`` of ``path``; the last one clears the holder and drops the lock."""
    with _guard:
        entry = _held.get(str(path))
        if entry is None:
            return
        entry[1] -= 1
        if entry[1]:
            return
        del _held[str(path)]
    fd = entry[0]
    with suppress(OSError):  # clear the holder; closing drops the lock whatever else failed
        os.ftruncate(fd, 0)
    with suppress(OSError):
        _lock(fd, False)
    os.close(fd)
