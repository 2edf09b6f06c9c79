"""Which calibration files a run uses: a whole, consistent set, or a refusal that names what to re-run.

The store's ``index.json`` lists every file it saved (kind, name, sha256, rig). For each procedure the set
takes the newest indexed file made on the rig; it must still exist, hash to its indexed sha256, pass its own
array checksums, and every dependency it was measured with must be exactly the set's file of that kind. A
missing, corrupt, truncated or edited file, a procedure never measured, or a dependency that is missing or
changed refuses the run (``ConfigError``) before any device is opened -- unless partial sets are allowed: then
the problem kinds and, transitively, every result depending on them are left out, with their reasons.

A store written before the index existed is read from the files present (deleted files then go unnoticed).
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from xyoptics.core.files import sha256_file
from xyoptics.core.schema import ConfigError

from .store import INDEX, CalibrationError, CalibrationRecord, CalibrationStore

_SERIAL = re.compile(r"-(\d{5,})\.h5$")


@dataclass
class CalibrationSet:
    """The records a run applies (kind -> record) and the kinds left out (kind -> reason)."""

    records: dict[str, CalibrationRecord]
    left_out: dict[str, str] = field(default_factory=dict)


def read_index(folder: Path) -> list[dict] | None:
    path = folder / INDEX
    if not path.exists():
        return None
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, list) or not all({"kind", "file", "sha256"} <= set(e) for e in entries):
            raise ValueError("not a list of {kind, file, sha256}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"calibration index {path} is corrupt ({exc}): re-run the calibration") from None
    return entries


def _candidates(folder: Path, kind: str, rig_name: str, index: list[dict] | None) -> list[dict]:
    if index is None:
        files = CalibrationStore(folder).files(kind)
        return [{"kind": kind, "file": p.name, "sha256": None, "rig": None} for p in files]
    return [e for e in index if e["kind"] == kind and e.get("rig") in (None, rig_name)]


def _newest(entries: list[dict]) -> dict | None:
    numbered = [(int(m[1]), e) for e in entries if (m := _SERIAL.search(e["file"]))]
    return max(numbered, key=lambda t: t[0])[1] if numbered else None


def _check(folder: Path, entry: dict, rig_name: str) -> CalibrationRecord:
    path = folder / entry["file"]
    if not path.exists():
        raise CalibrationError(f"{entry['file']} is missing")
    if entry["sha256"] is not None and sha256_file(path) != entry["sha256"]:
        raise CalibrationError(f"{entry['file']} changed since it was saved (sha256 differs): corrupt or edited")
    record = CalibrationStore(folder).load(path)
    if record.kind != entry["kind"]:
        raise CalibrationError(f"{entry['file']} holds a {record.kind!r} calibration")
    if record.hardware.rig_name != rig_name:
        raise CalibrationError(f"{entry['file']} was made on rig {record.hardware.rig_name!r}")
    return record


def choose_set(folder: str | Path, rig_name: str, kinds: dict[str, tuple[str, ...]], *,
               allow_partial: bool = False, rerun_hint: str = "xyoptics calibrate RIG --out {folder} --only {kinds}"
               ) -> CalibrationSet:
    """The calibration set of ``folder`` for rig ``rig_name``; ``kinds`` maps each procedure to the kinds it
    depends on (``calibration.runner.PROCEDURES``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"calibration folder {folder} does not exist")
    index = read_index(folder)
    if index is None:
        warnings.warn(f"{folder} has no {INDEX} (written by an older xyoptics): files deleted from it cannot be "
                      f"noticed", RuntimeWarning, stacklevel=2)
    records, problems = {}, {}
    for kind in kinds:
        entry = _newest(_candidates(folder, kind, rig_name, index))
        if entry is None:
            problems[kind] = f"no {kind} calibration of rig {rig_name!r}"
            continue
        try:
            records[kind] = _check(folder, entry, rig_name)
        except CalibrationError as exc:
            problems[kind] = str(exc)
    changed = True
    while changed:  # a result whose dependency is left out or is not the set's file of that kind
        changed = False
        for kind, record in list(records.items()):
            for dep in kinds[kind]:
                used = record.depends_on.get(dep)
                have = records.get(dep)
                if have is None:
                    reason = f"{record.path.name} depends on {dep}, which is left out ({problems.get(dep)})"
                elif used is not None and used != have.path.name:
                    reason = f"{record.path.name} was measured with {used}, but the set's {dep} is {have.path.name}"
                else:
                    continue
                problems[kind] = reason
                del records[kind]
                changed = True
                break
    if problems and not allow_partial:
        redo = [k for k in kinds if k in problems]
        listing = "; ".join(f"{k}: {problems[k]}" for k in redo)
        raise ConfigError(f"calibration {folder} is incomplete ({listing}); re-run: "
                          + rerun_hint.format(folder=folder, kinds=" ".join(redo))
                          + " (or train with --allow-partial-calibration to leave them out)")
    return CalibrationSet(records, {k: problems[k] for k in kinds if k in problems})
