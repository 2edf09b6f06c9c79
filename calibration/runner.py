"""Run calibration procedures in dependency order on an open rig, store each result, and report.

Procedures: ``dark`` (camera dark frame and per-pixel noise, shutter closed), ``settle`` (SLM settle time), ``gray_phase`` (the SLM's gray -> phase lookup table),
``spot_map`` (spot centres and widths), ``path_offsets`` (per-spin optical path phases, which need the spot
map and the lookup table) and ``transfer`` (the gain of every bond, bias and nudge tile, which needs them all). Each result goes to the calibration store as one HDF5
file; ``report.json`` lists files, quality figures, frames used and time taken, and -- for the simulated rig
only -- each result's error against the rig's hidden truth. A procedure that fails is reported and its
dependents are skipped; the others still run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from drivers.shutter import SerialShutter
from xyoptics.core.files import write_json_atomic
from xyoptics.hil.devices import open_devices
from xyoptics.hil.layout import Calibration
from xyoptics.hil.rig import RigConfig, device_refs, rig_topology

from .dark import dark_truth_error, measure_dark
from .gray_phase import apply_gray_phase, gray_phase_truth_error, measure_gray_phase
from .plots import plot_result
from .session import CalibrationFailed, RigSession
from .spots import measure_path_offsets, measure_spot_map, path_offsets_truth_error, spot_map_truth_error
from .store import CalibrationRecord, CalibrationStore, Hardware
from .timing import measure_settle_time, settle_truth_error
from .transfer import measure_transfer, transfer_truth_error

SETTLE_MARGIN = 1.5  # wait this multiple of the measured settle time (see calibration.timing)


@dataclass(frozen=True)
class Procedure:
    measure: Callable
    depends_on: tuple[str, ...]
    truth_error: Callable


PROCEDURES = {
    "dark": Procedure(measure_dark, (), dark_truth_error),
    "settle": Procedure(measure_settle_time, (), settle_truth_error),
    "gray_phase": Procedure(measure_gray_phase, (), gray_phase_truth_error),
    "spot_map": Procedure(measure_spot_map, (), spot_map_truth_error),
    "path_offsets": Procedure(measure_path_offsets, ("spot_map", "gray_phase"), path_offsets_truth_error),
    "transfer": Procedure(measure_transfer, ("spot_map", "gray_phase", "path_offsets"), transfer_truth_error),
}


def apply_to_slm(slm, records: dict[str, CalibrationRecord]) -> None:
    """Load what the SLM itself should know (the gray -> phase lookup table), before anything is written."""
    if "gray_phase" in records:
        apply_gray_phase(slm, records["gray_phase"].arrays)


def calibration_from(records: dict[str, CalibrationRecord]) -> tuple[Calibration, float | None]:
    """The readout calibration and settle time (s, with margin) that a set of records gives."""
    spots = records.get("spot_map")
    offsets = records.get("path_offsets")
    settle = records.get("settle")
    transfer = records.get("transfer")
    dark = records.get("dark")

    def array(record, name):
        return None if record is None else record.arrays.get(name)

    cal = Calibration(spot_centres=array(spots, "centres"), spot_sigma=array(spots, "widths"),
                      path_offsets=array(offsets, "offsets"), efficiency_scale=array(transfer, "efficiency_scale"),
                      dark=array(dark, "dark"), pixel_noise=array(dark, "noise"),
                      spot_modulation=array(offsets, "modulation"), spot_residual=array(offsets, "residual"))
    return cal, None if settle is None else SETTLE_MARGIN * float(settle.arrays["settle_time_s"])


def run_calibration(rig: RigConfig, network, out_dir: str | Path, *, only: list[str] | None = None,
                    trusted=(), progress: bool = True) -> dict:
    """Calibrate ``rig`` (routing sized for ``network`` when the rig's topology is "network") into
    ``out_dir``; returns the report also written to ``out_dir/report.json``."""
    names = list(PROCEDURES) if not only else list(only)
    unknown = sorted(set(names) - set(PROCEDURES))
    if unknown:
        raise ValueError(f"unknown calibration procedures {unknown}; choose from {sorted(PROCEDURES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = CalibrationStore(out_dir)
    topology = rig_topology(rig, network)
    report = {"rig": rig.name, "results": {}}
    t_start = time.perf_counter()
    shutter = SerialShutter(rig.shutter) if rig.shutter else None
    with open_devices(rig.slm, rig.camera, trusted, device_refs(rig, topology)) as (slm, camera):
        hardware = Hardware.from_devices(rig.name, slm, camera, rig.wavelength_nm)
        done: dict[str, CalibrationRecord] = {}
        for name in tqdm(names, desc="calibrate", unit="procedure", disable=not progress):
            proc = PROCEDURES[name]
            entry = report["results"].setdefault(name, {})
            deps = {}
            for dep in proc.depends_on:
                deps[dep] = done.get(dep) or store.latest(dep, hardware)
            missing = [d for d, r in deps.items() if r is None]
            if missing:
                entry.update(status="skipped", reason=f"needs {missing}, which failed or was never measured")
                continue
            cal, settle = calibration_from({**done, **deps})
            apply_to_slm(slm, {**done, **deps})
            session = RigSession(slm, camera, topology, rig.layout, settle_time_s=settle, calibration=cal,
                                 shutter=shutter)
            t0 = time.perf_counter()
            try:
                arrays, quality = proc.measure(session)
            except CalibrationFailed as exc:
                entry.update(status="failed", reason=str(exc), seconds=round(time.perf_counter() - t0, 3))
                continue
            path = store.save(name, arrays, quality, hardware, depends_on=deps or None)
            done[name] = store.load(path, hardware)
            entry.update(status="ok", file=path.name, quality=quality, frames=session.frames_grabbed,
                         seconds=round(time.perf_counter() - t0, 3))
            engine = getattr(slm, "engine", None)
            if engine is not None:  # the simulated rig: compare with its hidden truth
                entry["truth_error"] = proc.truth_error(engine.truth, arrays)
            entry["plot"] = plot_result(name, arrays, session.layout, out_dir).name
    if shutter is not None:
        shutter.release()
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    report["ok"] = all(e.get("status") == "ok" for e in report["results"].values())
    write_json_atomic(out_dir / "report.json", _plain(report))
    return report


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
