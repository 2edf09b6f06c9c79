"""Nothing moves until everything is checked, through the simulated rig: an edited rig.yaml, an unusable
checkpoint, a power above the site limit, a partial calibration and a rig held by another process are all
refused before the laser is switched, the shutter opened or the SLM written -- and leave the run folder as it
was."""

import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from drivers.instruments import LabInstruments
from xyoptics.cli import main
from xyoptics.config import ConfigError, TrainConfig
from xyoptics.core.files import read_json
from xyoptics.hil.riglock import RigBusy
from xyoptics.lab.checkpoint import CheckpointError, checkpoint_files
from xyoptics.lab.session import run_session

ROOT = Path(__file__).resolve().parents[1]


def rig_config() -> TrainConfig:
    """XOR through the simulated rig on a 2x3 lattice, 2 epochs of 2 steps."""
    raw = yaml.safe_load((ROOT / "experiments" / "xor_lattice_skip_rig.yaml").read_text())
    raw.update(epochs=2, batch_size=2, eval_every=2, stop_at_accuracy=None,
               architecture={"kind": "square_lattice", "rows": 2, "cols": 3},
               session={"checkpoint_every": 1, "retry_wait_s": 0.0})
    return TrainConfig.model_validate(raw)


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """An optical run stopped by SIGINT after its second step."""
    run = tmp_path_factory.mktemp("rig") / "run"

    def stop(state):
        if state.step == 2:
            signal.raise_signal(signal.SIGINT)
    assert run_session(rig_config(), run, machine="simulated", progress=False,
                       on_step=stop).summary["status"] == "stopped (SIGINT)"
    return run


@pytest.fixture
def no_light(monkeypatch):
    """Fails the test if the laser or shutter would be opened."""
    def opened(self):
        raise AssertionError("the instruments were opened")
    monkeypatch.setattr(LabInstruments, "open", opened)


def copy(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_an_edited_rig_file_is_refused_before_the_laser(stopped, tmp_path, no_light):
    run = copy(stopped, tmp_path)
    rig = yaml.safe_load((run / "rig.yaml").read_text())
    rig["laser"].update(power_mw=900.0, max_power_mw=1000.0)
    (run / "rig.yaml").write_text(yaml.safe_dump(rig))
    before = snapshot(run)
    with pytest.raises(ConfigError, match="rig.yaml changed since the run started.*--init-from"):
        run_session(None, run, progress=False, resume=True)
    assert snapshot(run) == before


def test_an_unusable_checkpoint_is_refused_before_the_laser(stopped, tmp_path, no_light):
    run = copy(stopped, tmp_path)
    for _, path in checkpoint_files(run):
        path.write_bytes(b"\0" * 64)
    before = snapshot(run)
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        run_session(None, run, progress=False, resume=True)
    assert snapshot(run) == before


def test_a_power_above_the_site_limit_is_refused_before_the_laser(stopped, tmp_path, monkeypatch, no_light):
    site = tmp_path / "site.yaml"
    site.write_text("laser_max_power_mw: 20\n")  # the rig runs its laser at 50 mW
    monkeypatch.setenv("XYOPTICS_SITE", str(site))
    with pytest.raises(ConfigError, match=r"50.0 mW, above the site limit of 20.0 mW"):
        run_session(rig_config(), tmp_path / "new", machine="simulated", progress=False)
    run = copy(stopped, tmp_path)
    before = snapshot(run)
    with pytest.raises(ConfigError, match="site limit"):  # the limit holds for a resumed run too
        run_session(None, run, progress=False, resume=True)
    assert snapshot(run) == before and not (tmp_path / "new").exists()


HOLD = textwrap.dedent("""
    import sys, time
    from xyoptics.hil.rig import simulated_rig
    from xyoptics.hil.riglock import rig_lock
    with rig_lock(simulated_rig(), "holding it for a test"):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_a_rig_held_by_another_process_is_refused_naming_it(stopped, tmp_path, capsys, no_light):
    holder = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        run = copy(stopped, tmp_path)
        before = snapshot(run)
        with pytest.raises(RigBusy, match=rf"pid {holder.pid} .*holding it for a test"):
            run_session(None, run, progress=False, resume=True)
        assert snapshot(run) == before
        assert main(["rig", "check", "simulated"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: rig 'simulated-xy-rig' is busy") and \
            f"pid {holder.pid}" in err
    finally:
        holder.send_signal(signal.SIGINT)  # leaves its with-block: the lock is released, not left stale
        holder.wait(timeout=30)


def test_the_stopped_run_still_resumes_and_records_its_sessions(stopped, tmp_path):
    run = copy(stopped, tmp_path)
    t0 = time.monotonic()
    result = run_session(None, run, progress=False, resume=True)
    assert result.summary["status"] == "completed" and time.monotonic() - t0 < 120
    session = read_json(run / "session.json")
    assert [s["resume"] for s in session["sessions"]] == [False, True]
    assert set(session["files"]) == {"config.yaml", "rig.yaml"}
