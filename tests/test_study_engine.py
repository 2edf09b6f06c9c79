"""Study engines and run records (xyoptics.studies.engine, .records): the same per-seed records on the local pool
and on Ray, records streamed to OUT/runs/ and resumed, failed and stopped runs recorded as such and left out of
the summaries, and a folder of another config refused."""

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from xyoptics.config import ConfigError, load_yaml_model
from xyoptics.studies import engine, folderlock, records, xor_success

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "studies" / "xor_success.yaml"


def smoke(**changes) -> xor_success.Config:
    """The xor_success smoke config, cut to its first two architectures (4 runs) unless ``changes`` say more."""
    d = load_yaml_model(CONFIG, xor_success.Config).smoke().model_dump(mode="json")
    d["architectures"] = d["architectures"][:2]
    return xor_success.Config.model_validate({**d, **changes})


def config_file(tmp_path: Path, cfg: xor_success.Config) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return str(path)


def without_wall_times(runs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in runs]


def stored(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))}


@pytest.fixture
def calls(monkeypatch):
    """Count the runs xor_success trains in this process; ``calls.fail[key] = exception`` makes run ``key``
    raise it instead."""
    original = xor_success._one_seed
    seen, fail = [], {}

    @functools.wraps(original)  # same module and name, so the engine imports this wrapper
    def counting(task):
        key = f"arch{task[1]}_seed{task[0].seed}"
        seen.append(key)
        if key in fail:
            raise fail[key]
        return original(task)

    monkeypatch.setattr(xor_success, "_one_seed", counting)
    counting.seen, counting.fail = seen, fail
    return counting


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reduced study run once in this process, start to end."""
    out = tmp_path_factory.mktemp("uninterrupted")
    return xor_success.run(smoke(), out, progress=False)


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_local_pool_and_ray_give_identical_records(tmp_path, capsys):
    pytest.importorskip("ray")
    cfg = load_yaml_model(CONFIG, xor_success.Config).smoke()
    local = xor_success.run(cfg, tmp_path / "local", progress=False)
    assert xor_success.main([str(CONFIG), "--out", str(tmp_path / "ray"), "--smoke", "--engine", "ray",
                             "--workers", "2", "--quiet"]) == 0
    on_ray = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert on_ray["engine"] == "ray" and on_ray["workers"] == 2 and local["engine"] == "local"
    assert len(local["runs"]) == cfg.seeds * len(cfg.architectures) == on_ray["run_counts"]["ok"]
    assert without_wall_times(on_ray["runs"]) == without_wall_times(local["runs"])
    assert without_wall_times(stored(tmp_path / "ray").values()) == without_wall_times(local["runs"])
    rows = [[{k: v for k, v in r.items() if k != "mean_wall_s"} for r in json.loads(json.dumps(res["summary"]))]
            for res in (local, on_ray)]
    assert rows[0] == rows[1]


def test_records_stream_and_a_second_start_skips_the_finished_runs(tmp_path, calls, uninterrupted):
    out = tmp_path / "out"
    first = xor_success.run(smoke(), out, progress=False)
    assert sorted(calls.seen) == sorted(stored(out)) == ["arch0_seed0", "arch0_seed1", "arch1_seed0", "arch1_seed1"]
    assert all(r["status"] == "ok" for r in stored(out).values())
    (out / "runs" / "arch1_seed0.json").unlink()  # as if the study had stopped before that run ended
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    calls.seen.clear()
    again = xor_success.run(smoke(), out, progress=False)
    assert calls.seen == ["arch1_seed0"]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir() if p.name in kept} == kept
    for res in (first, again):
        assert without_wall_times(res["runs"]) == without_wall_times(uninterrupted["runs"])
        assert res["run_counts"] == {"ok": 4, "failed": 0, "stopped": 0} and res["runs_left_out"] == []
    assert json.loads((out / "study.json").read_text())["config_sha256"] == \
        records.config_hash(smoke().model_dump(mode="json"))


def test_a_failed_run_is_recorded_left_out_and_retried(tmp_path, calls, capsys):
    out = tmp_path / "out"
    cfg = config_file(tmp_path, smoke())
    calls.fail["arch1_seed0"] = ValueError("boom")
    assert xor_success.main([cfg, "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "1 runs did not finish ok" in err and f"--out {out}" in err
    failed = stored(out)["arch1_seed0"]
    assert failed["status"] == "failed" and failed["reason"] == "ValueError: boom" and "boom" in failed["traceback"]
    res = json.loads((out / "results.json").read_text())
    assert res["run_counts"] == {"ok": 3, "failed": 1, "stopped": 0}
    assert res["runs_left_out"] == [{"key": "arch1_seed0", "status": "failed", "reason": "ValueError: boom"}]
    assert [r["key"] for r in res["runs"]] == ["arch0_seed0", "arch0_seed1", "arch1_seed1"]
    assert [r["n_seeds"] for r in res["summary"]] == [2, 1]
    assert "1 failed and 0 stopped of 4 runs are left out of this table (arch1_seed0)" in res["table"]
    assert res["table"] == (out / "table.md").read_text().strip()
    calls.fail.clear()
    calls.seen.clear()
    assert xor_success.main([cfg, "--out", str(out), "--quiet"]) == 0
    assert calls.seen == ["arch1_seed0"]
    assert json.loads((out / "results.json").read_text())["run_counts"] == {"ok": 4, "failed": 0, "stopped": 0}
    # every run of an architecture failed: nothing to summarise it with
    calls.fail.update(arch1_seed0=RuntimeError("diverged"), arch1_seed1=RuntimeError("diverged"))
    with pytest.raises(records.StudyIncomplete, match="no run of lattice 4x4 finished ok"):
        xor_success.run(smoke(), tmp_path / "other", progress=False)
    assert [r["status"] for r in stored(tmp_path / "other").values()] == ["ok", "ok", "failed", "failed"]


def test_a_stopped_study_records_the_run_in_flight_and_resumes(tmp_path, calls, uninterrupted, capsys):
    out = tmp_path / "out"
    cfg = config_file(tmp_path, smoke())
    calls.fail["arch0_seed1"] = KeyboardInterrupt()  # Ctrl-C during the second run
    assert xor_success.main([cfg, "--out", str(out), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert f"Resume with the same command: xyoptics study xor_success {cfg} --out {out} --quiet" in err
    assert {k: r["status"] for k, r in stored(out).items()} == {"arch0_seed0": "ok", "arch0_seed1": "stopped"}
    assert stored(out)["arch0_seed1"]["reason"] == "interrupted (KeyboardInterrupt)"
    assert not (out / "results.json").exists()
    # a training stopped by a signal (its summary says so) is cut short: stopped, never a result
    calls.fail["arch0_seed1"] = engine.RunInterrupted("stopped (SIGTERM)")
    with pytest.raises(engine.StudyStopped, match="0 of 3 runs of this start finished"):
        xor_success.run(smoke(), out, progress=False)
    assert stored(out)["arch0_seed1"]["reason"] == "interrupted: training stopped (SIGTERM)"
    calls.fail.clear()
    calls.seen.clear()
    res = xor_success.run(smoke(), out, progress=False)
    assert calls.seen == ["arch0_seed1", "arch1_seed0", "arch1_seed1"]
    assert without_wall_times(res["runs"]) == without_wall_times(uninterrupted["runs"])


def test_another_config_in_the_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    xor_success.run(smoke(), out, progress=False)
    with pytest.raises(ConfigError, match="holds the runs of a different config"):
        xor_success.run(smoke(strict_starts=2), out, progress=False)
    other = config_file(tmp_path, smoke(strict_starts=2))
    assert xor_success.main([other, "--out", str(out), "--quiet"]) == 2
    assert "--restart" in capsys.readouterr().err
    assert xor_success.main([other, "--out", str(out), "--quiet", "--restart"]) == 0
    assert "discarded 4 run records" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["config"]["strict_starts"] == 2


def test_a_folder_driven_by_another_process_is_refused(tmp_path, capsys):
    """Two drivers on one folder would run the same runs twice and overwrite records; --restart in the second
    would delete the first one's. The second is refused, naming the first, until the first one ends."""
    out = tmp_path / "out"
    xor_success.run(smoke(), out, progress=False)
    before = stored(out)
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from xyoptics.studies.folderlock import "
                               "hold_study_folder\nwith hold_study_folder(sys.argv[1]):\n print('held', flush=True)"
                               "\n sys.stdin.readline()", str(out)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"in use by another running study \\(pid {holder.pid} "):
            xor_success.run(smoke(), out, progress=False)
        assert xor_success.main([config_file(tmp_path, smoke()), "--out", str(out), "--quiet", "--restart"]) == 2
        assert "in use by another running study" in capsys.readouterr().err
        assert stored(out) == before  # nothing discarded, nothing rewritten
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0
    assert xor_success.main([config_file(tmp_path, smoke()), "--out", str(out), "--quiet"]) == 0  # free again
    with folderlock.hold_study_folder(out), folderlock.hold_study_folder(out):  # re-entrant in one process
        xor_success.run(smoke(), out, progress=False)


def test_engine_options_on_the_command_line(tmp_path, capsys, monkeypatch):
    cfg = config_file(tmp_path, smoke())
    with pytest.raises(SystemExit) as exc:
        xor_success.main([cfg, "--out", str(tmp_path / "x"), "--address", "10.0.0.1:6379"])
    assert exc.value.code == 2 and "--address needs --engine ray" in capsys.readouterr().err
    real = engine.importlib.util.find_spec
    monkeypatch.setattr(engine.importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert xor_success.main([cfg, "--out", str(tmp_path / "x"), "--engine", "ray"]) == 2
    assert "pip install 'xyoptics[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _stubborn_worker(ready) -> None:
    """Like a pool worker deep in an evaluation: SIGTERM only asks it to stop after the step."""
    signal.signal(signal.SIGTERM, lambda *_: None)
    ready.set()
    time.sleep(120)


def _polite_worker(ready) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not whatever handler the forking test process had
    ready.set()
    time.sleep(120)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the stubborn worker is forked")
def test_ending_the_pool_kills_a_worker_that_outlives_its_grace():
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    ready = [ctx.Event(), ctx.Event()]
    stubborn = ctx.Process(target=_stubborn_worker, args=(ready[0],))
    polite = ctx.Process(target=_polite_worker, args=(ready[1],))
    stubborn.start()
    polite.start()
    assert ready[0].wait(10) and ready[1].wait(10)
    t0 = time.monotonic()
    engine._end_workers([stubborn, polite], grace_s=0.5)
    assert time.monotonic() - t0 < 10  # not the 120 s the stubborn worker would sleep
    assert not stubborn.is_alive() and stubborn.exitcode == -signal.SIGKILL
    assert not polite.is_alive() and polite.exitcode == -signal.SIGTERM


@pytest.mark.slow
def test_sigterm_stops_a_study_and_records_the_run_in_flight(tmp_path):
    """A real SIGTERM to a study process: the training in flight stops at a step boundary and is recorded
    ``stopped``; the study exits 130 without results. (A signal that lands before the training starts only
    asks the study to stop after the run in flight, hence the repeats.)"""
    long_runs = smoke(train={**smoke().train, "epochs": 200_000, "eval_every": 200_000, "stop_at_accuracy": None})
    cfg, out = config_file(tmp_path, long_runs), tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "xyoptics.cli", "study", "xor_success", cfg, "--out", str(out),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 60
        while not (out / "study.json").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        while proc.poll() is None and time.monotonic() < deadline:  # again until one lands in the training
            proc.send_signal(signal.SIGTERM)
            landed = time.monotonic() + 3.0
            while proc.poll() is None and not list(out.glob("runs/*.json")) and time.monotonic() < landed:
                time.sleep(0.1)
            if list(out.glob("runs/*.json")):  # recorded: the study is stopping; another signal would kill it
                break
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Resume with the same command" in err
    assert stored(out) == {"arch0_seed0": {"key": "arch0_seed0", "status": "stopped",
                                           "reason": "interrupted: training stopped (SIGTERM)",
                                           "wall_s": stored(out)["arch0_seed0"]["wall_s"]}}
    assert not (out / "results.json").exists()
