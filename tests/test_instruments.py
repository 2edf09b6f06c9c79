"""Lab instruments against their simulated twins: the laser over pyvisa (pyvisa-sim YAML)."""

import logging
from pathlib import Path

import pytest
import yaml

from drivers.laser import SIMULATED, LaserController, LaserError, LaserLimitError
from xyoptics.core.schema import ConfigError
from xyoptics.hil.site import SiteConfig, load_site, site_path

TWIN = Path(SIMULATED.removesuffix("@sim"))


def twin(tmp_path, max_reply="2000.000", power_reply=None) -> str:
    """A pyvisa-sim backend like the bundled twin whose ``POW:MAX?`` answers ``max_reply`` (None: the query is
    unknown, so the laser reports no maximum) and, with ``power_reply``, whose ``POW?`` always answers that."""
    spec = yaml.safe_load(TWIN.read_text())
    device = spec["devices"]["laser"]
    device["dialogues"] = [d for d in device["dialogues"] if d["q"] != "POW:MAX?"]
    if max_reply is not None:
        device["dialogues"].append({"q": "POW:MAX?", "r": max_reply})
    if power_reply is not None:
        device["properties"]["power"]["getter"]["q"] = "POW:SET?"
        device["dialogues"].append({"q": "POW?", "r": power_reply})
    path = tmp_path / f"laser-{max_reply}-{power_reply}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return f"{path}@sim"


@pytest.fixture
def no_site(tmp_path, monkeypatch):
    """No site file anywhere: $XYOPTICS_SITE unset, HOME and XDG_CONFIG_HOME in empty temporary folders; returns
    the default location."""
    monkeypatch.delenv("XYOPTICS_SITE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "xyoptics" / "site.yaml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def sent(caplog) -> list[str]:
    """Every message the simulated instruments received (pyvisa-sim logs them at DEBUG)."""
    return [r.getMessage() for r in caplog.records if "Writing into device input buffer" in r.getMessage()]


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
    received = sent(caplog)
    assert any("POW 10.000" in m for m in received)
    assert not any("150" in m or "-1" in m for m in received)
    assert laser.power_mw == pytest.approx(10.0)


def test_instrument_side_refusal_and_bad_resources(tmp_path):
    site = SiteConfig(laser_max_power_mw=5000.0)
    with LaserController("ASRL1::INSTR", max_power_mw=5000.0, backend=twin(tmp_path, max_reply=None),
                         site=site) as laser:
        with pytest.raises(LaserError, match="refused"):
            laser.set_power(3000.0)  # beyond what the controller itself accepts (2000 mW)
    with pytest.raises(LaserError, match="is a laser there"):
        LaserController("ASRL9::INSTR", max_power_mw=10.0, backend=SIMULATED)  # nothing answers there
    with pytest.raises(LaserError, match="positive"):
        LaserController("ASRL1::INSTR", max_power_mw=0.0, backend=SIMULATED)


def test_session_instruments_are_left_safe_even_on_error():
    from drivers.instruments import open_instruments
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


# -- the site safety file and the effective limit --------------------------------------------------------------
def test_site_file_precedence_explicit_then_env_then_default(tmp_path, monkeypatch, no_site):
    assert site_path() is None and load_site() is None  # no default file: no site file
    explicit = write(tmp_path / "explicit.yaml", "laser_max_power_mw: 10\n")
    env = write(tmp_path / "env.yaml", "laser_max_power_mw: 20\n")
    write(no_site, "laser_max_power_mw: 30\nlasers: {'ASRL1::INSTR': 25}\n")
    home = write(tmp_path / "home" / ".config" / "xyoptics" / "site.yaml", "laser_max_power_mw: 40\n")
    assert site_path() == no_site
    site = load_site()
    assert site.path == no_site.resolve()
    assert site.laser_limit("ASRL1::INSTR") == 25.0 and site.laser_limit("ASRL2::INSTR") == 30.0
    monkeypatch.setenv("XYOPTICS_SITE", str(env))
    assert load_site().laser_max_power_mw == 20.0
    assert load_site(explicit).laser_max_power_mw == 10.0 and site_path(str(explicit)) == explicit
    monkeypatch.delenv("XYOPTICS_SITE")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert site_path() == home
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # not absolute: ignored, as the XDG spec says
    assert site_path() == home
    with pytest.raises(ConfigError, match=f"{tmp_path / 'nope.yaml'} \\(from --site\\) does not exist"):
        load_site(tmp_path / "nope.yaml")
    monkeypatch.setenv("XYOPTICS_SITE", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match="gone.yaml \\(from \\$XYOPTICS_SITE\\) does not exist"):
        load_site()  # a named file that is missing is never read as "no site file"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_site(tmp_path / "nope.yaml")  # the explicit one still wins


@pytest.mark.parametrize("text, field", [
    ("laser_max_power_mw: .inf", "laser_max_power_mw: Input should be a finite number"),
    ("laser_max_power_mw: .nan", "laser_max_power_mw: Input should be a finite number"),
    ("laser_max_power_mw: 0", "laser_max_power_mw: Input should be greater than 0"),
    ("laser_max_power_mw: -5", "laser_max_power_mw: Input should be greater than 0"),
    ("laser_max_power_mw: '100'", "laser_max_power_mw: Input should be a valid number"),
    ("{}", "laser_max_power_mw: Field required"),
    ("laser_max_power_mw: 100\nlasers: {'ASRL1::INSTR': .inf}", "lasers.ASRL1::INSTR: Input should be a finite"),
    ("laser_max_power_mw: 100\nlasers: {'ASRL1::INSTR': 150}", "may only lower the site's"),
    ("laser_max_power_mw: 100\nmax_power_mw: 500", "max_power_mw: Extra inputs are not permitted"),
])
def test_site_file_refuses_limits_that_are_not_finite_and_positive(tmp_path, no_site, text, field):
    path = write(tmp_path / "site.yaml", text + "\n")
    with pytest.raises(ConfigError, match="invalid site safety file") as err:
        load_site(path)
    assert field in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("value, message", [(".inf", "finite"), (".nan", "finite"), ("0", "greater than 0"),
                                            ("-1", "greater than 0")])
def test_rig_file_refuses_limits_that_are_not_finite_and_positive(tmp_path, value, message):
    from xyoptics.hil.rig import EXAMPLES, load_rig

    rig = yaml.safe_load((EXAMPLES / "simulated.yaml").read_text())
    for field in ("max_power_mw", "power_mw"):
        laser = {"resource": "ASRL1::INSTR", "backend": "sim", "power_mw": 50.0, "max_power_mw": 100.0}
        path = tmp_path / f"{field}.yaml"
        path.write_text(yaml.safe_dump(rig | {"laser": laser}).replace(f" {field}: {laser[field]}",
                                                                        f" {field}: {value}"))
        with pytest.raises(ConfigError, match=f"laser.{field}: .*{message}"):
            load_rig(path)
    rig["laser"] = {"resource": "ASRL1::INSTR", "backend": "sim", "power_mw": 50.0}
    (tmp_path / "no-max.yaml").write_text(yaml.safe_dump(rig))
    assert load_rig(tmp_path / "no-max.yaml").laser.max_power_mw is None  # the rig file may leave it out


@pytest.mark.parametrize("site, rig, reported, limit, source", [
    (80.0, 90.0, "2000.000", 80.0, "site"),
    (500.0, 90.0, "2000.000", 90.0, "rig"),
    (500.0, None, "70.000", 70.0, "instrument"),
    (None, 900.0, "70.000", 70.0, "instrument"),  # no site file: the instrument's own maximum still applies
    (None, 60.0, "70.000", 60.0, "rig"),
])
def test_the_limit_is_the_smallest_of_site_instrument_and_rig(tmp_path, caplog, site, rig, reported, limit,
                                                                source):
    caplog.set_level(logging.DEBUG, logger="pyvisa")
    site = None if site is None else SiteConfig(laser_max_power_mw=site)
    with LaserController("ASRL1::INSTR", rig, backend=twin(tmp_path, max_reply=reported), site=site) as laser:
        assert (laser.max_power_mw, laser.limit_source) == (limit, source)
        with pytest.raises(LaserError, match=f"outside \\[0, {limit}\\] mW allowed by the {source} limit"):
            laser.set_power(limit + 0.01)
        laser.set_power(limit)
        assert laser.power_mw == pytest.approx(limit)
    received = sent(caplog)
    assert any(f"POW {limit:.3f}" in m for m in received)
    assert not any(f"POW {limit + 0.01:.3f}" in m for m in received)  # refused before it was sent


def test_a_per_laser_site_limit_applies_to_its_resource_only(tmp_path):
    site = SiteConfig(laser_max_power_mw=100.0, lasers={"ASRL1::INSTR": 30.0})
    with LaserController("ASRL1::INSTR", backend=SIMULATED, site=site) as laser:
        assert laser.limits == {"site": 30.0, "instrument": 2000.0} and laser.max_power_mw == 30.0
    with LaserController("TCPIP0::127.0.0.1::5025::INSTR", backend=SIMULATED, site=site) as laser:
        assert laser.max_power_mw == 100.0


def test_a_laser_without_a_reported_maximum_needs_a_site_file(tmp_path, no_site):
    backend = twin(tmp_path, max_reply=None)
    with pytest.raises(LaserLimitError, match="reports no maximum power and there is no site safety file") as err:
        LaserController("ASRL1::INSTR", 100.0, backend=backend)  # a rig file's limit alone is not enough
    assert f"create {no_site}" in str(err.value) and "--site FILE" in str(err.value)
    assert isinstance(err.value, ConfigError)  # the CLI reports it as a configuration error (exit 2)
    with LaserController("ASRL1::INSTR", backend=backend, site=SiteConfig(laser_max_power_mw=40.0)) as laser:
        assert laser.limits == {"site": 40.0} and laser.max_power_mw == 40.0


@pytest.mark.parametrize("reply", ["inf", "nan", "0", "-3", "lots"])
def test_an_unusable_reported_maximum_is_refused(tmp_path, reply):
    with pytest.raises(LaserLimitError, match="from the instrument"):
        LaserController("ASRL1::INSTR", 50.0, backend=twin(tmp_path, max_reply=reply),
                        site=SiteConfig(laser_max_power_mw=100.0))


def test_a_power_that_does_not_read_back_is_refused_before_the_output_goes_on(tmp_path, caplog):
    from drivers.instruments import open_instruments
    from xyoptics.hil.rig import LaserConfig

    caplog.set_level(logging.DEBUG, logger="pyvisa")
    backend = twin(tmp_path, power_reply="1.000")  # the controller claims 1 mW whatever it was set to
    config = LaserConfig(resource="ASRL1::INSTR", backend=backend, power_mw=50.0)
    with pytest.raises(LaserError, match="reads 1.0 mW after being set to 50.0 mW"):
        with open_instruments(config):
            pass
    received = sent(caplog)
    assert any("POW 50.000" in m for m in received) and any("OUTP 0" in m for m in received)  # parked
    assert not any("OUTP 1" in m for m in received)
    with LaserController("ASRL1::INSTR", backend=twin(tmp_path, power_reply="50.900")) as laser:
        laser.set_power(50.0)  # 1.8 % off: within POWER_TOLERANCE
        with pytest.raises(LaserError, match="reads 50.9 mW"):
            laser.set_power(49.0)  # 3.9 % off


def test_the_snapshot_reports_each_limit_and_where_it_came_from(tmp_path, no_site):
    from drivers.instruments import open_instruments
    from xyoptics.hil.rig import LaserConfig

    site = load_site(write(tmp_path / "site.yaml", "laser_max_power_mw: 75\n"))
    config = LaserConfig(resource="ASRL1::INSTR", backend="sim", power_mw=50.0, max_power_mw=90.0)
    with open_instruments(config, site=site) as instruments:
        laser = instruments.snapshot()["laser"]
    assert laser["max_power_mw"] == 75.0 and laser["limit_from"] == "site"
    assert laser["limits_mw"] == {"site": 75.0, "instrument": 2000.0, "rig": 90.0}
    assert laser["site_file"] == str((tmp_path / "site.yaml").resolve())
    with open_instruments(LaserConfig(resource="ASRL1::INSTR", backend="sim", power_mw=50.0)) as instruments:
        laser = instruments.snapshot()["laser"]  # no site file, no rig maximum: the twin's own 2000 mW
    assert (laser["max_power_mw"], laser["limit_from"], laser["site_file"]) == (2000.0, "instrument", None)
