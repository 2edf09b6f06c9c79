"""Rig locks: a second process on the same devices is refused naming the holder; locks go on every exit; a lock
left by a killed process is taken over and reported; keys follow device identity, not rig files."""

import fcntl
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from xyoptics.core.schema import ConfigError
from xyoptics.hil.rig import load_rig
from xyoptics.hil.riglock import RigBusy, StaleRigLock, device_keys, lock_directory, rig_lock

ROOT = Path(__file__).resolve().parents[1]
SIMULATED = load_rig(ROOT / "experiments" / "rigs" / "simulated.yaml")

HOLD = """
import sys, time
from xyoptics.hil.rig import RigConfig
from xyoptics.hil.riglock import rig_lock
with rig_lock(RigConfig.model_validate_json(sys.argv[1]), sys.argv[3], lock_dir=sys.argv[2]):
    print("held", flush=True)
    time.sleep(60)
"""


def named(rig_name: str, shutter: str | None = None, laser=None):
    """The simulated rig under another ``rig_name`` (SLM kwarg), with its own shutter and the given laser."""
    slm = SIMULATED.slm.model_copy(update={"kwargs": {**SIMULATED.slm.kwargs, "rig_name": rig_name}})
    return SIMULATED.model_copy(update={"name": rig_name, "slm": slm, "laser": laser,
                                        "shutter": shutter or f"xyshutter://{rig_name}"})


@contextmanager
def holder(rig, lock_dir, purpose="training"):
    """A child process holding ``rig``'s lock until the block ends; yields its Popen."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, rig.model_dump_json(by_alias=True), str(lock_dir), purpose],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line == "held\n", proc.stderr.read() if proc.poll() is not None else line
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def flocked(path: Path) -> bool:
    """Whether ``path`` is flocked, tried on an independent open file (so this process's own locks count)."""
    if not path.exists():
        return False
    with open(path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def lock_file(lock_dir: Path, key: str) -> Path:
    return lock_dir / (hashlib.sha256(key.encode()).hexdigest() + ".lock")


def locked(lock_dir: Path, keys) -> set[str]:
    return {k for k in keys if flocked(lock_file(lock_dir, k))}


def is_free(lock_dir: Path) -> bool:
    """Every lock file in ``lock_dir`` is unlocked and empty."""
    return all(not flocked(p) and not p.read_text() for p in lock_dir.glob("*.lock"))


def test_second_process_is_refused_naming_the_holder(tmp_path):
    keys = device_keys(SIMULATED)
    with holder(SIMULATED, tmp_path, "calibration") as proc:
        with pytest.raises(RigBusy) as err, rig_lock(SIMULATED, "training", tmp_path):
            pass
        assert locked(tmp_path, keys) == set(keys)  # still the holder's
    msg = str(err.value)
    assert isinstance(err.value, ConfigError) and err.value.key in keys and err.value.key in msg
    assert f"pid {proc.pid}" in msg and "'calibration'" in msg and "'simulated-xy-rig'" in msg
    assert err.value.holder["pid"] == proc.pid and err.value.holder["argv"][0] == "-c"


def test_released_on_normal_exit_and_on_exception_and_reentrant(tmp_path):
    with rig_lock(SIMULATED, "training", tmp_path) as lock:
        assert not is_free(tmp_path) and len(list(tmp_path.glob("*.lock"))) == len(lock.keys) == 4
        info = json.loads(next(tmp_path.glob("*.lock")).read_text())
        assert info["pid"] == os.getpid() and info["purpose"] == "training" and info["key"] in lock.keys
        assert {"host", "user", "argv", "started"} <= set(info)
        with rig_lock(SIMULATED, "calibration", tmp_path) as inner:  # same process: re-entrant
            assert inner.stale == []
        assert not is_free(tmp_path)  # the inner exit keeps the outer's locks
    assert is_free(tmp_path)
    with pytest.raises(RuntimeError, match="boom"), rig_lock(SIMULATED, "training", tmp_path):
        raise RuntimeError("boom")
    assert is_free(tmp_path)


def test_stale_lock_of_a_killed_process_is_taken_and_reported(tmp_path):
    with holder(SIMULATED, tmp_path, "rig check") as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert not is_free(tmp_path)  # holder info survives the kill, though the flock is gone
        with pytest.warns(StaleRigLock, match=f"pid {proc.pid}"), rig_lock(SIMULATED, "training", tmp_path) as lock:
            stale = lock.stale
    assert len(stale) == 4 and {s["key"] for s in stale} == set(lock.keys)
    assert all(s["pid"] == proc.pid and s["purpose"] == "rig check" and "no longer runs" in s["reason"]
               for s in stale)
    assert is_free(tmp_path)


def test_keys_follow_devices(tmp_path):
    laser = SIMULATED.laser
    a, b, c = named("rig-a", laser=laser), named("rig-b", laser=laser), named("rig-c")
    assert set(device_keys(a)) & set(device_keys(b)) == {f"laser:sim:{laser.resource}"}
    assert not set(device_keys(a)) & set(device_keys(c))
    retuned = SIMULATED.slm.model_copy(update={"kwargs": {**SIMULATED.slm.kwargs, "seed": 3, "bitdepth": 16}})
    assert device_keys(SIMULATED.model_copy(update={"slm": retuned, "name": "other"})) == device_keys(SIMULATED)
    with holder(a, tmp_path):
        with pytest.raises(RigBusy, match="laser:sim:ASRL1::INSTR"), rig_lock(b, "training", tmp_path):
            pass
        assert locked(tmp_path, device_keys(a) + device_keys(b)) == set(device_keys(a))
        assert lock_file(tmp_path, device_keys(b)[0]).exists()  # b's camera, taken before the laser, let go
        with rig_lock(c, "training", tmp_path) as lock:  # another simulated rig name: no shared device
            assert lock.stale == []


def test_lock_directory_is_private(tmp_path, monkeypatch):
    made = lock_directory(tmp_path / "a" / "locks")
    assert made.is_dir() and stat.S_IMODE(made.stat().st_mode) == 0o700
    monkeypatch.setenv("XYOPTICS_LOCK_DIR", str(tmp_path / "env"))
    with rig_lock(SIMULATED, "rig check") as lock:
        assert lock.lock_dir == tmp_path / "env" and stat.S_IMODE(lock.lock_dir.stat().st_mode) == 0o700
    monkeypatch.delenv("XYOPTICS_LOCK_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert lock_directory() == tmp_path / "run" / "xyoptics-locks"
