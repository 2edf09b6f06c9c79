"""The light-path self-test (xyoptics.hil.selftest) on the simulated rig and on faulty rigs: each fault is
refused at the stage that names it; the stock slmsuite SLM + camera pair fails ``rig check`` and ``train``."""

import logging
import textwrap

import numpy as np
import pytest

import drivers.xyrig as xyrig
from drivers.shutter import SerialShutter
from drivers.simulated_rig import RigCamera, RigSLM
from xyoptics.cli import main
from xyoptics.hil.layout import LayoutConfig, RigTopology
from xyoptics.hil.optical import OpticalXYMachine
from xyoptics.hil.rig import probe_network
from xyoptics.hil.selftest import SelfTestFailed, light_path_check

logging.getLogger("slmsuite").setLevel(logging.WARNING)
STOCK = textwrap.dedent("""\
    name: stock-slmsuite-pair
    slm: {class: slmsuite.hardware.slms.simulated.SimulatedSLM, kwargs: {resolution: [256, 128]}}
    camera: {class: slmsuite.hardware.cameras.simulated.SimulatedCamera, kwargs: {slm: "@slm", resolution: [160, 120]}}
    topology: network
    readout: {method: phase_shifting, n_steps: 4}
    """)


def machine(n_spins=4, rig_name="selftest-rig", **imperfections):
    topology = RigTopology(n_spins=n_spins, bonds=[])
    net = probe_network(topology)
    slm = RigSLM((256, 128), 8, topology=topology.model_dump(), seed=3, imperfections=imperfections or None,
                 rig_name=rig_name)
    return OpticalXYMachine(net, slm, RigCamera(slm), topology, LayoutConfig())


def test_the_simulated_rig_passes_every_stage():
    with SerialShutter("xyshutter://selftest-rig") as shutter:
        report = light_path_check(machine(), shutter)
    assert [r["status"] for r in report.values()] == ["ok", "ok", "ok"]
    assert report["reference"]["min_snr"] > 10 and report["pilot"]["max_error_rad"] < 0.1
    assert report["dark"]["median_modulation_open"] > 100 * report["dark"]["median_modulation_closed"]


@pytest.mark.parametrize("fault, stage", [
    ("frozen_slm", "reference"), ("no_reference_beam", "reference"), ("weak_laser", "reference"),
    ("shutter_not_blocking", "dark"), ("saturating_exposure", "reference")])
def test_each_fault_is_refused_at_its_stage(fault, stage, monkeypatch):
    m = machine(settle_factor=1e4) if fault == "frozen_slm" else machine()  # writes barely move the pixels
    if fault == "no_reference_beam":
        frame = xyrig.XYRigEngine.frame
        monkeypatch.setattr(xyrig.XYRigEngine, "frame", lambda self, exposure_s, reference_scale=1.0:
                            frame(self, exposure_s, reference_scale=0.0))
    if fault == "weak_laser":
        m.slm.engine.truth.power = 1e-4
    if fault == "saturating_exposure":
        m.camera.set_exposure(0.05)
    with SerialShutter("xyshutter://another-rig") as wrong, pytest.raises(SelfTestFailed) as err:
        light_path_check(m, wrong if fault == "shutter_not_blocking" else None)  # that shutter blocks nothing here
    assert err.value.stage == stage and f"stage '{stage}'" in str(err.value)


def test_a_dead_pilot_spot_fails_the_pilot_stage(monkeypatch):
    m = machine()
    real = m.read_clamped

    def pilot_ignored(phases):  # the pilot's clamp tile does nothing: the rig shows it at phase 0 throughout
        return real(np.zeros_like(phases))
    monkeypatch.setattr(m, "read_clamped", pilot_ignored)
    with pytest.raises(SelfTestFailed, match="stage 'pilot'.*does not follow the SLM"):
        light_path_check(m)


def test_stock_slmsuite_pair_fails_rig_check_and_train_refuses(tmp_path, capsys):
    rig = tmp_path / "stock.yaml"
    rig.write_text(STOCK)
    assert main(["rig", "check", str(rig)]) == 1
    assert "self-test failed at stage 'reference'" in capsys.readouterr().err
    cfg = "experiments/xor_lattice_skip_rig.yaml"
    assert main(["train", cfg, "--machine", str(rig), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "nothing was trained" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_rig_check_of_the_simulated_rig_reports_the_stages(capsys):
    assert main(["rig", "check", "simulated"]) == 0
    captured = capsys.readouterr()
    assert "light path: dark ok, reference ok, pilot ok" in captured.err
    assert '"self_test"' in captured.out
