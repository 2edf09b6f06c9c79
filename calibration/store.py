"""Versioned calibration store: one HDF5 file per calibration, ``root/<kind>-NNNNN.h5``, written atomically.

Arrays are datasets under ``arrays/``; metadata are root attributes (dicts JSON-encoded): kind, hardware,
created (ISO-8601 UTC), software version, dependencies, quality figures, sha256 of each array's bytes, shapes
and a format version. Loading verifies checksums and, given the connected :class:`Hardware`, refuses a
calibration made for another rig or SLM/camera resolution or bit depth (:class:`CalibrationError`) before the
caller writes anything to the SLM; :meth:`CalibrationStore.latest_set` warns (:class:`StaleCalibrationWarning`)
when a calibration is older than a newer calibration of a kind it depends on. ``index.json`` lists every file
saved (kind, name, sha256 of the file, rig), so that a deleted or altered file is noticed
(``calibration.selection``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

import h5py
import numpy as np

from xyoptics.core.files import create_temp, sha256_file, write_json_atomic

FORMAT_VERSION = 1
INDEX = "index.json"
_KIND = re.compile(r"^[A-Za-z0-9_]+$")


class CalibrationError(ValueError):
    """A calibration file that is corrupt, unreadable or made for other hardware; the message names the file."""


class CalibrationWarning(UserWarning):
    """A calibration file skipped or loaded with a caveat (renamed driver class, other wavelength)."""


class StaleCalibrationWarning(UserWarning):
    """A calibration is older than a newer calibration of a kind it depends on."""


def _now() -> datetime:
    """Current UTC time (module-level so tests can control creation times)."""
    return datetime.now(timezone.utc)


def _software_version() -> str:
    try:
        return importlib.metadata.version("xyoptics")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _sha256_array(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _class_path(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _resolution(device) -> tuple[int, int]:
    """(width, height) from ``device.resolution``, else from ``device.shape`` (height, width)."""
    res = getattr(device, "resolution", None)
    res = res if res is not None else tuple(device.shape)[::-1]
    return (int(res[0]), int(res[1]))


@dataclass(frozen=True)
class Hardware:
    """Identity of the rig a calibration was made on; resolutions are (width, height) pixels."""

    rig_name: str
    slm_class: str
    slm_name: str
    slm_resolution: tuple[int, int]
    slm_bitdepth: int
    camera_class: str
    camera_name: str
    camera_resolution: tuple[int, int]
    camera_bitdepth: int
    wavelength_nm: float | None = None

    @classmethod
    def from_devices(cls, rig_name: str, slm, camera, wavelength_nm: float | None = None) -> Hardware:
        """Read the identity of open slmsuite devices (``resolution`` or ``shape``, ``bitdepth``, ``name``)."""
        return cls(str(rig_name), _class_path(slm), str(getattr(slm, "name", "")), _resolution(slm),
                   int(slm.bitdepth), _class_path(camera), str(getattr(camera, "name", "")),
                   _resolution(camera), int(camera.bitdepth),
                   None if wavelength_nm is None else float(wavelength_nm))

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (resolutions as lists)."""
        d = asdict(self)
        return {**d, "slm_resolution": list(self.slm_resolution), "camera_resolution": list(self.camera_resolution)}

    @classmethod
    def from_dict(cls, d: Mapping) -> Hardware:
        """Inverse of :meth:`to_dict`."""
        wav = d.get("wavelength_nm")
        return cls(str(d["rig_name"]), str(d["slm_class"]), str(d["slm_name"]),
                   tuple(int(n) for n in d["slm_resolution"]), int(d["slm_bitdepth"]),
                   str(d["camera_class"]), str(d["camera_name"]),
                   tuple(int(n) for n in d["camera_resolution"]), int(d["camera_bitdepth"]),
                   None if wav is None else float(wav))


def check_compatible(name: str, made: Hardware, connected: Hardware) -> None:
    """Raise :class:`CalibrationError` naming every rig, resolution or bit-depth mismatch; warn when only
    device class/name or wavelength differ (drivers get renamed)."""
    problems = []
    if made.rig_name != connected.rig_name:
        problems.append(f"was made on rig {made.rig_name!r}, but this is rig {connected.rig_name!r}")
    for role, label in (("slm", "SLM"), ("camera", "camera")):
        m, c = ("{0}x{1} {2}-bit".format(*getattr(h, f"{role}_resolution"), getattr(h, f"{role}_bitdepth"))
                for h in (made, connected))
        if m != c:
            problems.append(f"was made for a {m} {label}, but the connected {label} is {c}")
    if problems:
        raise CalibrationError(f"{name} " + "; and ".join(problems))
    for key in ("slm_class", "slm_name", "camera_class", "camera_name", "wavelength_nm"):
        m, c = getattr(made, key), getattr(connected, key)
        if m != c and m is not None and c is not None:
            warnings.warn(f"{name}: {key} was {m!r}, now {c!r}; using it anyway", CalibrationWarning, stacklevel=3)


@dataclass(frozen=True)
class CalibrationRecord:
    """One stored calibration. ``depends_on`` maps a kind to the file name of the calibration it used and
    ``depends_on_created`` to that calibration's creation time; ``checksums`` are sha256 of array bytes."""

    kind: str
    arrays: dict[str, np.ndarray]
    quality: dict[str, float]
    hardware: Hardware
    created: str
    software_version: str
    depends_on: dict[str, str] = field(default_factory=dict)
    depends_on_created: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    checksums: dict[str, str] = field(default_factory=dict)


class CalibrationStore:
    """A folder of calibration files ``<kind>-NNNNN.h5``, serial numbered per kind."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _serials(self, kind: str) -> list[tuple[int, Path]]:
        pattern = re.compile(rf"^{re.escape(kind)}-(\d{{5,}})\.h5$")
        found = [(int(m.group(1)), p) for p in self.root.glob(f"{kind}-*.h5") if (m := pattern.match(p.name))]
        return sorted(found)

    def files(self, kind: str) -> list[Path]:
        """Files of one kind, oldest serial first."""
        return [p for _, p in self._serials(kind)]

    def _dependencies(self, depends_on) -> tuple[dict[str, str], dict[str, str]]:
        names, created = {}, {}
        for dep_kind, dep in (depends_on or {}).items():
            if not isinstance(dep, CalibrationRecord):  # a file name in this store
                dep = self.load(self.root / Path(dep).name)
            if dep.path is None:
                raise CalibrationError(f"dependency {dep_kind!r} was never saved (it has no path)")
            names[dep_kind], created[dep_kind] = Path(dep.path).name, dep.created
        return names, created

    def save(self, kind: str, arrays: Mapping[str, np.ndarray], quality: Mapping[str, float] | None,
             hardware: Hardware, depends_on: Mapping | None = None) -> Path:
        """Write ``root/<kind>-NNNNN.h5`` (next free serial) atomically and return its path.

        ``depends_on`` maps a kind to the :class:`CalibrationRecord` (or file name in this store) used.
        """
        if not _KIND.match(kind):
            raise ValueError(f"calibration kind must be letters, digits and '_', got {kind!r}")
        arrays = {str(k): np.asarray(v) for k, v in arrays.items()}
        for name, a in arrays.items():
            if not name or "/" in name or name in (".", "..") or a.dtype.hasobject:
                raise ValueError(f"array {name!r} ({a.dtype}): need a name without '/' and a numeric dtype")
        dep_names, dep_created = self._dependencies(depends_on)
        attrs = {
            "format_version": FORMAT_VERSION, "kind": kind,
            "hardware": json.dumps(hardware.to_dict()), "created": _now().isoformat(),
            "software_version": _software_version(), "depends_on": json.dumps(dep_names),
            "depends_on_created": json.dumps(dep_created),
            "quality": json.dumps({str(k): float(v) for k, v in (quality or {}).items()}),
            "checksums": json.dumps({n: _sha256_array(a) for n, a in arrays.items()}),
            "shapes": json.dumps({n: list(a.shape) for n, a in arrays.items()}),
        }
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = create_temp(self.root, f".{kind}.", ".tmp")  # mode 0666 & ~umask, as the stored file gets
        os.close(fd)
        try:
            with h5py.File(tmp, "w") as f:
                group = f.create_group("arrays")
                for name, a in arrays.items():
                    group.create_dataset(name, data=a)
                f.attrs.update(attrs)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            path = self._claim(kind, Path(tmp))
            self._add_to_index(path, kind, hardware.rig_name)
            return path
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _add_to_index(self, path: Path, kind: str, rig_name: str) -> None:
        """Append a saved file to ``index.json`` (kind, file, sha256 of the file, rig), the list a run's set
        is chosen from (``calibration.selection``); a store without one is first indexed as it stands."""
        index_path = self.root / INDEX
        if index_path.exists():
            try:
                entries = json.loads(index_path.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise CalibrationError(f"{index_path} is corrupt ({exc}); move it away to re-index") from None
        else:
            entries = [{"kind": p.name.rsplit("-", 1)[0], "file": p.name, "sha256": sha256_file(p), "rig": None}
                       for p in sorted(self.root.glob("*-[0-9]*.h5")) if p != path]
        entries.append({"kind": kind, "file": path.name, "sha256": sha256_file(path), "rig": rig_name})
        write_json_atomic(index_path, entries)

    def _claim(self, kind: str, tmp: Path) -> Path:
        """Move a complete file to the next free serial; a hard link never overwrites a concurrent save."""
        while True:
            serials = self._serials(kind)
            path = self.root / f"{kind}-{(serials[-1][0] + 1) if serials else 1:05d}.h5"
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                continue
            except OSError:  # file system without hard links
                os.replace(tmp, path)
                return path

    def load(self, path: str | Path, hardware: Hardware | None = None) -> CalibrationRecord:
        """Read and verify a calibration; with ``hardware``, refuse one made for other hardware."""
        name = (path := Path(path)).name
        try:
            with h5py.File(path, "r") as f:
                attrs = {k: f.attrs[k] for k in f.attrs}
                version = int(attrs.get("format_version", -1))
                if version > FORMAT_VERSION:
                    raise CalibrationError(f"{name} has format version {version}; this software reads "
                                           f"up to {FORMAT_VERSION}: upgrade xyoptics")
                made = Hardware.from_dict(json.loads(attrs["hardware"]))
                if hardware is not None:
                    check_compatible(name, made, hardware)
                arrays = {k: np.asarray(v[()]) for k, v in f["arrays"].items()}
            checksums = json.loads(attrs["checksums"])
            meta = dict(kind=str(attrs["kind"]), quality=json.loads(attrs["quality"]),
                        created=str(attrs["created"]), software_version=str(attrs["software_version"]),
                        depends_on=json.loads(attrs["depends_on"]),
                        depends_on_created=json.loads(attrs.get("depends_on_created", "{}")))
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise CalibrationError(f"{name} is not a readable calibration file: {type(e).__name__}: {e}") from e
        if set(checksums) != set(arrays):
            raise CalibrationError(f"{name} holds arrays {sorted(arrays)} but its checksums list "
                                   f"{sorted(checksums)}: file corrupt or edited")
        for key, a in arrays.items():
            if _sha256_array(a) != checksums[key]:
                raise CalibrationError(f"array {key} of {name} fails its checksum: file corrupt or edited")
        return CalibrationRecord(arrays=arrays, hardware=made, path=path, checksums=checksums, **meta)

    def latest(self, kind: str, hardware: Hardware | None = None) -> CalibrationRecord | None:
        """Newest (highest serial) file of ``kind`` that loads and matches ``hardware``; others are skipped
        with a :class:`CalibrationWarning` naming them. None when there is none."""
        for path in reversed(self.files(kind)):
            try:
                return self.load(path, hardware)
            except CalibrationError as e:
                warnings.warn(f"skipping {path.name}: {e}", CalibrationWarning, stacklevel=2)
        return None

    def latest_set(self, kinds: Iterable[str], hardware: Hardware | None) -> dict[str, CalibrationRecord]:
        """Latest usable record of each kind (kinds with none are left out), then :meth:`check_stale`."""
        records = {k: r for k in kinds if (r := self.latest(k, hardware)) is not None}
        self.check_stale(records, hardware)
        return records

    def check_stale(self, records: Mapping[str, CalibrationRecord], hardware: Hardware | None) -> list[str]:
        """Warn (:class:`StaleCalibrationWarning`) for each record whose dependency kind now has a newer
        calibration than the one it used; return the messages."""
        newest = dict(records)
        messages = []
        for record in records.values():
            for dep_kind, dep_name in record.depends_on.items():
                if dep_kind not in newest:
                    newest[dep_kind] = self.latest(dep_kind, hardware)
                dep = newest[dep_kind]
                if dep is None or dep.path is None or dep.path.name == dep_name:
                    continue
                used = record.depends_on_created.get(dep_kind)
                if used is None or datetime.fromisoformat(dep.created) <= datetime.fromisoformat(used):
                    continue
                own = record.path.name if record.path is not None else record.kind
                msg = f"{own} is older than {dep.path.name} it depends on; recalibrate {record.kind}"
                warnings.warn(msg, StaleCalibrationWarning, stacklevel=2)
                messages.append(msg)
        return messages

    @staticmethod
    def references(records: Iterable[CalibrationRecord]) -> list[dict]:
        """What a run folder records of the calibrations it used: kind, path, sha256 of the file, created."""
        records = list(records)
        if unsaved := [r.kind for r in records if r.path is None]:
            raise CalibrationError(f"calibrations never saved (no path): {', '.join(unsaved)}")
        return [{"kind": r.kind, "path": str(r.path), "sha256": sha256_file(r.path),
                 "created": r.created} for r in records]
