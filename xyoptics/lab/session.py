"""A lab training session: checks first, then the rig opened, the EP loop run, and the hardware parked.

``run_session`` is what ``xyoptics train`` does. Before any device is contacted it validates the config, checks
that the task and network fit, that the optical machine's cost is the physical one, and that the disk holds the
run; then it opens the instruments (laser to its power, output on; shutter open) and the SLM and camera, loads
calibrations checked against the connected hardware, writes the run folder's records, and trains. Whatever
ends the run -- completion, SIGINT / SIGTERM, a device fault, an error -- the shutter is closed, the laser output
switched off and the SLM blanked, and ``summary.json`` records what the instruments reported afterwards.

Run-folder records written here: ``session.json`` (machine, calibration folder, trusted modules; one entry per
session in ``sessions``), ``rig.yaml`` (the validated rig config), ``calibration.json`` (files used: path,
sha256), ``rig_snapshot.json`` (per session: device classes, resolutions, bit depths, exposure, instrument
identities and read-back settings). ``--resume`` reuses all of them: same rig config, same calibration files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

from ..config import ConfigError, TrainConfig, load_config
from ..core.files import read_json, write_json_atomic, write_text_atomic
from ..core.network import XYNetwork
from .build import digital_machine, prepare
from .trainer import RunResult, Trainer

ANGLE_BYTES = 4  # float32 per logged angle


def estimate_run_bytes(cfg: TrainConfig, n_train: int, net: XYNetwork, log_angles: bool) -> int:
    """Upper estimate of a run folder's size: the angle log (every sample of every step, free and nudged, in
    float32, plus per-sample indices and flags) and a few copies of the parameters."""
    n_nudged = 2 if cfg.ep.variant == "symmetric" else 1
    per_sample = net.n_spins * ANGLE_BYTES * (1 + n_nudged) + 32
    angles = cfg.epochs * n_train * cfg.ep.m_init * per_sample if log_angles else 0
    return int(angles + 8 * 8 * net.n_parameters + 10_000_000)


def check_disk_space(folder: Path, needed_bytes: int, reserve_mb: float) -> None:
    """ConfigError unless the file system of ``folder`` has ``needed_bytes`` plus ``reserve_mb`` free."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes + reserve_mb * 1e6:
        raise ConfigError(f"not enough disk space for the run in {folder}: it may need {needed_bytes / 1e6:.0f} MB "
                          f"plus a reserve of {reserve_mb:.0f} MB (session.min_free_disk_mb), and "
                          f"{free / 1e6:.0f} MB are free")


def _device_snapshot(machine) -> dict:
    out = {}
    for role, dev in (("slm", machine.slm), ("camera", machine.camera)):
        out[role] = {"class": f"{type(dev).__module__}.{type(dev).__qualname__}", "name": dev.name,
                     "resolution": list(dev.shape[::-1]), "bitdepth": int(dev.bitdepth)}
    out["camera"]["exposure_s"] = float(machine.camera.get_exposure())
    out["settle_time_s"] = machine.settle_time_s
    return out


def _calibration(machine, rig, folder, recorded: list[dict] | None) -> list[dict] | None:
    """Apply calibrations for the connected hardware: the latest valid set in ``folder`` for a new run, or
    exactly the ``recorded`` files (checked by sha256) when resuming. Returns the references to record."""
    from calibration.runner import PROCEDURES, apply_to_slm, calibration_from
    from calibration.store import CalibrationError, CalibrationStore, Hardware

    hardware = Hardware.from_devices(rig.name, machine.slm, machine.camera, rig.wavelength_nm)
    try:
        if recorded is not None:
            for ref in recorded:
                digest = hashlib.sha256(Path(ref["path"]).read_bytes()).hexdigest()
                if digest != ref["sha256"]:
                    raise ConfigError(f"calibration file {ref['path']} changed since the run started")
            records = {ref["kind"]: CalibrationStore(Path(ref["path"]).parent).load(ref["path"], hardware)
                       for ref in recorded}
        else:
            store = CalibrationStore(folder)
            records = store.latest_set(list(PROCEDURES), hardware)
            if not records:
                raise ConfigError(f"calibration folder {folder}: no calibration there matches this rig's hardware")
    except (CalibrationError, OSError) as exc:
        raise ConfigError(f"calibration: {exc}") from None
    apply_to_slm(machine.slm, records)
    machine.use_calibration(*calibration_from(records))
    print(f"using calibrations: {', '.join(sorted(r.path.name for r in records.values()))}", file=sys.stderr)
    return CalibrationStore.references(records.values())


def run_session(cfg: TrainConfig | None, out: str | Path, *, machine: str = "digital",
                calibration: str | Path | None = None, trust=(), progress: bool = True,
                resume: bool = False, on_step=None) -> RunResult:
    """Train ``cfg`` on ``machine`` ("digital", "simulated" or a rig YAML path) into the run folder ``out``;
    with ``resume=True`` continue the run in ``out`` with its own config, rig and calibration files.
    ``on_step(state)`` is called after every completed EP step (live monitoring)."""
    out = Path(out)
    if resume:
        for name in ("session.json", "checkpoint.h5"):
            if not (out / name).exists():
                raise ConfigError(f"{out} holds no {name}: not a run folder that can be resumed")
        session = read_json(out / "session.json")
        cfg = load_config(out / "config.yaml")
        machine, trust, calibration = session["machine"], session["trust"], session["calibration"]
    else:
        if (out / "checkpoint.h5").exists():
            raise ConfigError(f"{out} already holds a run; resume it with --resume or choose another --out")
        session = {"machine": machine, "calibration": str(calibration) if calibration else None,
                   "trust": list(trust), "sessions": []}
    train_set, test_set, net = prepare(cfg)
    optical = machine != "digital"
    log_angles = cfg.session.angles_logged(optical)
    check_disk_space(out, estimate_run_bytes(cfg, len(train_set), net, log_angles), cfg.session.min_free_disk_mb)
    rig = None
    if optical:
        from ..hil.rig import load_rig, simulated_rig

        if cfg.ep.cost != "cosine":
            raise ConfigError("ep.cost: an optical machine nudges with an injected field, which realises "
                              "the cosine cost only; set ep.cost: cosine")
        rig = load_rig(out / "rig.yaml") if resume else (simulated_rig() if machine == "simulated"
                                                          else load_rig(machine))
    session["sessions"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resume": resume})

    def fit(xy_machine, before_step=None) -> RunResult:
        return Trainer(cfg, xy_machine, train_set, test_set, out, resume=resume, progress=progress,
                       before_step=before_step, on_step=on_step).run()

    if not optical:
        _start_folder(out, session)
        return fit(digital_machine(cfg, net))
    return _optical_session(out, rig, net, session, trust, resume, fit)


def _start_folder(out: Path, session: dict) -> None:
    """Create the run folder once every check has passed, with this session recorded."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "session.json", session)


def _optical_session(out: Path, rig, net, session: dict, trust, resume: bool, fit) -> RunResult:
    from drivers.instruments import open_instruments

    from ..hil.rig import open_optical_machine

    with ExitStack() as stack:
        instruments = stack.enter_context(open_instruments(rig.laser, rig.shutter))
        machine = stack.enter_context(open_optical_machine(rig, net, trust))
        folder = session["calibration"] or rig.calibration_dir
        recorded = read_json(out / "calibration.json") if resume and (out / "calibration.json").exists() else None
        references = _calibration(machine, rig, folder, recorded) if (folder or recorded) else None
        _self_test(machine, instruments)
        _start_folder(out, session)
        if not resume:
            write_text_atomic(out / "rig.yaml", yaml.safe_dump(rig.model_dump(mode="json", by_alias=True),
                                                               sort_keys=False))
            if references is not None:
                write_json_atomic(out / "calibration.json", references)
        snapshots = read_json(out / "rig_snapshot.json") if resume and (out / "rig_snapshot.json").exists() else []
        snapshots.append({"rig": rig.name, **_device_snapshot(machine), **instruments.snapshot()})
        write_json_atomic(out / "rig_snapshot.json", snapshots)
        try:
            result = fit(machine, before_step=instruments.check)
        except BaseException:
            _park(instruments, machine, out)
            raise
        return RunResult({**result.summary, "hardware_parked": _park(instruments, machine, out)}, result.params)


def _self_test(machine, instruments) -> None:
    """The light-path self-test (``hil.selftest``) before any step, with the calibration applied; a failed
    stage refuses the session before its run folder exists."""
    from ..hil.selftest import SelfTestFailed, light_path_check

    try:
        light_path_check(machine, instruments.shutter)
    except SelfTestFailed as exc:
        raise ConfigError(f"{exc}; nothing was trained (check with: xyoptics rig check RIG.yaml)") from None


def _park(instruments, machine, out: Path) -> dict:
    """Light off first (shutter, laser), then the SLM blank; the read-back goes into summary.json."""
    parked = {**instruments.park(), "slm": _park_slm(machine)}
    summary_path = out / "summary.json"
    if summary_path.exists():
        write_json_atomic(summary_path, {**read_json(summary_path), "hardware_parked": parked})
    print(f"hardware parked: {json.dumps(parked)}", file=sys.stderr)
    return parked


def _park_slm(machine) -> str:
    try:
        machine.park()
        return "blank"
    except Exception as exc:  # report it; the instruments are already safe
        return f"error: {exc}"
