"""Lab sessions: stop at a step boundary on signals, resume exactly, survive device faults, park the hardware."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from drivers.serial_handlers import protocol_xyshutter
from drivers.xyrig import find_engine
from xyoptics.config import ConfigError, TrainConfig
from xyoptics.core.files import read_arrays_h5, read_json
from xyoptics.lab.anglelog import read_angles
from xyoptics.lab.session import check_disk_space, run_session
from xyoptics.lab.trainer import TrainingFailed

ROOT = Path(__file__).resolve().parents[1]
RIG = "simulated-xy-rig"


def rig_config(**overrides) -> TrainConfig:
    """XOR through the simulated rig on a 2x3 lattice (6 spins, 7 bonds: small, so the simulated physics is
    quick): 3 epochs of 2 steps (batch 2)."""
    raw = yaml.safe_load((ROOT / "experiments" / "xor_lattice_skip_rig.yaml").read_text())
    raw.update(epochs=3, batch_size=2, eval_every=3, stop_at_accuracy=None,
               architecture={"kind": "square_lattice", "rows": 2, "cols": 3},
               session={"checkpoint_every": 2, "retry_wait_s": 0.0, "max_retries": 2})
    raw.update(overrides)
    return TrainConfig.model_validate(raw)


def digital_config(**overrides) -> TrainConfig:
    raw = yaml.safe_load((ROOT / "experiments" / "iris_lattice.yaml").read_text())
    raw.update(epochs=2, eval_every=1, batch_size=16, session={"checkpoint_every": 3})
    raw.update(overrides)
    return TrainConfig.model_validate(raw)


def steps_logged(run: Path) -> list[int]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r["kind"] == "step"]


def without_times(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "wall_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_params(a: Path, b: Path):
    pa, pb = read_arrays_h5(a / "params.h5"), read_arrays_h5(b / "params.h5")
    for name in ("w", "h", "psi"):
        np.testing.assert_array_equal(pa[name], pb[name])


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """Uninterrupted runs, one per (config, machine), computed once and shared by the tests that compare a
    stopped-and-resumed run with them (runs are deterministic, so sharing changes nothing they check)."""
    runs = {}

    def run(cfg: TrainConfig, machine: str = "digital"):
        key = (cfg.model_dump_json(), machine)
        if key not in runs:
            folder = tmp_path_factory.mktemp("full")
            runs[key] = folder, run_session(cfg, folder, machine=machine, progress=False)
        return runs[key]
    return run


def signal_at(step: int, signum=signal.SIGINT):
    def hook(state):
        if state.step == step:
            signal.raise_signal(signum)
    return hook


@pytest.mark.slow
@pytest.mark.xdist_group("reference")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_digital_stop_mid_epoch_and_resume_is_exact(tmp_path, signum, reference):
    cfg = digital_config()
    full_dir, full = reference(cfg)
    assert full.summary["status"] == "completed"
    stopped = run_session(cfg, tmp_path / "run", progress=False, on_step=signal_at(4, signum))
    assert stopped.summary["status"] == f"stopped ({signal.Signals(signum).name})"
    assert stopped.summary["steps_completed"] == 4 and "--resume" in stopped.summary["resume"]
    resumed = run_session(None, tmp_path / "run", progress=False, resume=True)
    assert resumed.summary["status"] == "completed"
    assert resumed.summary["steps_completed"] == full.summary["steps_completed"]
    assert_same_params(full_dir, tmp_path / "run")
    assert without_times(tmp_path / "run") == without_times(full_dir)  # nothing lost or repeated
    assert len(read_json(tmp_path / "run" / "session.json")["sessions"]) == 2
    with pytest.raises(ConfigError, match="already ended"):
        run_session(None, tmp_path / "run", progress=False, resume=True)


@pytest.mark.slow
@pytest.mark.xdist_group("reference")
def test_simulated_rig_stop_resume_is_exact_and_parks_hardware(tmp_path, reference):
    cfg = rig_config()
    full_dir, full = reference(cfg, "simulated")
    assert full.summary["status"] == "completed"
    assert full.summary["hardware_parked"] == {"shutter": "closed", "laser_output": "off", "slm": "blank"}
    stopped = run_session(cfg, tmp_path / "run", machine="simulated", progress=False, on_step=signal_at(3))
    assert stopped.summary["status"] == "stopped (SIGINT)" and stopped.summary["steps_completed"] == 3
    assert read_json(tmp_path / "run" / "summary.json")["hardware_parked"]["shutter"] == "closed"
    run_session(None, tmp_path / "run", progress=False, resume=True)
    assert_same_params(full_dir, tmp_path / "run")
    assert without_times(tmp_path / "run") == without_times(full_dir)
    # angles of every step, each once, on by default for an optical machine
    angles = read_angles(tmp_path / "run" / "angles")
    assert sorted(set(angles["step"])) == list(range(1, 7)) and len(angles["step"]) == 12
    np.testing.assert_array_equal(angles["free"], read_angles(full_dir / "angles")["free"])
    snapshots = read_json(tmp_path / "run" / "rig_snapshot.json")
    assert len(snapshots) == 2 and snapshots[0]["laser"]["identity"].startswith("XYOPTICS,SIMULATED-LASER")
    assert snapshots[0]["shutter"]["open"] and snapshots[0]["slm"]["bitdepth"] == 8


def test_camera_timeouts_are_retried_without_losing_or_repeating_steps(tmp_path):
    # slmsuite itself tries each grab capture_attempts = 5 times; 10 timeouts in a row fail two whole steps
    def stall(state):
        if state.step == 2:
            find_engine(RIG).fail_next_frames(10)
    with pytest.warns(RuntimeWarning, match="retrying"):
        result = run_session(rig_config(), tmp_path / "run", machine="simulated", progress=False, on_step=stall)
    assert result.summary["status"] == "completed" and result.summary["device_retries"] == 2
    assert steps_logged(tmp_path / "run") == list(range(1, 7))


def test_a_dead_camera_stops_safely_and_the_run_resumes(tmp_path):
    def die(state):
        if state.step == 3:
            find_engine(RIG).fail_next_frames(1000)  # far more than the 2 retries allow
    with pytest.warns(RuntimeWarning, match="retrying"), pytest.raises(TrainingFailed, match="camera"):
        run_session(rig_config(), tmp_path / "run", machine="simulated", progress=False, on_step=die)
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["status"] == "failed" and "after 2 retries" in summary["error"]
    assert summary["steps_completed"] == 3
    assert summary["hardware_parked"] == {"shutter": "closed", "laser_output": "off", "slm": "blank"}
    resumed = run_session(None, tmp_path / "run", progress=False, resume=True)
    assert resumed.summary["status"] == "completed"
    assert steps_logged(tmp_path / "run") == list(range(1, 7))


def test_unplugged_shutter_stops_safely_then_resumes_after_replug(tmp_path):
    def pull_cable(state):
        if state.step == 2:
            protocol_xyshutter.unplug(RIG)
    try:
        with pytest.warns(RuntimeWarning, match="retrying"), \
                pytest.raises(TrainingFailed, match="shutter not answering"):
            run_session(rig_config(), tmp_path / "run", machine="simulated", progress=False, on_step=pull_cable)
    finally:
        protocol_xyshutter.replug(RIG)
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["steps_completed"] == 2
    assert summary["hardware_parked"]["shutter"].startswith("error")  # reported, not hidden
    assert summary["hardware_parked"]["laser_output"] == "off"
    run_session(None, tmp_path / "run", progress=False, resume=True)
    assert steps_logged(tmp_path / "run") == list(range(1, 7))


def test_laser_session_lost_is_reconnected(tmp_path, caplog):
    import pyvisa

    from drivers.laser import SIMULATED

    def drop_visa_sessions(state):
        if state.step == 2:
            for resource in pyvisa.ResourceManager(SIMULATED).list_opened_resources():
                resource.close()
    result = run_session(rig_config(), tmp_path / "run", machine="simulated", progress=False,
                         on_step=drop_visa_sessions)
    assert result.summary["status"] == "completed"
    assert "laser not answering" in caplog.text and "reconnecting" in caplog.text
    assert result.summary["hardware_parked"]["laser_output"] == "off"


KILL_WHILE_CHECKPOINTING = """
import os, signal, sys, h5py
from xyoptics.config import load_config
from xyoptics.lab.session import run_session
original = h5py.Group.create_dataset
count = {"checkpoints": 0}
def create_dataset(self, name, *args, **kwargs):
    out = original(self, name, *args, **kwargs)
    if "/.step-" in self.file.filename and self.name == "/params" and name == "h":
        count["checkpoints"] += 1
        if count["checkpoints"] == 3:  # half-way through the third checkpoint file
            os.kill(os.getpid(), signal.SIGKILL)
    return out
h5py.Group.create_dataset = create_dataset
run_session(load_config(sys.argv[1]), sys.argv[2], progress=False)
"""


@pytest.mark.slow
@pytest.mark.xdist_group("reference")
def test_run_killed_while_writing_a_checkpoint_still_resumes(tmp_path, reference):
    cfg = digital_config(session={"checkpoint_every": 2})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", KILL_WHILE_CHECKPOINTING, str(path), str(run)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert list(run.glob("checkpoints/.step-*.tmp"))  # the half-written file it left behind
    run_session(None, run, progress=False, resume=True)
    assert not list(run.glob(".*.tmp"))
    full_dir = reference(digital_config())[0]  # checkpointing every 3 steps instead of 2 changes no result
    assert_same_params(full_dir, run)
    assert without_times(run) == without_times(full_dir)


@pytest.mark.slow
@pytest.mark.xdist_group("reference")
def test_cli_sigterm_then_resume(tmp_path, reference):
    cfg = rig_config()
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "xyoptics.cli", "train", str(path), "--machine", "simulated",
                             "--out", str(run), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and len(steps_logged(run)) >= 2:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGTERM: stopping after the current step" in err and "--resume" in err
    summary = read_json(run / "summary.json")
    assert summary["status"] == "stopped (SIGTERM)" and summary["steps_completed"] < 6
    assert summary["hardware_parked"] == {"shutter": "closed", "laser_output": "off", "slm": "blank"}
    from xyoptics.cli import main
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert steps_logged(run) == list(range(1, 7))
    assert_same_params(reference(cfg, "simulated")[0], run)


def test_guards_before_any_hardware(tmp_path):
    with pytest.raises(ConfigError, match="not enough disk space"):
        check_disk_space(tmp_path / "new" / "run", needed_bytes=10**18, reserve_mb=100)
    check_disk_space(tmp_path / "new" / "run", needed_bytes=1000, reserve_mb=0)
    with pytest.raises(ConfigError, match="cosine cost only"):
        run_session(rig_config(ep={"beta": 0.5, "cost": "log_cosine"}), tmp_path / "x", machine="simulated")
    with pytest.raises(ConfigError, match="no session.json"):
        run_session(None, tmp_path, resume=True)
    assert not (tmp_path / "x").exists()


def test_a_nan_stops_the_run_safely_with_a_checkpoint(tmp_path):
    from xyoptics.core.digital import DigitalXYMachine
    from xyoptics.data.datasets import Dataset
    from xyoptics.lab.build import prepare
    from xyoptics.lab.checkpoint import load_checkpoint
    from xyoptics.lab.trainer import Trainer

    cfg = digital_config(epochs=1, batch_size=15)
    train_set, test_set, net = prepare(cfg)
    x = train_set.x.copy()
    x[40] = np.nan  # one corrupted sample in the third mini-batch of the shuffled epoch or later
    bad = Dataset(train_set.name, x, train_set.labels, train_set.n_classes, train_set.n_outputs)
    trainer = Trainer(cfg, DigitalXYMachine(net), bad, test_set, tmp_path, progress=False)
    with pytest.raises(TrainingFailed, match="not finite|non-finite|NaN"):
        trainer.run()
    summary = read_json(tmp_path / "summary.json")
    assert summary["status"] == "failed" and summary["steps_completed"] == load_checkpoint(tmp_path).step
    assert steps_logged(tmp_path) == list(range(1, summary["steps_completed"] + 1))
    assert np.all(np.isfinite(read_arrays_h5(tmp_path / "params.h5")["w"]))
