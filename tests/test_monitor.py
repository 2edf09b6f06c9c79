"""The live session monitor: the trainer publishes only when a monitor watches, a stop needs the token, and in a
real browser (headless Chromium from the system packages, driven by Playwright) the page follows a run on the
simulated rig, refuses a stop without the token, stops it safely with the token, and replays it after it was
resumed to its end.

``XYOPTICS_MONITOR_SCREENSHOT=docs/monitor.png`` runs ``test_screenshot_of_the_demo``, which calibrates the
simulated rig, trains the demo with the monitor and saves a screenshot of the page there.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from xyoptics.config import TrainConfig
from xyoptics.core.files import read_json
from xyoptics.lab import live
from xyoptics.lab.session import run_session
from xyoptics.lab.stopping import StopRequest
from xyoptics.monitor.control import RunControl
from xyoptics.monitor.runfolder import MetricsTail, RunFolder, RunState

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"]  # offline, as root
PARKED = {"shutter": "closed", "laser_output": "off", "slm": "blank"}


def digital_config(**overrides) -> TrainConfig:
    raw = yaml.safe_load((ROOT / "experiments" / "xor_all_to_all.yaml").read_text())
    raw.update(epochs=4, eval_every=2, **overrides)
    return TrainConfig.model_validate(raw)


def rig_config_file(folder: Path, **overrides) -> Path:
    """XOR through the simulated rig on a 2x3 lattice: 40 epochs of 2 steps (batch 2), each evaluated."""
    raw = yaml.safe_load((ROOT / "experiments" / "xor_lattice_skip_rig.yaml").read_text())
    raw.update(epochs=40, batch_size=2, eval_every=1, stop_at_accuracy=None,
               architecture={"kind": "square_lattice", "rows": 2, "cols": 3}, session={"checkpoint_every": 5})
    raw.update(overrides)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(TrainConfig.model_validate(raw).model_dump(mode="json")))
    return path


def running_folder(folder: Path) -> RunFolder:
    """A run folder that looks running: metrics written, no summary."""
    folder.mkdir(exist_ok=True)
    (folder / "metrics.jsonl").write_text(json.dumps({"kind": "step", "step": 1, "epoch": 1, "cost": 0.9,
                                                      "wall_s": 0.5}) + "\n")
    return RunFolder(folder)


# -- publishing ---------------------------------------------------------------------------------------------
def test_a_run_without_a_monitor_writes_no_live_files(tmp_path):
    result = run_session(digital_config(), tmp_path / "run", progress=False)
    assert result.summary["status"] == "completed"
    assert not (tmp_path / "run" / live.LIVE).exists()


def fake_trainer() -> tuple[SimpleNamespace, SimpleNamespace]:
    """What the publisher reads of a trainer (state, network, config, batches, an optical machine's latest
    frame and spots) and of a step's estimate."""
    from xyoptics.core.architectures import all_to_all
    from xyoptics.core.machine import Equilibrium

    net = all_to_all(2, 3, 1)
    params = net.init_params(np.random.default_rng(0), 0.7, 0.5)
    state = SimpleNamespace(step=7, epoch=2, params=params)
    machine = SimpleNamespace(last_frame=np.arange(640 * 480, dtype=np.uint16).reshape(640, 480),
                              last_spot_phases=np.zeros(net.n_spins),
                              layout=SimpleNamespace(spot_centres=np.ones((net.n_spins, 2)),
                                                     spin_index=np.arange(net.n_spins)[None]))
    estimate = SimpleNamespace(free=Equilibrium(np.full((4, net.n_spins), 0.5), np.ones(4, bool), np.ones(4),
                                                np.zeros(4)))
    return SimpleNamespace(state=state, net=net, cfg=SimpleNamespace(epochs=10), n_batches=3, machine=machine), estimate


def test_the_publisher_checks_once_a_second_and_publishes_only_while_watched(tmp_path, monkeypatch):
    now = [0.0]
    publisher = live.LivePublisher(tmp_path, instrument_state=lambda: {"shutter": {"open": True}},
                                   clock=lambda: now[0])
    trainer, estimate = fake_trainer()
    stats = []
    monkeypatch.setattr(live, "is_watched", lambda run: stats.append(run) or (live.live_dir(run) / live.WATCH).exists())
    for _ in range(100):  # 100 steps within one second, no monitor: one look, nothing written
        publisher.after_step(trainer, estimate, StopRequest())
        now[0] += 0.005
    assert len(stats) == 1 and not (tmp_path / live.LIVE).exists()

    live.request_watch(tmp_path)
    now[0] += 1.0
    publisher.after_step(trainer, estimate, StopRequest())
    status, snap = live.read_status(tmp_path), live.read_snapshot(tmp_path)
    assert status["step"] == 7 and status["steps_total"] == 30 and status["instruments"] == {"shutter": {"open": True}}
    assert snap["frame"].shape == (320, 240) and int(snap["frame_bin"]) == 2  # binned to <= 320 px a side
    np.testing.assert_array_equal(snap["couplings"], trainer.state.params.w[trainer.net.edge_param])
    np.testing.assert_array_equal(snap["spin_angles"], estimate.free.phases[0])


def test_bin_frame_keeps_the_mean_and_caps_the_size():
    frame = np.random.default_rng(0).integers(0, 4096, (1000, 640))
    binned, factor = live.bin_frame(frame)
    assert factor == 4 and binned.shape == (250, 160)
    assert binned[0, 0] == pytest.approx(frame[:4, :4].mean())
    assert live.bin_frame(frame[:100, :50])[1] == 1


def test_a_stop_request_stops_like_ctrl_c_and_a_stale_one_is_dropped(tmp_path, capsys):
    live.request_stop(tmp_path, by="test")
    live.LivePublisher(tmp_path)  # a new session: the request was not meant for it
    assert not (live.live_dir(tmp_path) / live.STOP).exists()

    publisher = live.LivePublisher(tmp_path)
    live.request_stop(tmp_path, by="test")
    stop = StopRequest()
    trainer, estimate = fake_trainer()
    publisher.after_step(trainer, estimate, stop)
    assert stop.requested and stop.reason == "monitor"
    assert not (live.live_dir(tmp_path) / live.STOP).exists()  # taken once
    assert "stop requested from the monitor" in capsys.readouterr().err


# -- reading the run folder ---------------------------------------------------------------------------------
def test_metrics_tail_reads_complete_lines_and_starts_over_on_a_replaced_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == (False, [])
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')
    assert tail.read() == (True, [{"step": 1}, {"step": 2}])
    with open(path, "a") as f:
        f.write('ep": 3}\n')
    assert tail.read() == (False, [{"step": 3}])
    replacement = tmp_path / "new"
    replacement.write_text('{"step": 1}\n')
    os.replace(replacement, path)  # a resume keeps the lines its checkpoint covers, in a new file
    assert tail.read() == (True, [{"step": 1}])


def test_run_state_follows_the_files(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert folder.state().phase == "waiting"
    running_folder(tmp_path / "run")
    assert folder.state().running
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"status": "stopped (monitor)"}))
    assert folder.state() == RunState("ended", "stopped (monitor)")
    time.sleep(0.01)
    (tmp_path / "run" / "metrics.jsonl").write_text("")  # resumed: newer than the summary
    assert folder.state().running
    live.live_dir(tmp_path / "run").mkdir()
    (live.live_dir(tmp_path / "run") / live.STATUS).write_text(json.dumps({"pid": 2 ** 22 + 1,
                                                                         "host": os.uname().nodename}))
    assert folder.state().phase == "lost"


# -- the token --------------------------------------------------------------------------------------------------
def test_stopping_needs_the_token_and_a_running_run(tmp_path):
    control = RunControl(running_folder(tmp_path / "run"))
    request = live.live_dir(tmp_path / "run") / live.STOP
    for token in (None, "", "wrong", control.token[:-1]):
        answer = control.stop(token, by="test")
        assert answer.status == 403 and "token" in answer.message
        assert not request.exists()
    assert control.stop(f" {control.token}\n", by="test").status == 202
    assert read_json(request)["by"] == "test" and live.is_watched(tmp_path / "run")
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"status": "completed"}))
    answer = control.stop(control.token, by="test")
    assert answer.status == 409 and "completed" in answer.message


def post_stop(url: str, token: str | None) -> tuple[int, dict]:
    request = urllib.request.Request(url + "stop", data=b"", method="POST",
                                     headers={"X-Token": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_http_stop_answers_403_without_the_token(tmp_path):
    from xyoptics.monitor.server import MonitorServer

    running_folder(tmp_path / "run")
    with MonitorServer(tmp_path / "run", port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert post_stop(server.url, None)[0] == 403
        assert post_stop(server.url, "wrong")[0] == 403
        assert not (live.live_dir(tmp_path / "run") / live.STOP).exists()
        status, body = post_stop(server.url, server.token)
        assert status == 202 and "stop requested" in body["message"]
        with urllib.request.urlopen(server.url, timeout=10) as page:  # BokehJS from the server itself
            scripts = re.findall(r'<script src="([^"]+)"', page.read().decode())
        assert scripts and all(s.startswith("/static/") for s in scripts)
    assert not (live.live_dir(tmp_path / "run") / live.WATCH).exists()  # the watch ends with the server


# -- in a real browser ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: "
                                                                       "pip install -e '.[test]' (make test)")
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if chromium is None:
        pytest.skip("no Chromium on this machine: install the system package (make test does, as root: "
                    "apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def wait_for(condition, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def start_monitored_run(args: list[str], log: Path, cwd: Path = ROOT) -> tuple[subprocess.Popen, str, str]:
    """``xyoptics train ARGS --monitor --quiet`` in a subprocess; returns it with the page's URL and token."""
    proc = subprocess.Popen([sys.executable, "-m", "xyoptics.cli", "train", *args, "--quiet", "--monitor"],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"), cwd=cwd)
    found = wait_for(lambda: re.search(r"(http://\S+)\s+\(.*token (\S+)\)", log.read_text()) or proc.poll(),
                     60, "the monitor's address")
    assert not isinstance(found, int), log.read_text()
    return proc, found[1], found[2]


def model(page, name: str, attribute: str):
    """An attribute of a named Bokeh model, as the browser holds it."""
    return page.evaluate("([name, attribute]) => { const doc = Bokeh.documents[0]; const m = doc && "
                         "doc.get_model_by_name(name); return m ? m[attribute] : null }", [name, attribute])


def evaluations_shown(page) -> int:
    data = model(page, "learning_curve", "data")
    return len(data["epoch"]) if data else 0


def stop_from_the_page(page, token: str) -> str:
    page.get_by_placeholder("token").fill(token)
    page.get_by_role("button", name="Stop safely").click()
    return wait_for(lambda: model(page, "stop_message", "text"), 10, "the stop's answer")


@pytest.mark.slow
@pytest.mark.xdist_group("browser")
def test_the_page_follows_a_run_stops_it_with_the_token_and_replays_it(tmp_path, browser):
    from xyoptics.monitor.server import MonitorServer

    run = tmp_path / "run"
    config = rig_config_file(tmp_path)
    proc, url, token = start_monitored_run([str(config), "--machine", "simulated", "--out", str(run)],
                                           tmp_path / "train.log")
    try:
        page = browser.new_page()
        page.goto(url)
        shown = wait_for(lambda: evaluations_shown(page), 60, "a first evaluation")
        wait_for(lambda: page.get_by_role("button", name="Stop safely").is_enabled(), 10, "the stop button")
        for wrong in ("", "not-the-token"):
            page.evaluate("() => Bokeh.documents[0].get_model_by_name('stop_message').text = ''")
            assert "refused" in stop_from_the_page(page, wrong)
        wait_for(lambda: evaluations_shown(page) > shown, 30, "the learning curve to grow after the refused stops")
        assert proc.poll() is None and not (live.live_dir(run) / live.STOP).exists()
        assert post_stop(url, None)[0] == 403

        page.evaluate("() => Bokeh.documents[0].get_model_by_name('stop_message').text = ''")
        assert "stop requested" in stop_from_the_page(page, token)
        assert proc.wait(timeout=60) == 130, (tmp_path / "train.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "train.log").read_text()
    assert "stop requested from the monitor: stopping after the current step" in log and "--resume" in log
    summary = read_json(run / "summary.json")
    assert summary["status"] == "stopped (monitor)" and summary["hardware_parked"] == PARKED
    assert 0 < summary["steps_completed"] < 80

    resumed = subprocess.run([sys.executable, "-m", "xyoptics.cli", "train", "--resume", str(run), "--quiet"],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed" and summary["steps_completed"] == 80

    with MonitorServer(run, port=0) as server:  # the finished run, replayed
        page.goto(server.url)
        wait_for(lambda: evaluations_shown(page) == 40, 30, "all 40 evaluations")
        assert "completed" in model(page, "header", "text")
        assert "parked" in model(page, "info", "text")
        assert not page.get_by_role("button", name="Stop safely").is_enabled()
    page.close()


@pytest.mark.skipif(not os.environ.get("XYOPTICS_MONITOR_SCREENSHOT"),
                    reason="makes the README's screenshot: set XYOPTICS_MONITOR_SCREENSHOT=docs/monitor.png")
def test_screenshot_of_the_demo(tmp_path, browser):
    """``make demo`` with the monitor, in a folder of its own (the page shows the paths as the demo has them)."""
    demo = str(ROOT / "experiments" / "xor_lattice_skip_rig.yaml")
    calibrate = subprocess.run([sys.executable, "-m", "xyoptics.cli", "calibrate", "simulated", "--config", demo,
                                "--out", "runs/demo-calibration", "--quiet"], capture_output=True, text=True,
                               cwd=tmp_path)
    assert calibrate.returncode == 0, calibrate.stderr
    proc, url, _ = start_monitored_run([demo, "--machine", "simulated", "--calibration", "runs/demo-calibration",
                                        "--out", "runs/demo"], tmp_path / "train.log", cwd=tmp_path)
    page = browser.new_page(viewport={"width": 1300, "height": 960})
    page.goto(url)
    wait_for(lambda: evaluations_shown(page) >= 3, 120, "three evaluations")
    time.sleep(2.5)  # the next live snapshot
    page.screenshot(path=ROOT / os.environ["XYOPTICS_MONITOR_SCREENSHOT"], full_page=True)
    proc.wait(timeout=120)
