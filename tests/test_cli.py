"""The command line: training writes a complete run folder; bad configs fail before any work."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xyoptics import __version__
from xyoptics.cli import main
from xyoptics.core.files import read_arrays_h5

ROOT = Path(__file__).resolve().parents[1]


def small_config(tmp_path, **overrides):
    cfg = yaml.safe_load((ROOT / "experiments" / "xor_all_to_all.yaml").read_text())
    cfg.update(epochs=6, eval_every=3)
    cfg.update(overrides)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("arch", [None, {"kind": "layered", "hidden": [4]}])
def test_train_writes_run_folder(tmp_path, capsys, arch):
    out = tmp_path / "run"
    cfg = small_config(tmp_path, **({"architecture": arch} if arch else {}))
    assert main(["train", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 6
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lines = [m for m in records if m["kind"] == "eval"]
    assert [m["epoch"] for m in lines] == [3, 6]
    assert [m["step"] for m in records if m["kind"] == "step"] == list(range(1, 7))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_test_accuracy"] == lines[-1]["test_accuracy"]
    assert summary["status"] == "completed" and summary["wall_time_s"] > 0
    assert set(read_arrays_h5(out / "params.h5")) == {"w", "h", "psi"}
    for png in ("learning_curves.png", "couplings.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "run folder" in capsys.readouterr().out


def test_training_records_diagnostics(tmp_path):
    out = tmp_path / "run"
    cfg = small_config(tmp_path, architecture={"kind": "square_lattice", "rows": 3, "cols": 3},
                       diagnostics={"every": 2, "n_samples": 4})
    assert main(["train", str(cfg), "--out", str(out), "--quiet"]) == 0
    diag = read_arrays_h5(out / "diagnostics.h5")
    assert list(diag["epochs"]) == [2, 4, 6] and diag["abs_w"].shape == (3, 12)
    assert diag["nudge_response"].shape == (3, 9)
    for name in ("nudge_response", "input_sensitivity", "abs_w", "abs_dw"):
        assert (out / f"{name}.png").stat().st_size > 1000


@pytest.mark.parametrize("override, field", [
    ({"ep": {"beta": -0.1}}, "ep.beta"),
    ({"optimizer": {"kind": "rmsprop"}}, "optimizer.kind"),
    ({"architecture": {"kind": "all_to_all", "hidden": 3, "hiden": 4}}, "architecture.all_to_all.hiden"),
    ({"epochs": 0}, "epochs"),
    ({"learning_rate": 0.1}, "learning_rate"),
])
def test_invalid_config_names_the_field_and_does_no_work(tmp_path, capsys, override, field):
    out = tmp_path / "run"
    code = main(["train", str(small_config(tmp_path, **override)), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and field in err
    assert not out.exists()


def test_unreadable_config(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read config" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [xor\n")
    assert main(["train", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_version_from_installed_entry_point():
    exe = Path(sys.executable).with_name("xyoptics")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"xyoptics {__version__}" and __version__ == "0.1.0"


def test_data_fetch_fails_cleanly_when_files_are_missing(tmp_path, server, capsys):
    url, www, served = server
    assert main(["data", "fetch", "mnist", "--dest", str(tmp_path / "mnist"), "--base-url", url]) == 2
    assert "fetching MNIST failed" in capsys.readouterr().err
    assert served and not any((tmp_path / "mnist").iterdir())


@pytest.mark.parametrize("override, message", [
    ({"architecture": {"kind": "square_lattice", "rows": 3, "cols": 1}}, "cannot place 2 sites"),
    ({"task": {"name": "digits", "options": {"protokol": "2024"}}}, "no option 'protokol'"),
    ({"task": "digits", "architecture": {"kind": "local_layers", "input_shape": [4, 4],
                                         "layers": [{"window": 2}]}}, "does not hold the task's 64 inputs"),
])
def test_config_that_does_not_fit_its_task_fails_before_work(tmp_path, capsys, override, message):
    out = tmp_path / "run"
    assert main(["train", str(small_config(tmp_path, **override)), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()
