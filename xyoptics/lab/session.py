"""A lab training session: everything checked first, then the rig opened, the EP loop run, the hardware parked.

``run_session`` is what ``xyoptics train`` does, in this order:

1. read and verify every file (``preflight``): config, run folder, checkpoint, rig config, calibration set,
   starting parameters, the site safety file; the task and network fit, the optical cost is the physical one,
   the disk holds the run. A refusal here leaves no trace: no device contacted, no file written;
2. lock the rig (``hil.riglock``: one session per SLM, camera, laser, shutter), open the SLM and camera and
   check the calibration against them; nothing is written to the SLM;
3. the instruments: laser to its power (within the site limit, read back), output on; shutter open;
4. the light-path self-test; only then the run folder's records, and training.

Whatever ends the run -- completion, SIGINT / SIGTERM, a device fault, an error -- the shutter is closed, the
laser output switched off and the SLM blanked, and ``summary.json`` records what the instruments reported.

While a monitor watches (``xyoptics monitor``), the trainer publishes live data into ``live/`` and takes the
monitor's stop requests there (``live``).

Run-folder records: ``session.json`` (machine, calibration folder, trusted modules, sha256 of ``config.yaml``
and ``rig.yaml`` in ``files``, ``init_from`` where the run started from another's parameters; one entry per
session in ``sessions``), ``rig.yaml`` (the validated rig config), ``calibration.json`` (files used: path,
sha256; kinds left out and why), ``rig_snapshot.json`` (per session: device classes, resolutions, bit depths,
exposure, instrument identities and read-back settings). ``--resume`` reuses all of them, unchanged.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from ..config import ConfigError, TrainConfig
from ..core.files import read_json, sha256_file, write_json_atomic, write_text_atomic
from ..core.network import XYNetwork
from ..hil.site import load_site
from .build import digital_machine, prepare
from .live import LivePublisher
from .preflight import HASHED, Plan, check_init_params, config_text, plan_new, plan_resume, rig_text
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


def _apply_calibration(machine, rig, chosen) -> None:
    """Check the verified calibration set against the connected SLM and camera (resolution, bit depth), then
    load it: the SLM's lookup table (no image written) and the readout's references."""
    from calibration.runner import apply_to_slm, calibration_from
    from calibration.store import CalibrationError, Hardware, check_compatible

    hardware = Hardware.from_devices(rig.name, machine.slm, machine.camera, rig.wavelength_nm)
    try:
        for record in chosen.records.values():
            check_compatible(record.path.name, record.hardware, hardware)
    except CalibrationError as exc:
        raise ConfigError(f"calibration: {exc}") from None
    apply_to_slm(machine.slm, chosen.records)
    machine.use_calibration(*calibration_from(chosen.records))
    used = ", ".join(sorted(r.path.name for r in chosen.records.values())) or "none"
    print(f"using calibrations: {used}", file=sys.stderr)
    for kind, why in chosen.left_out.items():
        print(f"calibration {kind} left out: {why}", file=sys.stderr)


def run_session(cfg: TrainConfig | None, out: str | Path, *, machine: str = "digital",
                calibration: str | Path | None = None, trust=(), progress: bool = True,
                resume: bool = False, on_step=None, init_from: str | Path | None = None,
                allow_partial_calibration: bool = False, site: str | Path | None = None) -> RunResult:
    """Train ``cfg`` on ``machine`` ("digital", "simulated" or a rig YAML path) into the run folder ``out``;
    with ``resume=True`` continue the run in ``out`` with its own config, rig and calibration files;
    ``init_from``: start from the parameters of that run's newest good checkpoint. ``site``: the site safety
    file (``hil.site``; default ``$XYOPTICS_SITE`` or the per-user one). ``on_step(state)`` is called after
    every completed EP step (live monitoring). Every file is read and verified before any device is opened."""
    out = Path(out)
    plan = plan_resume(out) if resume else plan_new(out, cfg, machine, calibration, trust, init_from=init_from,
                                                     allow_partial=allow_partial_calibration)
    cfg, session = plan.cfg, plan.session
    train_set, test_set, net = prepare(cfg)
    if plan.init_params is not None:
        plan.init_params = check_init_params(net, plan.init_params)
    optical = session["machine"] != "digital"
    log_angles = cfg.session.angles_logged(optical)
    check_disk_space(out, estimate_run_bytes(cfg, len(train_set), net, log_angles), cfg.session.min_free_disk_mb)
    if optical and cfg.ep.cost != "cosine":
        raise ConfigError("ep.cost: an optical machine nudges with an injected field, which realises "
                          "the cosine cost only; set ep.cost: cosine")
    site_limits = load_site(site) if optical else None
    laser = plan.rig.laser if optical else None
    if laser is not None and site_limits is not None and laser.power_mw > site_limits.laser_limit(laser.resource):
        raise ConfigError(f"the rig asks the laser {laser.resource} for {laser.power_mw} mW, above the site limit "
                          f"of {site_limits.laser_limit(laser.resource)} mW ({site_limits.path})")
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    session["sessions"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resume": resume})

    def fit(xy_machine, instruments=None) -> RunResult:
        live = LivePublisher(out, instrument_state=instruments.snapshot if instruments is not None else None)
        return Trainer(cfg, xy_machine, train_set, test_set, out, resume=plan.point or False, progress=progress,
                       before_step=instruments.check if instruments is not None else None, on_step=on_step,
                       init_params=plan.init_params, live=live).run()

    if not optical:
        _start_folder(out, plan)
        return fit(digital_machine(cfg, net))
    return _optical_session(out, plan, net, site_limits, fit)


def _start_folder(out: Path, plan: Plan) -> None:
    """Create the run folder once every check has passed: a new run writes its config, rig and calibration
    records and their hashes; every session is recorded in ``session.json``."""
    out.mkdir(parents=True, exist_ok=True)
    session = plan.session
    if plan.point is None:
        write_text_atomic(out / "config.yaml", config_text(plan.cfg))
        if plan.rig is not None:
            write_text_atomic(out / "rig.yaml", rig_text(plan.rig))
        session["files"] = {name: sha256_file(out / name) for name in HASHED if (out / name).exists()}
        if plan.calibration is not None:
            from calibration.store import CalibrationStore

            write_json_atomic(out / "calibration.json", {
                "files": CalibrationStore.references(plan.calibration.records.values()),
                "left_out": plan.calibration.left_out})
    write_json_atomic(out / "session.json", session)


def _optical_session(out: Path, plan: Plan, net, site_limits, fit) -> RunResult:
    """Lock the rig, open the SLM and camera (nothing written), match the calibration to them, then the
    instruments (laser on, shutter open), the self-test, the run folder, and training."""
    from drivers.instruments import open_instruments

    from ..hil.rig import open_optical_machine
    from ..hil.riglock import rig_lock

    rig = plan.rig
    with ExitStack() as stack:
        stack.enter_context(rig_lock(rig, f"train {out}"))
        machine = stack.enter_context(open_optical_machine(rig, net, plan.session["trust"]))
        if plan.calibration is not None:
            _apply_calibration(machine, rig, plan.calibration)
        instruments = stack.enter_context(open_instruments(rig.laser, rig.shutter, site=site_limits))
        _self_test(machine, instruments)
        _start_folder(out, plan)
        snapshots = read_json(out / "rig_snapshot.json") if (out / "rig_snapshot.json").exists() else []
        snapshots.append({"rig": rig.name, **_device_snapshot(machine), **instruments.snapshot()})
        write_json_atomic(out / "rig_snapshot.json", snapshots)
        try:
            result = fit(machine, instruments)
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
