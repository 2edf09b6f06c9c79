"""Calibration procedures on the simulated rig (default imperfections, seeded), measured only through the SLM
and camera and checked against the rig's hidden truth; clean failure without light; the runner and CLI."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from calibration.dark import dark_truth_error, measure_dark
from calibration.gray_phase import gray_phase_truth_error, measure_gray_phase
from calibration.runner import SETTLE_MARGIN, apply_to_slm, calibration_from, run_calibration
from calibration.session import CalibrationFailed, RigSession
from calibration.spots import measure_path_offsets, measure_spot_map, path_offsets_truth_error, spot_map_truth_error
from calibration.store import CalibrationStore
from calibration.timing import measure_settle_time, settle_truth_error
from calibration.transfer import measure_transfer
from drivers.shutter import SerialShutter, ShutterError
from drivers.simulated_rig import RigCamera, RigSLM
from xyoptics.cli import main
from xyoptics.config import load_config
from xyoptics.core.architectures import square_lattice
from xyoptics.data.datasets import xor
from xyoptics.hil.layout import Calibration, Layout, LayoutConfig, RigTopology
from xyoptics.hil.rig import load_rig, simulated_rig
from xyoptics.lab.build import build_network

ROOT = Path(__file__).resolve().parents[1]
logging.getLogger("slmsuite").setLevel(logging.WARNING)
NET = square_lattice(3, 3, inputs=2, outputs=1)  # 9 spins, 12 bonds: the smallest rig the transfer fits
TOPOLOGY = RigTopology(n_spins=NET.n_spins, bonds=[tuple(e) for e in NET.edges.tolist()])


@pytest.fixture(scope="session")
def calibrated(tmp_path_factory):
    """One full calibration of the simulated rig for NET (every procedure, default imperfections), shared by
    the tests that check the runner, the transfer over the range and the CLI; tests that add files copy it."""
    folder = tmp_path_factory.mktemp("calibrated")
    return folder, run_calibration(simulated_rig(), NET, folder, progress=False)


def session(seed=0, light=True, calibration=Calibration(), shutter=None, **imperfections):
    slm = RigSLM((256, 128), 8, topology=TOPOLOGY.model_dump(), seed=seed, imperfections=imperfections or None,
                 rig_name="test-rig")
    slm.engine.light = light
    return RigSession(slm, RigCamera(slm), TOPOLOGY, LayoutConfig(), calibration=calibration, shutter=shutter)


def test_simulated_shutter_speaks_its_serial_protocol():
    with SerialShutter("xyshutter://nowhere") as shutter:
        assert shutter.identity.startswith("XYOPTICS") and shutter.is_open
        shutter.close()
        assert not shutter.is_open
        with pytest.raises(ShutterError, match="refused"):
            shutter._ask("EXPLODE")
    with pytest.raises(ShutterError, match="cannot open shutter"):
        SerialShutter("nosuchscheme://x")


def test_dark_frame_and_noise_with_the_shutter_closed():
    with SerialShutter("xyshutter://test-rig") as shutter:
        s = session(shutter=shutter)
        arrays, _ = measure_dark(s)
        err = dark_truth_error(s.slm.engine.truth, arrays)
        assert abs(err["dark_offset_error_counts"]) < 0.5 and abs(err["noise_rel_error"]) < 0.1
        assert shutter.is_open and s.slm.engine.light  # opened again afterwards
    with pytest.raises(CalibrationFailed, match="no shutter"):
        measure_dark(session())
    with SerialShutter("xyshutter://another-rig") as wrong:  # blocks nothing on this rig
        with pytest.raises(CalibrationFailed, match="still show light"):
            measure_dark(session(shutter=wrong))


@pytest.mark.parametrize("seed", [0, 1])
def test_spot_map_and_path_offsets_against_hidden_truth(seed):
    s = session(seed)
    spots, quality = measure_spot_map(s)
    err = spot_map_truth_error(s.slm.engine.truth, spots)
    assert err["centre_rms_px"] <= 0.3 and quality["min_modulation_counts"] > 100
    s2 = session(seed, calibration=Calibration(spot_centres=spots["centres"]))
    offsets, _ = measure_path_offsets(s2)
    assert path_offsets_truth_error(s2.slm.engine.truth, offsets)["offset_rms_rad"] <= 0.03
    # uncalibrated readout would be off by the offsets themselves (0.29-0.5 rad rms on these rigs)
    assert np.std(s2.slm.engine.truth.path_offsets) > 0.2


def test_gray_phase_lookup_table_against_hidden_truth():
    s = session()
    table, quality = measure_gray_phase(s)
    assert gray_phase_truth_error(s.slm.engine.truth, table)["gamma_rms_2pi"] <= 0.02
    assert 0.9 < quality["range_2pi"] <= 1.0 and np.all(np.diff(table["gamma"]) > 0)


@pytest.mark.slow
@pytest.mark.xdist_group("calibrated")
def test_transfer_over_the_range_against_hidden_truth(calibrated):
    """Encode every bond, bias and nudge tile at efficiencies across the range with and without the calibration
    (lookup table and tile gains) and compare the strength the rig really realises with the target: within 3 %
    rms after calibration, and clearly better than before. Lit tiles never touch, so this is the transfer
    itself, without the crosstalk of a particular pattern."""
    records = CalibrationStore(calibrated[0]).latest_set(["gray_phase", "transfer"], None)
    errors = {}
    for calibrated in (False, True):
        slm = RigSLM((256, 128), 8, topology=TOPOLOGY.model_dump(), seed=0, rig_name="truth")
        cal = calibration_from(records)[0] if calibrated else Calibration()
        if calibrated:
            apply_to_slm(slm, records)
        layout = Layout(slm.engine.routing, TOPOLOGY, LayoutConfig(), slm.shape, (120, 160), cal)
        rel = []
        tiles = np.concatenate([np.arange(len(TOPOLOGY.bonds)), layout.bias_tile, layout.nudge_tile])
        for target in (0.05, 0.1, 0.25, 0.5, 0.75, 0.95):
            for parity in (0, 1):  # every other tile at a time, so no lit tile touches another (no crosstalk)
                lit = tiles[(layout.tile_origin[tiles] // layout.config.tile_px).sum(1) % 2 == parity]
                eta, alpha = np.zeros(layout.n_tiles), np.zeros(layout.n_tiles)
                eta[lit] = target
                if cal.efficiency_scale is not None:
                    eta = eta / cal.efficiency_scale
                slm.set_phase(layout.image(eta, alpha), settle=False)
                rel.append(slm.engine.tile_strengths(slm.engine.displayed()).real[lit] / target)
        rel = np.concatenate(rel)
        rel = rel / np.exp(np.mean(np.log(rel)))  # strengths are only defined up to one common scale
        errors[calibrated] = float(np.sqrt(np.mean((rel - 1) ** 2)))
    print(f"transfer over the range, rms relative error: uncalibrated {errors[False]:.4f}, calibrated {errors[True]:.4f}")
    assert errors[True] <= 0.03 and errors[True] < 0.6 * errors[False], errors


@pytest.mark.parametrize("imperfections", [{}, {"read_noise_counts": 8.0, "drift_phase_rad": 0.05}])
def test_settle_time_of_a_slow_slm_is_found(imperfections):
    """The SLM really needs 2.5x its nominal settle time T_nom (time to a 1 % residual of its exponential
    response). The camera stops seeing the transition at a residual of a few per cent, 0.6-1.1 T; with the
    runner's margin the session waits at least T."""
    s = session(settle_factor=2.5, **imperfections)
    result, _ = measure_settle_time(s)
    rel = settle_truth_error(s.slm.engine.truth, result)["settle_rel_error"]
    assert -0.4 <= rel <= 0.1 and SETTLE_MARGIN * (1 + rel) >= 0.95, rel
    assert result["settle_time_s"] > 1.5 * s.slm.settle_time_s


@pytest.mark.parametrize("procedure", [measure_spot_map, measure_path_offsets, measure_settle_time,
                                       measure_gray_phase, measure_transfer])
def test_procedures_fail_cleanly_without_light(procedure):
    with pytest.raises(CalibrationFailed, match="laser on|light on"):
        procedure(session(light=False))


@pytest.mark.slow
@pytest.mark.xdist_group("calibrated")
def test_runner_stores_reports_and_meets_the_accuracy_targets(calibrated, tmp_path):
    shutil.copytree(calibrated[0], tmp_path / "ok")
    report = calibrated[1]
    assert report["ok"] and set(report["results"]) == {"dark", "settle", "gray_phase", "spot_map", "path_offsets",
                                                       "transfer"}
    saved = json.loads((tmp_path / "ok" / "report.json").read_text())
    assert saved["results"]["path_offsets"]["truth_error"]["offset_rms_rad"] <= 0.03
    # tile gains (squared: the hidden gain multiplies the first-order amplitude) within 3 % rms
    transfer = saved["results"]["transfer"]
    assert transfer["truth_error"]["gain_rms_rel"] <= 0.03
    assert transfer["quality"]["range_max_rel_deviation"] < 0.1
    assert saved["seconds"] < 300
    for name in ("dark", "settle", "gray_phase", "spot_map", "path_offsets", "transfer"):
        assert (tmp_path / "ok" / f"{name}-00001.h5").exists() and (tmp_path / "ok" / f"{name}.png").exists()
    again = run_calibration(simulated_rig(), NET, tmp_path / "ok", only=["path_offsets"], progress=False)
    assert again["results"]["path_offsets"]["status"] == "ok"  # its spot map comes from the store
    assert (tmp_path / "ok" / "path_offsets-00002.h5").exists()


def test_runner_reports_a_failed_procedure(tmp_path, monkeypatch):
    import drivers.xyrig as xyrig

    real = xyrig.XYRigEngine.__init__

    def dark(self, *a, **kw):
        real(self, *a, **kw)
        self.light = False
    monkeypatch.setattr(xyrig.XYRigEngine, "__init__", dark)
    report = run_calibration(simulated_rig(), NET, tmp_path, only=["spot_map", "gray_phase", "path_offsets"],
                             progress=False)
    assert not report["ok"]
    assert report["results"]["spot_map"]["status"] == "failed" and "shutter" in report["results"]["spot_map"]["reason"]
    assert report["results"]["path_offsets"]["status"] == "skipped"


@pytest.mark.slow
@pytest.mark.xdist_group("calibrated")
def test_cli_calibrate_then_train_records_the_files_used(calibrated, tmp_path, capsys):
    cfg = yaml.safe_load((ROOT / "experiments" / "xor_lattice_skip_rig.yaml").read_text())
    cfg.update(epochs=1, eval_every=1, stop_at_accuracy=None,  # the network NET was calibrated for
               architecture={"kind": "square_lattice", "rows": 3, "cols": 3})
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    built = build_network(load_config(cfg_path), xor())
    assert np.array_equal(built.edges, NET.edges)
    cal = tmp_path / "cal"
    shutil.copytree(calibrated[0], cal)
    assert main(["calibrate", "simulated", "--config", str(cfg_path), "--out", str(cal), "--only", "settle",
                 "--quiet"]) == 0
    out = tmp_path / "run"
    assert main(["train", str(cfg_path), "--machine", "simulated", "--calibration", str(cal), "--out", str(out),
                 "--quiet"]) == 0
    used = json.loads((out / "calibration.json").read_text())
    assert used["left_out"] == {}
    assert {u["kind"] for u in used["files"]} == {"dark", "settle", "gray_phase", "spot_map", "path_offsets",
                                                  "transfer"}
    assert {Path(u["path"]).name for u in used["files"] if u["kind"] == "settle"} == {"settle-00002.h5"}  # latest
    # the same calibration on a rig whose SLM has 10 bits is refused before the laser or the SLM is touched
    rig = yaml.safe_load((ROOT / "experiments" / "rigs" / "simulated.yaml").read_text())
    rig["slm"]["kwargs"]["bitdepth"] = 10
    rig_path = tmp_path / "rig10.yaml"
    rig_path.write_text(yaml.safe_dump(rig))
    capsys.readouterr()
    code = main(["train", str(cfg_path), "--machine", str(rig_path), "--calibration", str(cal), "--out",
                 str(tmp_path / "refused"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "8-bit SLM, but the connected SLM is 256x128 10-bit" in err, err
    assert "hardware parked" not in err and not (tmp_path / "refused").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("calibrated")
def test_a_partial_calibration_is_refused_unless_allowed(calibrated, tmp_path, capsys):
    cfg = yaml.safe_load((ROOT / "experiments" / "xor_lattice_skip_rig.yaml").read_text())
    cfg.update(epochs=1, eval_every=1, stop_at_accuracy=None, architecture={"kind": "square_lattice", "rows": 3,
                                                                           "cols": 3})
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    cal = tmp_path / "cal"
    shutil.copytree(calibrated[0], cal)
    (cal / "spot_map-00001.h5").unlink()
    train = ["train", str(cfg_path), "--machine", "simulated", "--calibration", str(cal), "--quiet"]
    capsys.readouterr()
    assert main([*train, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "spot_map-00001.h5 is missing" in err, err
    assert "--only spot_map path_offsets transfer" in err and not (tmp_path / "refused").exists()
    assert main([*train, "--out", str(tmp_path / "run"), "--allow-partial-calibration"]) == 0
    used = json.loads((tmp_path / "run" / "calibration.json").read_text())
    assert set(used["left_out"]) == {"spot_map", "path_offsets", "transfer"}
    assert {u["kind"] for u in used["files"]} == {"dark", "settle", "gray_phase"}
    assert "calibration path_offsets left out" in capsys.readouterr().err


def test_quick_procedures_meet_their_targets_on_a_harder_rig(tmp_path):
    """A rig with other hidden imperfections than the default (experiments/rigs/variant-offsets.yaml: twice the
    spot jitter, larger path offsets and width spread): settle time, spot map, gray->phase table and path offsets
    still meet their targets. (All procedures, and training, on all four variants are measured in docs/rig.md.)"""
    rig = load_rig(ROOT / "experiments" / "rigs" / "variant-offsets.yaml")
    report = run_calibration(rig, NET, tmp_path, only=["settle", "gray_phase", "spot_map", "path_offsets"],
                             progress=False)
    errors = {name: r["truth_error"] for name, r in report["results"].items()}
    assert report["ok"], report
    assert errors["spot_map"]["centre_rms_px"] <= 0.3
    assert errors["path_offsets"]["offset_rms_rad"] <= 0.03
    assert errors["gray_phase"]["gamma_rms_2pi"] <= 0.02 and -0.4 <= errors["settle"]["settle_rel_error"] <= 0.1
