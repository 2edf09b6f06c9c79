"""Where a result came from: the code (git commit, and whether the working tree had uncommitted changes), the
package versions and the machine. Stored with every study's results and every training run's summary."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("numpy", "scipy", "numba", "pydantic", "h5py", "slmsuite", "scikit-learn", "ray")
SOURCE = Path(__file__).resolve().parents[2]  # the checkout holding the xyoptics package


def git_state(path: Path = SOURCE) -> dict:
    """{"commit": sha, "dirty": bool} of the git checkout at ``path``; {"commit": None, "why": ...} when it is not
    one (an installed wheel) or git is missing."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return {"commit": None, "why": commit.stderr.strip() or "not a git checkout"}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"commit": None, "why": f"git unavailable: {exc}"}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def versions() -> dict:
    """Installed versions of python, xyoptics and the packages that shape results (None: not installed)."""
    out = {"python": platform.python_version()}
    for name in ("xyoptics", *PACKAGES):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict:
    """The host: name, OS, architecture, processor and the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"host": platform.node(), "platform": platform.platform(), "architecture": platform.machine(),
            "processor": platform.processor() or None, "cores": cores}


def provenance() -> dict:
    """git state, versions and machine in one dict."""
    return {"git": git_state(), "versions": versions(), "machine": machine()}
