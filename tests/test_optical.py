"""The optical machine on the simulated rig: agreement with the digital machine on an ideal rig, physical
starts and nudges, settle time, readout flags, rig configs and the CLI."""

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from drivers.simulated_rig import RigCamera, RigSLM
from drivers.xyrig import Imperfections
from xyoptics.cli import main
from xyoptics.core.angles import wrap
from xyoptics.core.architectures import square_lattice
from xyoptics.core.costs import CosineCost, LogCosineCost, adaptive_gains
from xyoptics.core.digital import DigitalXYMachine
from xyoptics.core.ep import ep_gradient
from xyoptics.core.machine import Nudge
from xyoptics.hil.devices import DeviceError
from xyoptics.hil.layout import Layout, LayoutConfig, RigTopology
from xyoptics.hil.optical import OpticalXYMachine
from xyoptics.hil.rig import load_rig, open_optical_machine, simulated_rig

ROOT = Path(__file__).resolve().parents[1]
logging.getLogger("slmsuite").setLevel(logging.WARNING)


def lattice():
    return square_lattice(3, 4, inputs=2, outputs=1, skip_length=2)


def topology(net):
    return RigTopology(n_spins=net.n_spins, bonds=[tuple(e) for e in net.edges.tolist()])


def rig(net, **kw):
    slm = RigSLM((256, 128), kw.pop("bitdepth", 16), topology=topology(net).model_dump(), seed=kw.pop("seed", 0),
                 imperfections=kw.pop("imperfections", "none"), **kw)
    return slm, RigCamera(slm)


def test_encoding_round_trip():
    net = lattice()
    lay = Layout(net, topology(net), LayoutConfig(), (128, 256), (120, 160))
    rng = np.random.default_rng(0)
    eta, alpha = rng.uniform(0, 1, lay.n_tiles), rng.uniform(-np.pi, np.pi, lay.n_tiles)
    c = lay.read_tiles(lay.image(eta, alpha))
    np.testing.assert_allclose(np.abs(c) ** 2, eta, atol=1e-6)
    np.testing.assert_allclose(wrap(np.angle(c) - alpha)[eta > 1e-3], 0, atol=1e-6)


def test_layout_refuses_what_the_rig_cannot_hold():
    net = lattice()
    with pytest.raises(ValueError, match="not routed"):
        Layout(net, RigTopology(n_spins=net.n_spins, bonds=[(0, 1)]), LayoutConfig(), (128, 256), (120, 160))
    with pytest.raises(ValueError, match="tiles"):
        Layout(net, topology(net), LayoutConfig(), (16, 32), (120, 160))


@pytest.mark.parametrize("readout, tol", [("phase_shifting", 0.02), ("off_axis", 0.04)])
def test_ideal_rig_matches_digital_machine(readout, tol):
    net = lattice()
    slm, cam = rig(net)
    optical = OpticalXYMachine(net, slm, cam, topology(net), readout=readout)
    digital = DigitalXYMachine(net, tol=1e-9, dtype=np.float64)
    rng = np.random.default_rng(1)
    params = net.init_params(rng)
    x = rng.uniform(-np.pi / 2, np.pi / 2, (4, 2))
    free = optical.equilibrate(params, x)
    assert free.converged.all()
    ref = digital.equilibrate(params, x, start=free.phases)
    assert np.abs(wrap(free.phases - ref.phases)).max() < tol
    y = np.where(rng.random((4, 1)) < 0.5, np.pi / 2, -np.pi / 2)
    nudge = Nudge(0.5, y, CosineCost())
    nudged = optical.equilibrate(params, x, nudge=nudge, start=free)
    ref_nudged = digital.equilibrate(params, x, nudge=nudge, start=ref)
    assert np.abs(wrap(nudged.phases - ref_nudged.phases)).max() < tol
    assert np.abs(wrap(nudged.phases - free.phases)).max() > 5 * tol  # the nudge really moved the outputs


def test_an_adaptive_nudge_injects_one_strength_per_output_as_the_digital_machine_adds_it():
    net = square_lattice(3, 4, inputs=2, outputs=2, skip_length=2)
    slm, cam = rig(net)
    optical = OpticalXYMachine(net, slm, cam, topology(net))
    digital = DigitalXYMachine(net, tol=1e-9, dtype=np.float64)
    rng = np.random.default_rng(4)
    params = net.init_params(rng)
    x = rng.uniform(-np.pi / 2, np.pi / 2, (3, 2))
    y = np.where(rng.random((3, 2)) < 0.5, np.pi / 2, -np.pi / 2)
    free = optical.equilibrate(params, x)
    assert optical.max_nudge_strength == optical.layout.config.gains.nudge  # no calibration: the nominal gain
    gains = adaptive_gains(free.phases[:, net.outputs], y, max_gain=optical.max_nudge_strength / 0.4)
    eta, _, _ = optical.layout.tile_settings(params, x[:1], nudge_beta=0.4 * gains[:1], targets=y[:1])
    tiles = optical.layout.nudge_tile[optical.layout.spin_index[:1][:, net.outputs]]
    np.testing.assert_allclose(eta[tiles], 0.4 * gains[:1] / optical.layout.config.gains.nudge)
    nudge = Nudge(0.4, y, CosineCost(), gains)
    nudged = optical.equilibrate(params, x, nudge=nudge, start=free)
    ref = digital.equilibrate(params, x, nudge=nudge, start=free)
    assert np.abs(wrap(nudged.phases - ref.phases)).max() < 0.02
    plain = digital.equilibrate(params, x, nudge=Nudge(0.4, y, CosineCost()), start=free)
    assert np.abs(wrap(ref.phases - plain.phases)).max() > 0.1  # the gains changed the equilibrium


def test_an_adaptive_nudge_stronger_than_the_rig_can_inject_is_refused():
    net = lattice()
    optical = OpticalXYMachine(net, *rig(net), topology(net))
    params = net.init_params(np.random.default_rng(0))
    with pytest.raises(ValueError, match="strongest nudge the rig injects"):
        ep_gradient(optical, params, np.zeros((1, 2)), np.zeros((1, 1)), beta=3 * optical.max_nudge_strength,
                    cost=CosineCost(), rng=np.random.default_rng(0), adaptive_max_gain=10.0)


def test_fresh_starts_are_physically_random_and_seeded():
    """A dark image (no couplings, fields or injections) leaves spontaneous-emission phases: random, but
    reproducible for a seeded rig."""
    net = lattice()
    params = net.init_params(np.random.default_rng(2))
    runs = []
    for _ in range(2):
        machine = OpticalXYMachine(net, *rig(net, seed=3), topology(net))
        dark = np.zeros(machine.layout.n_tiles)
        states = []
        for _ in range(3):
            machine._show(dark, dark)
            machine.camera.get_image()
            states.append(machine.slm.engine.truth.phases.copy())
        runs.append((np.array(states), machine.equilibrate(params, np.zeros((2, 2))).phases))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert np.abs(wrap(runs[0][0][1] - runs[0][0][0])).mean() > 0.5


def test_optical_nudge_is_the_cosine_cost_only():
    net = lattice()
    machine = OpticalXYMachine(net, *rig(net), topology(net))
    params = net.init_params(np.random.default_rng(0))
    with pytest.raises(ValueError, match="cosine cost"):
        machine.equilibrate(params, np.zeros((1, 2)), nudge=Nudge(0.1, np.zeros((1, 1)), LogCosineCost()))


def test_the_slm_follows_a_write_with_the_liquid_crystal_response():
    """Pixels move exponentially from what they showed at the write to the new image: a 1 % residual after the
    settle time T, exact after 3 T; a write during settling starts from the partly updated image."""
    net = lattice()
    slm, cam = rig(net, settle_time_s=0.01)
    engine, clock = slm.engine, slm.clock
    lay = Layout(net, topology(net), LayoutConfig(), slm.shape, cam.shape)
    images = []
    for seed in (0, 1):
        eta, alpha, _ = lay.tile_settings(net.init_params(np.random.default_rng(seed)), np.array([1.0, -1.0]))
        images.append(lay.image(eta, alpha))
    slm.set_phase(images[0], settle=False)
    a = engine.displayed().copy()
    t0 = clock.now()
    assert np.allclose(engine.shown(t0), 0.0)  # nothing has moved yet from the flat start
    assert np.allclose(engine.shown(t0 + 0.01), 0.99 * a)
    assert np.array_equal(engine.shown(t0 + 0.03), a)
    early = cam.get_image()
    clock.sleep(0.005)  # half the settle time: residual 10^-1
    mid = engine.shown(clock.now()).copy()
    assert np.allclose(mid, 0.9 * a)
    slm.set_phase(images[1], settle=False)
    b = engine.displayed()
    assert np.allclose(engine.shown(clock.now()), mid)
    assert np.allclose(engine.shown(clock.now() + 0.01), b + 0.01 * (mid - b))
    clock.sleep(0.03)
    late = cam.get_image()
    assert not np.array_equal(early, late)


def test_saturated_and_dark_readouts_are_flagged():
    net = lattice()
    slm, cam = rig(net, imperfections=None, bitdepth=8)
    machine = OpticalXYMachine(net, slm, cam, topology(net))
    params = net.init_params(np.random.default_rng(0))
    assert machine.equilibrate(params, np.zeros((1, 2))).converged.all()
    cam.set_exposure(0.05)  # 50x the light: spots clip at the camera's full scale
    assert not machine.equilibrate(params, np.zeros((1, 2))).converged.any()


def test_imperfections_switch_off():
    none = Imperfections.none()
    assert all(not v for k, v in none.model_dump().items() if k != "settle_factor") and none.settle_factor == 1
    net = lattice()
    slm, _ = rig(net)
    assert np.all(slm.engine.truth.path_offsets == 0) and np.all(slm.engine.truth.tile_gain == 1)
    slm2, _ = rig(net, imperfections=None)
    assert np.std(slm2.engine.truth.path_offsets) > 0.1


def test_rig_yaml_opens_an_optical_machine_and_closes_it():
    cfg = simulated_rig()
    net = lattice()
    with open_optical_machine(cfg, net) as machine:
        assert isinstance(machine, OpticalXYMachine) and machine.layout.n_tiles > net.n_couplings
    too_big = square_lattice(12, 12, 2, 1, skip_length=2)
    with pytest.raises(DeviceError, match="tiles"):
        with open_optical_machine(cfg, too_big):
            pass


def test_rig_check_cli(tmp_path, capsys):
    assert main(["rig", "check", str(ROOT / "experiments" / "rigs" / "simulated.yaml")]) == 0
    assert '"bitdepth": 12' in capsys.readouterr().out
    bad = yaml.safe_load((ROOT / "experiments" / "rigs" / "simulated.yaml").read_text())
    bad["slm"]["class"] = "evilpkg.Laser"
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["rig", "check", str(path)]) == 1
    assert "not trusted" in capsys.readouterr().err
    bad["topology"] = {"n_spins": 2}
    path.write_text(yaml.safe_dump(bad))
    assert main(["rig", "check", str(path)]) == 2
    assert "topology" in capsys.readouterr().err


def test_train_through_the_simulated_rig(tmp_path):
    cfg = yaml.safe_load((ROOT / "experiments" / "xor_lattice_skip_rig.yaml").read_text())
    cfg.update(epochs=2, eval_every=1)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["train", str(path), "--machine", "simulated", "--out", str(out), "--quiet"]) == 0
    assert load_rig(out / "rig.yaml").name == "simulated-xy-rig"
    assert (out / "summary.json").exists()
    cfg["ep"]["cost"] = "log_cosine"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--machine", "simulated", "--out", str(tmp_path / "no")]) == 2
    assert not (tmp_path / "no").exists()
