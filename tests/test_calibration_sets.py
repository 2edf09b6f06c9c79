"""A run's calibration set is whole or refused (calibration.selection): missing, truncated, edited files and
changed dependencies are refused naming the file and what to re-run; a partial set leaves out the problem kinds
and everything depending on them."""

import json

import numpy as np
import pytest

from calibration.runner import PROCEDURES
from calibration.selection import choose_set
from calibration.store import CalibrationStore, Hardware
from xyoptics.config import ConfigError

HW = Hardware("bench", "slm.Class", "slm", (64, 32), 8, "cam.Class", "cam", (40, 30), 12)
KINDS = {k: p.depends_on for k, p in PROCEDURES.items()}


@pytest.fixture
def folder(tmp_path):
    """A whole set: every procedure once, each saved with the dependencies the runner gives it."""
    store = CalibrationStore(tmp_path / "cal")
    saved = {}
    for kind, deps in KINDS.items():
        path = store.save(kind, {"x": np.arange(4.0)}, {}, HW, depends_on={d: saved[d] for d in deps} or None)
        saved[kind] = store.load(path)
    return store.root


def test_a_whole_set_is_chosen(folder):
    chosen = choose_set(folder, "bench", KINDS)
    assert set(chosen.records) == set(KINDS) and chosen.left_out == {}


@pytest.mark.parametrize("damage, kind, message", [
    (lambda f: (f / "transfer-00001.h5").write_bytes((f / "transfer-00001.h5").read_bytes()[:2000]), "transfer",
     "transfer-00001.h5 changed since it was saved"),
    (lambda f: (f / "spot_map-00001.h5").unlink(), "spot_map", "spot_map-00001.h5 is missing"),
    (lambda f: (f / "index.json").write_text(json.dumps(
        [e for e in json.loads((f / "index.json").read_text()) if e["kind"] != "dark"])), "dark", "no dark")])
def test_a_damaged_set_is_refused_naming_the_file_and_what_to_rerun(folder, damage, kind, message):
    damage(folder)
    with pytest.raises(ConfigError, match=message) as err:
        choose_set(folder, "bench", KINDS)
    assert "re-run: xyoptics calibrate RIG --out" in str(err.value) and f"--only {kind}" in str(err.value)


def test_a_partial_set_leaves_out_every_result_depending_on_a_missing_one(folder):
    (folder / "spot_map-00001.h5").unlink()
    chosen = choose_set(folder, "bench", KINDS, allow_partial=True)
    assert set(chosen.left_out) == {"spot_map", "path_offsets", "transfer"}
    assert "depends on spot_map" in chosen.left_out["path_offsets"]
    assert set(chosen.records) == {"dark", "settle", "gray_phase"}


def test_a_result_measured_with_another_dependency_is_refused(folder):
    store = CalibrationStore(folder)
    store.save("gray_phase", {"x": np.ones(4)}, {}, HW)  # newer lookup table: path_offsets used the old one
    with pytest.raises(ConfigError, match="path_offsets-00001.h5 was measured with gray_phase-00001.h5, but the "
                                          "set's gray_phase is gray_phase-00002.h5"):
        choose_set(folder, "bench", KINDS)


def test_other_rigs_and_missing_folders(folder, tmp_path):
    with pytest.raises(ConfigError, match="no dark calibration of rig 'other'"):
        choose_set(folder, "other", KINDS)
    with pytest.raises(ConfigError, match="does not exist"):
        choose_set(tmp_path / "nowhere", "bench", KINDS)
    (folder / "index.json").write_text("{not json")
    with pytest.raises(ConfigError, match="index .* is corrupt"):
        choose_set(folder, "bench", KINDS)
