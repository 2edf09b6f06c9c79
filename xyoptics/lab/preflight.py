"""Everything a lab session reads, verified before anything moves: the run folder, config, rig, checkpoint,
calibration files and starting parameters. Nothing here opens a device or writes a file.

A new run refuses a folder that already holds a run. A resumed run refuses a folder whose ``config.yaml`` or
``rig.yaml`` no longer hash to what ``session.json`` recorded at the start (name the file; continue with other
settings through ``--init-from``), a run that has ended, and a run with no good checkpoint; it reuses exactly
the calibration files it recorded, each checked by sha256, and the metrics and angle logs up to its checkpoint
as the checkpoint recorded them (sha256). ``--init-from RUN_DIR`` starts a new run from the
parameters of another run's newest good checkpoint, recorded with that file's sha256.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..config import ConfigError, TrainConfig, load_config
from ..core.files import prefix_sha256, read_json, sha256_file
from ..core.network import Params
from .checkpoint import ResumePoint, has_checkpoint, resume_point

HASHED = ("config.yaml", "rig.yaml")


def config_text(cfg: TrainConfig) -> str:
    """The run folder's ``config.yaml``: the validated config, every default written out."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def rig_text(rig) -> str:
    return yaml.safe_dump(rig.model_dump(mode="json", by_alias=True), sort_keys=False)


@dataclass
class Plan:
    """What a session will do, every file already read and verified."""

    cfg: TrainConfig
    session: dict
    rig: object | None = None
    point: ResumePoint | None = None
    init_params: Params | None = None
    calibration: object | None = None  # calibration.selection.CalibrationSet
    notes: list[str] = field(default_factory=list)


def _read_session(out: Path) -> dict:
    try:
        session = read_json(out / "session.json")
    except FileNotFoundError:
        raise ConfigError(f"{out} holds no session.json: not a run folder that can be resumed") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{out}/session.json is corrupt ({exc}): the run cannot be resumed") from None
    if not isinstance(session, dict) or not {"machine", "sessions"} <= set(session):
        raise ConfigError(f"{out}/session.json is not a session record: the run cannot be resumed")
    return session


def _check_hashes(out: Path, session: dict) -> None:
    recorded = session.get("files")
    if recorded is None:
        warnings.warn(f"{out}: started by an older xyoptics without file hashes; config.yaml and rig.yaml "
                      f"cannot be checked for changes", RuntimeWarning, stacklevel=3)
        return
    for name, digest in recorded.items():
        path = out / name
        if not path.exists():
            raise ConfigError(f"{path} is missing: the run cannot be resumed")
        if sha256_file(path) != digest:
            raise ConfigError(f"{path} changed since the run started; a run resumes only with the files it "
                              f"started with. To go on with other settings start a new run from its parameters: "
                              f"xyoptics train NEW.yaml --init-from {out}")


def plan_resume(out: Path) -> Plan:
    """Verify a run folder for ``--resume``: session record, file hashes, config, checkpoint, rig and the
    recorded calibration files."""
    session = _read_session(out)
    _check_hashes(out, session)
    cfg = load_config(out / "config.yaml")
    point = resume_point(out)
    if point.state.counters.get("finished"):
        raise ConfigError(f"{out}: the run already ended ({point.state.counters['finished']}); nothing to "
                          f"resume (nothing was changed)")
    _check_logs(out, point.state)
    plan = Plan(cfg, session, point=point, notes=[m for m in [point.message()] if m])
    if session["machine"] != "digital":
        from ..hil.rig import load_rig

        plan.rig = load_rig(out / "rig.yaml")
        plan.calibration = recorded_calibration(out)
    return plan


def _check_logs(out: Path, state) -> None:
    """The lines of ``metrics.jsonl`` and the angle-log chunks the checkpoint covers are as it recorded them."""
    if state.metrics_sha256 is not None and prefix_sha256(out / "metrics.jsonl", state.metrics_lines) \
            != state.metrics_sha256:
        raise ConfigError(f"{out}/metrics.jsonl: its first {state.metrics_lines} lines (up to step {state.step}) "
                          f"are missing or changed since the checkpoint (corrupt or edited); the run cannot be "
                          f"resumed without losing them")
    for name, digest in state.angle_chunks.items():
        chunk = out / "angles" / name
        if not chunk.exists() or sha256_file(chunk) != digest:
            raise ConfigError(f"{chunk} is missing or changed since the checkpoint (corrupt or edited); the run "
                              f"cannot be resumed without losing those angles")


def recorded_calibration(out: Path):
    """The calibration set a run recorded in ``calibration.json``, every file checked by sha256 (None: the
    run is uncalibrated)."""
    from calibration.selection import CalibrationSet
    from calibration.store import CalibrationError, CalibrationStore

    path = out / "calibration.json"
    if not path.exists():
        return None
    try:
        recorded = read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is corrupt ({exc}): the run cannot be resumed") from None
    refs, left_out = (recorded, {}) if isinstance(recorded, list) else (recorded["files"], recorded["left_out"])
    records = {}
    for ref in refs:
        file = Path(ref["path"])
        if not file.exists():
            raise ConfigError(f"calibration file {file} ({ref['kind']}) the run used is missing")
        if sha256_file(file) != ref["sha256"]:
            raise ConfigError(f"calibration file {file} ({ref['kind']}) changed since the run started")
        try:
            records[ref["kind"]] = CalibrationStore(file.parent).load(file)
        except CalibrationError as exc:
            raise ConfigError(f"calibration: {exc}") from None
    return CalibrationSet(records, left_out)


def plan_new(out: Path, cfg: TrainConfig, machine: str, calibration, trust, *, init_from=None,
             allow_partial: bool = False) -> Plan:
    """Verify a new run: an empty run folder, the rig, the calibration set and the starting parameters."""
    if has_checkpoint(out) or (out / "session.json").exists():
        raise ConfigError(f"{out} already holds a run; resume it with --resume or choose another --out")
    session = {"machine": machine, "calibration": str(calibration) if calibration else None,
               "trust": list(trust), "sessions": []}
    plan = Plan(cfg, session)
    if init_from is not None:
        source = resume_point(Path(init_from))
        plan.init_params = source.state.params
        session["init_from"] = {"run": str(init_from), "checkpoint": source.path.name,
                                "step": source.state.step, "sha256": sha256_file(source.path)}
        plan.notes += [m for m in [source.message()] if m]
    if machine != "digital":
        from calibration.runner import PROCEDURES
        from calibration.selection import choose_set

        from ..hil.rig import load_rig, simulated_rig

        plan.rig = simulated_rig() if machine == "simulated" else load_rig(machine)
        folder = calibration or plan.rig.calibration_dir
        if folder:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                plan.calibration = choose_set(folder, plan.rig.name,
                                              {k: p.depends_on for k, p in PROCEDURES.items()},
                                              allow_partial=allow_partial,
                                              rerun_hint=f"xyoptics calibrate {machine} --out {{folder}} "
                                                         f"--only {{kinds}}")
            plan.notes += [str(w.message) for w in caught]
            session["calibration"] = str(folder)
    return plan


def check_init_params(net, given: Params) -> Params:
    """``given`` as ``net``'s starting parameters, refused unless every array has the network's shape."""
    need = {"w": (net.n_coupling_params,), "h": (net.n_spins,), "psi": (net.n_spins,)}
    for name, shape in need.items():
        have = np.shape(given.as_dict()[name])
        if have != shape:
            raise ConfigError(f"--init-from: parameters {name!r} have shape {have}, but {net.name} needs {shape}")
    return Params(**{k: np.array(v, dtype=float) for k, v in given.as_dict().items()})
