"""One session per rig: exclusive per-device locks, so a second process driving the same hardware is refused.

``rig_lock(rig, purpose)`` takes one lock per device key (``device_keys``), in sorted order so two processes
never deadlock: an ``flock`` on ``<lock dir>/<sha256 of key>.lock``, holding the holder's JSON (pid, host, user,
argv, purpose, start time, key), cleared on every exit. A busy lock raises ``RigBusy`` naming holder and device.
The OS drops a dead process's flock, so a file still naming a holder while its flock is free is stale: it is
taken over and reported (``RigLock.stale`` and a ``StaleRigLock`` warning). Lock files are never deleted
(unlinking races with the next taker); a free one is empty. The locking itself is ``xyoptics.core.exclusive``.

Device keys. SLM, camera: ``role:class`` plus canonical JSON of the identifying kwargs only, those named like a
unit (serial, sn, id, index, identifier, device, port, host, address, resource, url, preselect, config,
rig_name, or ending _serial, _number, _id, _index, _port, _address, _host, _url), a ``"@slm"`` reference
standing for the SLM's identity; sizing and tuning kwargs never count. A class with no identifying kwarg is
keyed by class alone: two unnamed units of one class conflict (a false refusal, cured by naming the serial,
beats two processes on one device). An identifying kwarg left at its default differs from the same value
written out. Laser ``laser:<backend>:<resource>``, shutter ``shutter:<port or URL>``: rigs sharing one conflict.

Scope. Per process and re-entrant (counted per lock file; the outer holder info stays), so calibration inside
a training run of the same process passes; a forked child closes the descriptors it inherits. Lock dir:
``lock_dir``, else ``$XYOPTICS_LOCK_DIR``, else ``$XDG_RUNTIME_DIR/xyoptics-locks``, else
``/tmp/xyoptics-locks-<uid>``, created 0700. The defaults are per user; users sharing a rig share one
``XYOPTICS_LOCK_DIR``. Without fcntl (Windows) a one-byte ``msvcrt.locking`` region, also dropped at death,
replaces flock (untested), and the holder's pid is not probed (``os.kill`` would terminate it there).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..core import exclusive
from ..core.exclusive import describe_holder
from ..core.schema import ConfigError

_NAMES = frozenset({"serial", "sn", "id", "index", "identifier", "device", "port", "host", "address", "resource",
                    "url", "preselect", "config", "rig_name"})
_SUFFIXES = ("_serial", "_number", "_id", "_index", "_port", "_address", "_host", "_url")


class RigBusy(ConfigError):
    """A device of the rig is held by another process; ``holder`` is its recorded info (None: not yet written)."""

    def __init__(self, rig: str, key: str, holder: dict | None, path: Path):
        self.rig, self.key, self.holder, self.path = rig, key, holder, path
        who = describe_holder(holder) if holder else "another process that has not recorded itself yet"
        note = (" (that process no longer runs: a process it started may still hold the lock)"
                if holder and exclusive.running(holder) is False else "")
        super().__init__(f"rig {rig!r} is busy: {key} is in use by {who}{note}; lock file {path}")


class StaleRigLock(UserWarning):
    """A lock left by a process that died was taken over."""


@dataclass
class RigLock:
    """What ``rig_lock`` yields: the keys held, and the stale holders taken over (their info plus ``reason``)."""

    rig: str
    purpose: str
    keys: list[str]
    lock_dir: Path
    stale: list[dict] = field(default_factory=list)


def _identity(spec, slm: dict | None = None) -> dict:
    """The identifying kwargs of a ``DeviceSpec``; ``"@slm"`` becomes ``slm``, other references are dropped."""
    out = {}
    for k, v in spec.kwargs.items():
        if v == "@slm" and slm is not None:
            out[k] = slm
        elif not (isinstance(v, str) and v.startswith("@")) and (k.lower() in _NAMES or k.lower().endswith(_SUFFIXES)):
            out[k] = v
    return out


def _canon(d: dict) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), default=str) if d else ""


def device_keys(rig) -> list[str]:
    """Sorted identity strings of the devices ``rig`` (a ``RigConfig``) drives; see the module's rule."""
    slm = _identity(rig.slm)
    camera = _identity(rig.camera, {"class": rig.slm.cls, **slm})
    keys = {f"slm:{rig.slm.cls}{_canon(slm)}", f"camera:{rig.camera.cls}{_canon(camera)}"}
    if rig.laser is not None:
        keys.add(f"laser:{rig.laser.backend}:{rig.laser.resource}")
    if rig.shutter is not None:
        keys.add(f"shutter:{rig.shutter}")
    return sorted(keys)


def lock_directory(lock_dir=None) -> Path:
    """The lock directory, created (mode 0700) if missing. A default directory that exists must be a directory
    owned by this user (it is then set to 0700); an explicit one (argument or ``$XYOPTICS_LOCK_DIR``) is used
    as it is, so that it may be shared."""
    explicit = lock_dir or os.environ.get("XYOPTICS_LOCK_DIR")
    if explicit:
        path = Path(explicit)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "xyoptics-locks"
    else:  # /tmp, not $TMPDIR: two shells with different TMPDIRs must still meet
        uid = os.getuid() if hasattr(os, "getuid") else exclusive.user()
        path = Path("/tmp" if os.name == "posix" else os.environ.get("TEMP", ".")) / f"xyoptics-locks-{uid}"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
        os.chmod(path, 0o700)
    except FileExistsError:
        st = os.lstat(path)
        if not path.is_dir() or path.is_symlink():
            raise ConfigError(f"rig lock directory {path} is not a directory") from None
        if not explicit and hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise ConfigError(f"rig lock directory {path} belongs to another user; set XYOPTICS_LOCK_DIR")
        if not explicit and st.st_mode & 0o077:
            os.chmod(path, 0o700)
    return path


def _acquire(rig: str, key: str, path: Path, holder: dict) -> dict | None:
    """Take one lock (or count a re-entry); return the stale holder taken over, if any."""
    old = exclusive.acquire(path, {**holder, "key": key}, lambda info: RigBusy(rig, key, info, path))
    reason = {False: "its process no longer runs", True: "its pid now belongs to another process",
              None: "its process cannot be checked from here"}[exclusive.running(old)] if old else None
    return old and {**old, "key": key, "lock_file": str(path), "reason": reason}


@contextmanager
def rig_lock(rig, purpose: str, lock_dir=None):
    """Hold every device lock of ``rig`` for the block and yield a ``RigLock``; raise ``RigBusy`` if another
    process holds any of them (locks taken so far are released). Released on every exit."""
    if not exclusive.AVAILABLE:  # pragma: no cover
        raise ConfigError("rig locking needs fcntl or msvcrt, which this platform lacks")
    directory = lock_directory(lock_dir)
    holder = exclusive.holder_info(purpose)
    lock = RigLock(rig.name, purpose, device_keys(rig), directory)
    taken: list[Path] = []
    try:
        for key in lock.keys:
            path = directory / (hashlib.sha256(key.encode()).hexdigest() + ".lock")
            stale = _acquire(rig.name, key, path, holder)
            taken.append(path)
            if stale:
                lock.stale.append(stale)
                warnings.warn(f"rig {rig.name!r}: took over a stale lock on {key} left by "
                              f"{describe_holder(stale)} ({stale['reason']})", StaleRigLock, stacklevel=3)
        yield lock
    finally:
        for path in reversed(taken):
            exclusive.release(path)
