"""Lab instruments against their simulated twins: the laser over pyvisa (pyvisa-sim YAML)."""

import logging

import pytest

from drivers.laser import SIMULATED, LaserController, LaserError


@pytest.fixture
def laser():
    with LaserController("ASRL1::INSTR", max_power_mw=100.0, backend=SIMULATED) as controller:
        yield controller


def test_laser_identifies_sets_and_reads(laser):
    assert laser.identity == "XYOPTICS,SIMULATED-LASER,0,1.0"
    laser.set_power(42.5)
    laser.output(True)
    assert laser.power_mw == pytest.approx(42.5) and laser.output_on
    laser.output(False)
    assert not laser.output_on


def test_rig_maximum_is_enforced_before_anything_is_sent(laser, caplog):
    """The simulated instrument's own log (pyvisa-sim, at DEBUG) shows every message it received."""
    caplog.set_level(logging.DEBUG, logger="pyvisa")
    laser.set_power(10.0)
    with pytest.raises(LaserError, match="outside \\[0, 100.0\\] mW"):
        laser.set_power(150.0)
    with pytest.raises(LaserError, match="outside"):
        laser.set_power(-1.0)
    received = [r.getMessage() for r in caplog.records if "Writing into device input buffer" in r.getMessage()]
    assert any("POW 10.000" in m for m in received)
    assert not any("150" in m or "-1" in m for m in received)
    assert laser.power_mw == pytest.approx(10.0)


def test_instrument_side_refusal_and_bad_resources():
    with LaserController("ASRL1::INSTR", max_power_mw=5000.0, backend=SIMULATED) as laser:
        with pytest.raises(LaserError, match="refused"):
            laser.set_power(3000.0)  # beyond what the controller itself accepts (2000 mW)
    with pytest.raises(LaserError, match="is a laser there"):
        LaserController("ASRL9::INSTR", max_power_mw=10.0, backend=SIMULATED)  # nothing answers there
    with pytest.raises(LaserError, match="positive"):
        LaserController("ASRL1::INSTR", max_power_mw=0.0, backend=SIMULATED)


def test_session_instruments_are_left_safe_even_on_error():
    from drivers.instruments import open_instruments
    from drivers.shutter import SerialShutter
    from xyoptics.hil.rig import LaserConfig

    config = LaserConfig(resource="ASRL1::INSTR", backend="sim", power_mw=50.0, max_power_mw=100.0)
    with LaserController("ASRL1::INSTR", max_power_mw=100.0, backend=SIMULATED) as observer:  # keeps sim state
        with pytest.raises(KeyboardInterrupt):
            with open_instruments(config, "xyshutter://instrument-test") as instruments:
                assert observer.output_on and observer.power_mw == pytest.approx(50.0)
                assert instruments.shutter.is_open
                raise KeyboardInterrupt
        assert not observer.output_on  # switched off on the way out


def test_laser_config_refuses_power_above_the_rig_limit():
    from pydantic import ValidationError

    from xyoptics.hil.rig import LaserConfig

    with pytest.raises(ValidationError, match="exceeds max_power_mw"):
        LaserConfig(resource="ASRL1::INSTR", power_mw=150.0, max_power_mw=100.0)
