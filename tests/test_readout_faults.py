"""Readout faults through the calibrated simulated rig: each is flagged by name on the spins it hits, in the
first EP step, and no flagged sample enters that step's gradient."""

import json
import logging

import numpy as np
import pytest

import drivers.xyrig as xyrig
from calibration.runner import apply_to_slm, calibration_from, run_calibration
from calibration.store import CalibrationStore
from xyoptics.config import TrainConfig
from xyoptics.core.architectures import square_lattice
from xyoptics.core.costs import CosineCost, targets_for
from xyoptics.core.ep import ep_gradient
from xyoptics.data.datasets import xor
from xyoptics.hil.rig import open_optical_machine, simulated_rig
from xyoptics.lab.trainer import Trainer, TrainingFailed

logging.getLogger("slmsuite").setLevel(logging.WARNING)
NET = square_lattice(2, 3, inputs=2, outputs=1)
X = np.array([[-1.0, 1.0], [1.0, 1.0]]) * np.pi / 2
Y = targets_for(np.array([1, 0]), 1)
PROCEDURES = ["dark", "settle", "gray_phase", "spot_map", "path_offsets"]


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cal")
    report = run_calibration(simulated_rig(), NET, folder, only=PROCEDURES, progress=False)
    assert report["ok"]
    return CalibrationStore(folder).latest_set(PROCEDURES, None)


@pytest.fixture
def rig(calibration):
    with open_optical_machine(simulated_rig(), NET) as machine:
        apply_to_slm(machine.slm, calibration)
        machine.use_calibration(*calibration_from(calibration))
        yield machine


def params():
    return NET.init_params(np.random.default_rng(0), coupling_std=0.7)


def test_a_healthy_calibrated_rig_flags_nothing(rig):
    eq = rig.equilibrate(params(), X)
    assert eq.usable.all()
    for name in ("saturated", "dead_spot", "low_modulation", "reference_mismatch"):
        assert not eq.quality[name].any(), name
    assert rig.dark_noise is not None and rig.modulation_ref is not None and rig.residual_ref is not None


@pytest.mark.parametrize("fault, flag, spins", [
    ("dead_output_spot", "dead_spot", list(NET.outputs)), ("weak_laser", "low_modulation", list(range(6))),
    ("reference_jumps", "reference_mismatch", None), ("saturating_exposure", "saturated", None)])
def test_each_fault_is_flagged_by_name(rig, monkeypatch, fault, flag, spins):
    truth = rig.slm.engine.truth
    if fault == "dead_output_spot":
        truth.spot_brightness[NET.outputs[0]] = 0.0
    elif fault == "weak_laser":
        truth.power = 0.1
    elif fault == "reference_jumps":  # the reference phase jumps by 0.6 rad before every frame
        engine = rig.slm.engine
        frame = engine.frame

        def jumping(*args, **kwargs):
            engine.truth.reference_phase += 0.6
            return frame(*args, **kwargs)

        monkeypatch.setattr(engine, "frame", jumping)
    else:
        rig.camera.set_exposure(0.02)
    eq = rig.equilibrate(params(), X)
    hit = eq.quality[flag]
    assert hit.shape == (len(X), NET.n_spins) and not eq.usable.any()
    if spins is not None:
        assert set(np.flatnonzero(hit.any(axis=0))) == set(spins)
    est = ep_gradient(rig, params(), X, Y, beta=0.5, cost=CosineCost(), rng=np.random.default_rng(0),
                      max_remeasure=1)
    assert est.skipped and est.n_dropped == len(X) and est.remeasured == len(X)


def config(**overrides) -> TrainConfig:
    return TrainConfig.model_validate({"task": "xor", "architecture": {"kind": "square_lattice", "rows": 2,
                                                                        "cols": 3},
                                       "ep": {"beta": 0.5, "cost": "cosine"}, "epochs": 1, "batch_size": 4,
                                       "seed": 0, **overrides})


def test_the_first_training_step_names_the_fault(rig, tmp_path):
    rig.slm.engine.truth.spot_brightness[NET.outputs[0]] = 0.0  # the output spin's spot goes dark
    cfg = config(session={"max_remeasure": 0})
    with pytest.warns(RuntimeWarning, match=r"step 1 skipped: 0 of 4 samples measured cleanly \(flagged free and nudged measurements: dead_spot 8;"):
        result = Trainer(cfg, rig, xor(), xor(), None, progress=False).run()
    s = result.summary
    assert s["skipped_steps"] == 1 and s["dead_spot_samples"] == 8 and s["dropped_samples"] == 4


def test_drift_figures_reach_the_metrics(rig, tmp_path):
    result = Trainer(config(), rig, xor(), xor(), tmp_path, progress=False).run()
    steps = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "step"]
    assert result.summary["dropped_samples"] == 0
    assert all(0.9 < r["modulation_ratio"] < 1.1 and abs(r["reference_phase_rad"]) <= np.pi for r in steps)


def test_a_frozen_slm_is_a_device_fault_that_stops_the_run(rig):
    rig.slm.engine.truth.settle_time_s = 10.0  # 2000x too slow: a write moves the pixels by 0.2 % before the next
    cfg = config(session={"max_retries": 1, "retry_wait_s": 0.0})
    with pytest.warns(RuntimeWarning, match="retrying"), \
            pytest.raises(TrainingFailed, match="step 0: .*did not respond to the SLM"):
        Trainer(cfg, rig, xor(), xor(), None, progress=False).run()
