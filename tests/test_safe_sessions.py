"""Safe, tamper-evident sessions: verified checkpoints with fallback, resume refuses changed files and ended
runs without touching the folder, --init-from, and every file of a run folder corrupted in turn is either
harmless or refused -- never silently used."""

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml

from xyoptics.config import ConfigError, TrainConfig
from xyoptics.core.files import read_arrays_h5, read_json
from xyoptics.lab.checkpoint import CheckpointError, checkpoint_files, load_checkpoint
from xyoptics.lab.session import run_session

ROOT = Path(__file__).resolve().parents[1]


def signal_at(step: int, signum=signal.SIGINT):
    def hook(state):
        if state.step == step:
            signal.raise_signal(signum)
    return hook


def config(**overrides) -> TrainConfig:
    """Iris on a small lattice on the digital machine: 2 epochs of 8 steps, a checkpoint every 2 steps."""
    raw = yaml.safe_load((ROOT / "experiments" / "iris_lattice.yaml").read_text())
    raw.update(epochs=2, eval_every=1, batch_size=15, session={"checkpoint_every": 2, "log_angles": True})
    raw.update(overrides)
    return TrainConfig.model_validate(raw)


def snapshot(folder):
    """Every file of a folder: bytes and modification time."""
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def params(folder):
    return read_arrays_h5(folder / "params.h5")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run and the same run stopped by SIGINT after step 7 (checkpoints up to step 6, with
    the stop's own checkpoint at 7)."""
    root = tmp_path_factory.mktemp("runs")
    run_session(config(), root / "full", progress=False)
    stopped = root / "stopped"
    result = run_session(config(), stopped, progress=False, on_step=signal_at(7, signal.SIGINT))
    assert result.summary["status"] == "stopped (SIGINT)"
    return root / "full", stopped


def copy(run, tmp_path):
    dest = tmp_path / run.name
    shutil.copytree(run, dest)
    return dest


def assert_same_run(a, b):
    for name in ("w", "h", "psi"):
        np.testing.assert_array_equal(params(a)[name], params(b)[name])
    strip = [{k: v for k, v in json.loads(line).items() if k != "wall_s"}
             for line in (a / "metrics.jsonl").read_text().splitlines()]
    assert strip == [{k: v for k, v in json.loads(line).items() if k != "wall_s"}
                     for line in (b / "metrics.jsonl").read_text().splitlines()]


def flip(path, rng, n=3):
    data = bytearray(path.read_bytes())
    for i in rng.choice(len(data), size=min(n, len(data)), replace=False):
        data[i] ^= 1 << int(rng.integers(8))
    path.write_bytes(bytes(data))


def test_the_newest_checkpoints_are_kept_and_verified(runs):
    _, stopped = runs
    assert [step for step, _ in checkpoint_files(stopped)] == [7, 6, 4]  # keep_checkpoints = 3
    assert load_checkpoint(stopped).step == 7


def test_a_corrupt_latest_checkpoint_falls_back_and_the_run_ends_as_if_uninterrupted(runs, tmp_path):
    full, stopped = runs
    run = copy(stopped, tmp_path)
    path = run / "checkpoints" / "step-0000007.h5"
    data = bytearray(path.read_bytes())
    at = data.find(load_checkpoint(stopped).params.w.tobytes())
    data[at + 3] ^= 0x10  # two flipped bytes inside the stored couplings
    data[at + 13] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match=r"step-0000007.h5: .*resuming from step-0000006.h5 at step 6"):
        run_session(None, run, progress=False, resume=True)
    assert_same_run(full, run)  # step 7 measured again, logged once
    assert (run / "checkpoints" / "unusable" / "step-0000007.h5").exists()


def test_no_good_checkpoint_refuses_the_run_and_touches_nothing(runs, tmp_path):
    run = copy(runs[1], tmp_path)
    for _, path in checkpoint_files(run):
        path.write_bytes(path.read_bytes()[:1000])  # truncated
    before = snapshot(run)
    with pytest.raises(CheckpointError, match="no usable checkpoint .*step-0000004.h5: unreadable"):
        run_session(None, run, progress=False, resume=True)
    assert snapshot(run) == before


@pytest.mark.parametrize("name", ["config.yaml", "metrics.jsonl"])
def test_resume_refuses_an_edited_file_naming_it(runs, tmp_path, name):
    run = copy(runs[1], tmp_path)
    path = run / name
    path.write_text(path.read_text().replace("0.", "1.", 1))
    before = snapshot(run)
    with pytest.raises(ConfigError, match=rf"{name}.* changed"):
        run_session(None, run, progress=False, resume=True)
    assert snapshot(run) == before


def test_resuming_a_finished_run_changes_nothing(runs, tmp_path):
    run = copy(runs[0], tmp_path)
    before = snapshot(run)
    with pytest.raises(ConfigError, match="already ended"):
        run_session(None, run, progress=False, resume=True)
    assert snapshot(run) == before


def test_init_from_starts_a_new_run_from_another_runs_parameters(runs, tmp_path):
    full, _ = runs
    result = run_session(config(epochs=1), tmp_path / "next", progress=False, init_from=full)
    session = read_json(tmp_path / "next" / "session.json")
    assert session["init_from"]["run"] == str(full) and session["init_from"]["step"] == 14
    first = [json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["cost"]
             for run in (tmp_path / "next", full)]
    assert result.summary["status"] == "completed" and first[0] < first[1]  # starts trained, not at random
    with pytest.raises(ConfigError, match="shape"):
        run_session(config(architecture={"kind": "square_lattice", "rows": 4, "cols": 4}), tmp_path / "bad",
                    progress=False, init_from=full)


@pytest.mark.slow
def test_every_file_of_a_run_corrupted_is_harmless_or_refused(runs, tmp_path):
    """Flip bytes in each file of a stopped run folder in turn, then resume: the run either is refused with a
    clear error, or ends exactly as the uninterrupted run (a corrupt file it does not need, or one it falls back
    from). Never a run that silently used the corrupted bytes."""
    full, stopped = runs
    rng = np.random.default_rng(1)
    outcomes = {}
    for rel in sorted(p.relative_to(stopped) for p in stopped.rglob("*") if p.is_file()):
        run = tmp_path / str(rel).replace("/", "_")
        shutil.copytree(stopped, run)
        flip(run / rel, rng)
        try:
            run_session(None, run, progress=False, resume=True)
        except ConfigError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 600, exc
            outcomes[str(rel)] = "refused"
            continue
        except Exception as exc:  # anything else is a crash, not a refusal
            pytest.fail(f"{rel}: {type(exc).__name__}: {exc}")
        assert_same_run(full, run)
        outcomes[str(rel)] = "harmless"
    print(outcomes)
    for must_refuse in ("config.yaml", "metrics.jsonl"):
        assert outcomes[must_refuse] == "refused", must_refuse
