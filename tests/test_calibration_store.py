"""Calibration store: round trip, serials, checksums, hardware compatibility, staleness, references, atomicity."""

import hashlib
import warnings
from datetime import datetime, timedelta, timezone

import h5py
import numpy as np
import pytest

from calibration import store as store_mod
from calibration.store import CalibrationError, CalibrationStore, CalibrationWarning, Hardware, StaleCalibrationWarning

HW = Hardware("bench1", "slmsuite.hardware.slms.meadowlark.Meadowlark", "ml", (1920, 1152), 8,
              "slmsuite.hardware.cameras.thorlabs.ThorCam", "cam", (1440, 1080), 12, wavelength_nm=1064.0)
SMALL_SLM = Hardware("bench1", HW.slm_class, "ml", (1024, 768), 10, HW.camera_class, "cam", (1440, 1080), 12,
                     wavelength_nm=1064.0)


@pytest.fixture
def store(tmp_path):
    return CalibrationStore(tmp_path / "cal")


@pytest.fixture
def clock(monkeypatch):
    """Controls creation times: each save gets the next minute after 2024-01-01 UTC."""
    t = [datetime(2024, 1, 1, tzinfo=timezone.utc)]

    def now():
        t[0] += timedelta(minutes=1)
        return t[0]
    monkeypatch.setattr(store_mod, "_now", now)
    return t


def arrays(rng=np.random.default_rng(0)):
    return {"lut": rng.uniform(0, 2 * np.pi, (256,)), "centres": rng.normal(size=(5, 2)).astype(np.float32),
            "mask": np.array([[True, False], [False, True]]), "count": np.array(7, dtype=np.int64)}


def test_round_trip(store, clock):
    a = arrays()
    path = store.save("gray_phase", a, {"rms_rad": 0.05, "n": 3}, HW)
    assert path.name == "gray_phase-00001.h5"
    rec = store.load(path, HW)
    assert rec.kind == "gray_phase" and rec.hardware == HW and rec.path == path
    assert set(rec.arrays) == set(a)
    for k in a:
        np.testing.assert_array_equal(rec.arrays[k], a[k])
        assert rec.arrays[k].dtype == a[k].dtype and rec.arrays[k].shape == a[k].shape
    assert rec.quality == {"rms_rad": 0.05, "n": 3.0}
    assert rec.created == "2024-01-01T00:01:00+00:00"
    assert rec.software_version and rec.depends_on == {}
    assert rec.checksums["lut"] == hashlib.sha256(a["lut"].tobytes()).hexdigest()
    with h5py.File(path) as f:
        assert f.attrs["format_version"] == store_mod.FORMAT_VERSION
        assert f.attrs["kind"] == "gray_phase"
        assert '"centres": [5, 2]' in f.attrs["shapes"]
    assert Hardware.from_dict(HW.to_dict()) == HW


def test_from_devices_reads_slmsuite_attributes():
    class FakeSLM:
        name, bitdepth, shape = "sim", 10, (768, 1024)  # no .resolution: taken from shape (h, w)

    class FakeCam:
        name, bitdepth, resolution = "simcam", 12, (640, 480)
    hw = Hardware.from_devices("bench1", FakeSLM(), FakeCam(), wavelength_nm=532)
    assert hw.slm_resolution == (1024, 768) and hw.slm_bitdepth == 10 and hw.slm_name == "sim"
    assert hw.slm_class == f"{__name__}.test_from_devices_reads_slmsuite_attributes.<locals>.FakeSLM"
    assert hw.camera_resolution == (640, 480) and hw.camera_bitdepth == 12 and hw.wavelength_nm == 532.0
    assert Hardware.from_dict(hw.to_dict()) == hw


def test_serials_and_latest(store, clock):
    assert store.latest("dark") is None
    paths = [store.save("dark", {"d": np.full(3, i)}, {}, HW) for i in range(3)]
    store.save("spot_map", {"c": np.zeros(2)}, {}, HW)
    assert [p.name for p in paths] == ["dark-00001.h5", "dark-00002.h5", "dark-00003.h5"]
    assert store.files("dark") == paths
    rec = store.latest("dark", HW)
    assert rec.path == paths[-1] and rec.arrays["d"].tolist() == [2, 2, 2]
    paths[1].unlink()  # a gap does not reuse a serial below the highest
    assert store.save("dark", {"d": np.zeros(1)}, {}, HW).name == "dark-00004.h5"
    assert not list(store.root.glob(".*"))  # no temporary files left behind


def test_corrupt_file_detected(store, clock):
    good = store.save("transfer", {"t": np.arange(10.0)}, {}, HW)
    bad = store.save("transfer", {"t": np.arange(10.0)}, {}, HW)
    with h5py.File(bad, "r+") as f:
        f["arrays/t"][3] = -1.0
    with pytest.raises(CalibrationError, match=r"array t of transfer-00002.h5 fails its checksum: file corrupt"):
        store.load(bad)
    with pytest.warns(CalibrationWarning, match="skipping transfer-00002.h5"):
        assert store.latest("transfer", HW).path == good
    (store.root / "transfer-00003.h5").write_bytes(b"not hdf5")
    with pytest.raises(CalibrationError, match="transfer-00003.h5 is not a readable calibration file"):
        store.load(store.root / "transfer-00003.h5")


def test_hardware_mismatch_refused(store, clock):
    path = store.save("spot_map", {"c": np.zeros((4, 2))}, {}, HW)
    assert path.name == "spot_map-00001.h5"
    msg = "spot_map-00001.h5 was made for a 1920x1152 8-bit SLM, but the connected SLM is 1024x768 10-bit"
    with pytest.raises(CalibrationError, match=msg):
        store.load(path, SMALL_SLM)
    other = Hardware("bench2", HW.slm_class, "ml", (1920, 1152), 8, HW.camera_class, "cam", (1280, 1024), 12)
    with pytest.raises(CalibrationError) as e:
        store.load(path, other)
    assert "rig 'bench1', but this is rig 'bench2'" in str(e.value)
    assert "1440x1080 12-bit camera, but the connected camera is 1280x1024 12-bit" in str(e.value)

    store.save("spot_map", {"c": np.ones((4, 2))}, {}, SMALL_SLM)  # newest, but for the other SLM
    with pytest.warns(CalibrationWarning, match="skipping spot_map-00002.h5: .*1024x768 10-bit SLM"):
        assert store.latest("spot_map", HW).path == path
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the newest matches: older files are not even opened
        assert store.latest("spot_map", SMALL_SLM).path.name == "spot_map-00002.h5"


def test_renamed_driver_class_only_warns(store, clock):
    path = store.save("dark", {"d": np.zeros(2)}, {}, HW)
    renamed = Hardware(**{**HW.to_dict(), "slm_class": "drivers.meadowlark.Meadowlark"})
    with pytest.warns(CalibrationWarning, match="slm_class was"):
        assert store.load(path, renamed).kind == "dark"


def test_stale_dependency_warns(store, clock):
    gray = store.load(store.save("gray_phase", {"lut": np.zeros(4)}, {}, HW))
    offsets = store.save("path_offsets", {"o": np.zeros(3)}, {}, HW, depends_on={"gray_phase": gray})
    assert store.load(offsets).depends_on == {"gray_phase": "gray_phase-00001.h5"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = store.latest_set(["path_offsets", "gray_phase"], HW)
    assert set(got) == {"path_offsets", "gray_phase"}

    store.save("gray_phase", {"lut": np.ones(4)}, {}, HW)  # a newer gray-phase calibration
    with pytest.warns(StaleCalibrationWarning, match="path_offsets-00001.h5 is older than gray_phase-00002.h5 "
                                                     "it depends on; recalibrate path_offsets"):
        got = store.latest_set(["path_offsets"], HW)  # the dependency kind need not be requested
    assert set(got) == {"path_offsets"}

    # a dependency given by file name records that file's creation time as well
    again = store.save("path_offsets", {"o": np.ones(3)}, {}, HW, depends_on={"gray_phase": "gray_phase-00002.h5"})
    assert store.load(again).depends_on_created == {"gray_phase": "2024-01-01T00:03:00+00:00"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.latest_set(["path_offsets", "gray_phase"], HW)


def test_references_checksum_whole_file(store, clock):
    recs = [store.load(store.save(k, {"x": np.arange(3)}, {}, HW)) for k in ("dark", "settle")]
    refs = CalibrationStore.references(recs)
    assert [r["kind"] for r in refs] == ["dark", "settle"]
    for rec, ref in zip(recs, refs):
        assert ref["path"] == str(rec.path) and ref["created"] == rec.created
        assert ref["sha256"] == hashlib.sha256(rec.path.read_bytes()).hexdigest()


def test_failed_save_leaves_no_file(store, clock, monkeypatch):
    store.save("dark", {"d": np.zeros(2)}, {}, HW)

    def boom(self, *a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(h5py.Group, "create_dataset", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        store.save("dark", {"d": np.ones(2)}, {}, HW)
    assert sorted(p.name for p in store.root.iterdir()) == ["dark-00001.h5", "index.json"]
    monkeypatch.undo()
    assert store.latest("dark", HW).path.name == "dark-00001.h5"
