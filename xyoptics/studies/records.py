"""A study's run records, streamed to its output folder one file per run, so a stopped study resumes.

Layout of ``OUT``:

* ``OUT/study.json``: the study's name, its config (as JSON) and the SHA-256 of that config
  (``json.dumps(config, sort_keys=True)``). Written before the first run; a later start with another study or
  another config in the same folder is refused (``ConfigError``) instead of mixing results, unless the caller
  clears the folder's records first (``clear_records``, the command line's ``--restart``).
* ``OUT/runs/<key>.json``: one run's record, written atomically by the process that drives the study as soon as
  the run ends. ``key`` identifies the run within the study (e.g. ``arch2_seed7``); ``status`` is ``ok``,
  ``failed`` (the run raised; ``reason`` names the exception, ``traceback`` shows where) or ``stopped`` (cut
  short by SIGINT / SIGTERM or a dead worker; ``reason`` says which). An ``ok`` record holds what the study's
  run function returned.

Resume rule: a run whose record exists with status ``ok`` is not run again; every other run (no record,
``failed`` or ``stopped``) is. ``Sweep`` holds every run's record after a study's runs; summaries take its
``ok`` records and report how many were left out.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..core.files import read_json, write_json_atomic
from ..core.schema import ConfigError

STAMP = "study.json"
RUNS = "runs"
KEY = re.compile(r"^[A-Za-z0-9_.-]+$")
STATUSES = ("ok", "failed", "stopped")


def config_hash(config: dict) -> str:
    """SHA-256 of a JSON-able config, independent of key order."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def clear_records(out_dir: str | Path) -> int:
    """Remove ``study.json`` and ``runs/`` from ``out_dir`` (nothing else); returns how many records went."""
    out_dir = Path(out_dir)
    runs = out_dir / RUNS
    n = len(list(runs.glob("*.json"))) if runs.is_dir() else 0
    shutil.rmtree(runs, ignore_errors=True)
    (out_dir / STAMP).unlink(missing_ok=True)
    return n


class RunRecords:
    """The records of one study in ``out_dir``; creating it claims the folder for ``study`` and ``config``."""

    def __init__(self, out_dir: str | Path, study: str, config: dict):
        self.out_dir = Path(out_dir)
        self.folder = self.out_dir / RUNS
        digest = config_hash(config)
        stamp = self.out_dir / STAMP
        if stamp.exists():
            held = read_json(stamp)
            if held.get("study") != study or held.get("config_sha256") != digest:
                what = f"study {held.get('study')}" if held.get("study") != study else "a different config"
                raise ConfigError(f"{self.out_dir} holds the runs of {what} ({len(self.keys())} records in "
                                  f"{self.folder}); choose another --out, or add --restart to discard them")
        else:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(stamp, {"study": study, "config_sha256": digest, "config": config})
        self.folder.mkdir(exist_ok=True)

    def path(self, key: str) -> Path:
        if not KEY.match(key):
            raise ValueError(f"run key {key!r} is not a plain file name ([A-Za-z0-9_.-]+)")
        return self.folder / f"{key}.json"

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.json")) if self.folder.is_dir() else []

    def get(self, key: str) -> dict | None:
        """The record of run ``key``, or None when it has none (never run, or its write was cut short)."""
        path = self.path(key)
        try:
            return read_json(path)
        except FileNotFoundError:
            return None

    def is_done(self, key: str) -> bool:
        record = self.get(key)
        return record is not None and record.get("status") == "ok"

    def put(self, key: str, record: dict) -> dict:
        """Write run ``key``'s record (``key`` first, then the record, which must carry a known ``status``)."""
        if record.get("status") not in STATUSES:
            raise ValueError(f"run {key}: status must be one of {STATUSES}, got {record.get('status')!r}")
        record = {"key": key, **record}
        write_json_atomic(self.path(key), record)
        return record


@dataclass
class Sweep:
    """Every task's record in task order (a study's results come from the ``ok`` ones) and the engine used."""

    records: list[dict]
    engine: dict

    @property
    def ok(self) -> list[dict]:
        return [r for r in self.records if r["status"] == "ok"]

    @property
    def not_ok(self) -> list[dict]:
        return [r for r in self.records if r["status"] != "ok"]

    def counts(self) -> dict[str, int]:
        return {s: sum(r["status"] == s for r in self.records) for s in STATUSES}

    def check_groups(self, labels: list[str], field: str | None = None) -> None:
        """Raise ``StudyIncomplete`` when a group (``record[field]`` = its index; one group when ``field`` is
        None) has no ``ok`` run, since its statistics cannot be computed."""
        for k, label in enumerate(labels):
            if not any(field is None or r[field] == k for r in self.ok):
                raise StudyIncomplete(f"no run of {label} finished ok ({len(self.not_ok)} runs failed or stopped; "
                                      f"see their reasons in runs/); after fixing the cause, run the same command "
                                      f"again: finished runs are kept")


class StudyIncomplete(Exception):
    """Too few runs finished ok to summarise the study."""
