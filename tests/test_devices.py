"""Rig devices from YAML: unmodified slmsuite simulated SLM + camera, trust rules, cleanup on failure."""

import json
import sys

import pytest
import yaml

from xyoptics.hil.devices import DeviceError, DeviceSpec, check_rig_devices, describe, open_devices

SLM_CLS = "slmsuite.hardware.slms.simulated.SimulatedSLM"
CAM_CLS = "slmsuite.hardware.cameras.simulated.SimulatedCamera"

RIG = f"""
slm:
  class: {SLM_CLS}
  kwargs:
    resolution: [160, 120]
camera:
  class: {CAM_CLS}
  kwargs:
    slm: "@slm"
"""


def load_rig(tmp_path, text=RIG):
    path = tmp_path / "rig.yaml"
    path.write_text(text)
    raw = yaml.safe_load(path.read_text())
    return DeviceSpec.model_validate(raw["slm"]), DeviceSpec.model_validate(raw["camera"])


@pytest.fixture
def closes(monkeypatch):
    """Record explicit close() calls on the slmsuite simulated classes (they are otherwise no-ops).

    slmsuite devices also close themselves in ``__del__``; those calls are not recorded.
    """
    from slmsuite.hardware.cameras.simulated import SimulatedCamera
    from slmsuite.hardware.slms.simulated import SimulatedSLM

    calls = []
    for klass, role in ((SimulatedSLM, "slm"), (SimulatedCamera, "camera")):
        original = klass.close

        def close(self, _original=original, _role=role):
            if sys._getframe(1).f_code.co_name != "__del__":
                calls.append((_role, id(self)))
            return _original(self)

        monkeypatch.setattr(klass, "close", close)
    return calls


def test_spec_alias_and_validation():
    spec = DeviceSpec.model_validate({"class": SLM_CLS, "kwargs": {"resolution": [8, 8]}})
    assert spec.cls == SLM_CLS and spec.kwargs == {"resolution": [8, 8]}
    assert DeviceSpec(cls=SLM_CLS).kwargs == {}
    for bad in ("SimulatedSLM", "pkg..Thing", "pkg.Thing.", "1pkg.Thing"):
        with pytest.raises(ValueError, match="dotted path"):
            DeviceSpec.model_validate({"class": bad})
    with pytest.raises(ValueError, match="extra"):
        DeviceSpec.model_validate({"class": SLM_CLS, "kwarg": {}})


def test_simulated_pair_from_yaml(tmp_path, closes):
    slm_spec, cam_spec = load_rig(tmp_path)
    with open_devices(slm_spec, cam_spec) as (slm, camera):
        assert camera._slm is slm  # "@slm" was replaced by the built SLM
        info = describe(slm, camera)
        mine = {id(slm), id(camera)}
        assert [c for c in closes if c[1] in mine] == []
    # closed once each, camera first (reverse order of opening)
    assert [c for c in closes if c[1] in mine] == [("camera", id(camera)), ("slm", id(slm))]
    json.dumps(info)
    assert info["slm"]["class"] == SLM_CLS and info["camera"]["class"] == CAM_CLS
    assert info["slm"]["resolution"] == [160, 120] and info["slm"]["shape"] == [120, 160]
    assert info["camera"]["resolution"] == [160, 120]
    assert info["slm"]["pitch_um"] == [8.0, 8.0] and info["slm"]["settle_time_s"] == 0.0
    assert info["camera"]["exposure_bounds_s"] is None and info["camera"]["exposure_s"] == 1.0


def test_check_rig_devices(tmp_path, closes):
    report = check_rig_devices(*load_rig(tmp_path))
    json.dumps(report)
    assert report["slm"]["resolution"] == [160, 120] and report["slm"]["bitdepth"] == 8
    assert report["camera"]["bitdepth"] == 8
    frame = report["frame"]
    assert frame["shape"] == [120, 160] and frame["dtype"] == "uint8"
    assert 0 <= frame["min"] <= frame["max"] <= 255 and frame["saturation_level"] == 255
    assert frame["saturated"] == (frame["max"] == 255)
    assert report["slm_zero_phase"] == {"ok": True, "error": None}
    assert sorted(role for role, _ in closes) == ["camera", "slm"]


def test_untrusted_module_is_not_imported():
    assert "evilpkg" not in sys.modules
    with pytest.raises(DeviceError, match=r"slm evilpkg\.Thing: module not trusted: add --trust evilpkg"):
        check_rig_devices(DeviceSpec(cls="evilpkg.Thing"), DeviceSpec(cls=CAM_CLS))
    assert "evilpkg" not in sys.modules
    with pytest.raises(DeviceError, match="camera subprocess.Popen: module not trusted"):
        slm = DeviceSpec(cls=SLM_CLS, kwargs={"resolution": [128, 128]})
        with open_devices(slm, DeviceSpec(cls="subprocess.Popen")):
            pass


def test_prefix_needs_a_dot_boundary(tmp_path, monkeypatch):
    (tmp_path / "driversevil.py").write_text("raise RuntimeError('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DeviceError, match="not trusted"):
        with open_devices(DeviceSpec(cls="driversevil.SLM"), DeviceSpec(cls=CAM_CLS)):
            pass
    assert "driversevil" not in sys.modules


def test_wrong_base_class_and_missing_class():
    cam = DeviceSpec(cls=CAM_CLS, kwargs={"slm": "@slm"})
    with pytest.raises(DeviceError, match=f"slm {CAM_CLS}: not an slmsuite SLM subclass"):
        with open_devices(DeviceSpec(cls=CAM_CLS), cam):
            pass
    with pytest.raises(DeviceError, match=f"camera {SLM_CLS}: not an slmsuite Camera subclass"):
        with open_devices(DeviceSpec(cls=SLM_CLS), DeviceSpec(cls=SLM_CLS)):
            pass
    with pytest.raises(DeviceError, match="no class NoSuchSLM in module slmsuite.hardware.slms.simulated"):
        with open_devices(DeviceSpec(cls="slmsuite.hardware.slms.simulated.NoSuchSLM"), cam):
            pass
    with pytest.raises(DeviceError, match="cannot import slmsuite.hardware.nosuchmodule"):
        with open_devices(DeviceSpec(cls="slmsuite.hardware.nosuchmodule.SLM"), cam):
            pass


def test_camera_constructor_error_closes_slm(tmp_path, closes):
    slm_spec, _ = load_rig(tmp_path)
    bad_cam = DeviceSpec(cls=CAM_CLS, kwargs={"slm": "@slm", "capture_attempts": 0})
    with pytest.raises(DeviceError, match=f"camera {CAM_CLS}: constructing {CAM_CLS} failed: "
                                          "ValueError: capture_attempts must be positive"):
        with open_devices(slm_spec, bad_cam):
            pytest.fail("body must not run")
    assert [role for role, _ in closes if role == "slm"] == ["slm"]


def test_error_in_body_closes_both_and_close_errors_do_not_mask(tmp_path, monkeypatch, caplog):
    from slmsuite.hardware.slms.simulated import SimulatedSLM

    def broken_close(self):
        raise OSError("usb gone")

    monkeypatch.setattr(SimulatedSLM, "close", broken_close)
    with pytest.raises(KeyboardInterrupt):
        with open_devices(*load_rig(tmp_path)):
            raise KeyboardInterrupt
    assert "closing slm SimulatedSLM failed" in caplog.text


def test_unknown_reference(tmp_path):
    slm_spec, _ = load_rig(tmp_path)
    with pytest.raises(DeviceError, match=r"kwargs.slm: unknown reference '@camera' \(available: @slm\)"):
        with open_devices(slm_spec, DeviceSpec(cls=CAM_CLS, kwargs={"slm": "@camera"})):
            pass


def test_extra_trusted_prefix(tmp_path, monkeypatch, closes):
    pkg = tmp_path / "mytests"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "rig.py").write_text(
        "from slmsuite.hardware.slms.simulated import SimulatedSLM\n\n\n"
        "class LabSLM(SimulatedSLM):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mytests", raising=False)
    monkeypatch.delitem(sys.modules, "mytests.rig", raising=False)
    slm_spec = DeviceSpec(cls="mytests.rig.LabSLM", kwargs={"resolution": [128, 128]})
    cam_spec = DeviceSpec(cls=CAM_CLS, kwargs={"slm": "@slm"})
    with pytest.raises(DeviceError, match="module not trusted: add --trust mytests.rig"):
        check_rig_devices(slm_spec, cam_spec)
    assert "mytests.rig" not in sys.modules
    report = check_rig_devices(slm_spec, cam_spec, trusted=("mytests.",))
    assert report["slm"]["class"] == "mytests.rig.LabSLM" and report["frame"]["shape"] == [128, 128]
    assert check_rig_devices(slm_spec, cam_spec, trusted="mytests")["slm"]["name"] == "LabSLM"
