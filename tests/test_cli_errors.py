"""Every user error of the command line is one ``error: ...`` line on stderr and exit code 2, never a traceback;
study help lists the studies; run files honour the umask."""

import ast
import hashlib
import os
import stat
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from calibration.runner import PROCEDURES
from calibration.store import CalibrationStore, Hardware
from xyoptics.cli import main
from xyoptics.core import files
from xyoptics.data.idx import MNIST_FILES, fetch_mnist, write_idx
from xyoptics.studies import STUDIES

ROOT = Path(__file__).resolve().parents[1]
RIG_CONFIG = ROOT / "experiments" / "xor_lattice_skip_rig.yaml"


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    return err


BAD_FILES = {  # name -> (content, or None for a folder; what the message says)
    "binary.bin": (bytes(range(256)) * 4, "not UTF-8 text (byte 0x80 at offset 128)"),
    "latin1.yaml": ("epochs: 3\nname: caf\xe9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 19)"),
    "nul.yaml": (b"epochs: 3\n\0\0\n", "character #x0000 at line 2, column 1"),
    "list.yaml": (b"- epochs: 3\n- seed: 0\n", "got a list"),
    "scalar.yaml": (b"42\n", "got a number"),
    "empty.yaml": (b"", "got an empty document"),
    "broken.yaml": (b"task: [xor\n", "not valid YAML: expected ',' or ']', but got '<stream end>' at line 2, column 1"),
    "folder.yaml": (None, "Is a directory"),
}


@pytest.mark.parametrize("command", ["train", "calibrate", "rig check"])
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_unusable_config_file_is_one_line(tmp_path, capsys, command, name):
    content, message = BAD_FILES[name]
    path = tmp_path / name
    path.mkdir() if content is None else path.write_bytes(content)
    out = tmp_path / "out"
    argv = {"train": ["train", str(path), "--out", str(out)],
            "calibrate": ["calibrate", "simulated", "--config", str(path), "--out", str(out), "--quiet"],
            "rig check": ["rig", "check", str(path)]}[command]
    assert main(argv) == 2
    err = one_error(capsys)
    assert message in err and str(path) in err
    assert not out.exists()


def test_unknown_calibration_procedure_names_the_valid_ones(tmp_path, capsys):
    out = tmp_path / "cal"
    assert main(["calibrate", "simulated", "--config", str(RIG_CONFIG), "--only", "dark", "bogus", "x",
                 "--out", str(out)]) == 2
    assert one_error(capsys) == ("error: unknown calibration procedures bogus, x for --only; choose from "
                                 + ", ".join(PROCEDURES) + "\n")
    assert not out.exists()


@pytest.mark.parametrize("base_url, url, reason", [
    ("http://mirror.example/mnist/", "http://mirror.example/mnist/train-images-idx3-ubyte.gz", "Connection refused"),
    ("mirror/", "mirror/train-images-idx3-ubyte.gz", "unknown url type"),  # fails before any connection
])
def test_offline_fetch_names_url_and_alternatives(tmp_path, capsys, monkeypatch, base_url, url, reason):
    def refuse(*args, **kw):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
    if base_url.startswith("http"):
        monkeypatch.setattr("urllib.request.urlopen", refuse)
    monkeypatch.setenv("XYOPTICS_DATA", str(tmp_path / "none"))  # no offline copy found: no "already finds"
    dest = tmp_path / "mnist"
    assert main(["data", "fetch", "mnist", "--dest", str(dest), "--base-url", base_url]) == 2
    err = one_error(capsys)
    assert err.startswith(f"error: fetching MNIST failed: cannot download {url}: {reason}")
    assert all(name in err for name in MNIST_FILES) and f"into {dest} by hand" in err
    assert "--base-url a local mirror" in err and "XYOPTICS_DATA" in err and "../shared/data/mnist/" in err
    assert "already finds" not in err and list(dest.iterdir()) == []


def test_study_help_lists_the_studies(capsys):
    lines = {name: " ".join(ast.get_docstring(ast.parse((ROOT / "xyoptics" / "studies" / f"{name}.py")
                                                        .read_text())).split("\n\n")[0].split())
             for name in STUDIES}
    for argv in (["study", "--help"], ["study", "-h"], ["study"]):
        if argv == ["study"]:
            assert main(argv) == 0
        else:
            with pytest.raises(SystemExit) as exc:
                main(argv)
            assert exc.value.code == 0
        out, err = capsys.readouterr()
        assert err == "" and out.startswith("usage: xyoptics study NAME CONFIG --out DIR")
        assert all(f"  {name:<12} {line}\n" in out for name, line in lines.items()), out
    with pytest.raises(SystemExit) as exc:
        main(["study", "xor_success", "--help"])  # the study's own help
    out, err = capsys.readouterr()
    assert exc.value.code == 0 and err == ""
    assert out.startswith("usage: xyoptics study xor_success") and "--workers" in out


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def test_written_files_honour_the_umask(tmp_path, umask_027):
    files.write_json_atomic(tmp_path / "a.json", {"x": 1})
    files.write_text_atomic(tmp_path / "a.txt", "x\n")
    files.write_arrays_h5(tmp_path / "a.h5", {"x": np.arange(3)})
    files.write_tree_h5(tmp_path / "t.h5", {"x": np.arange(3), "g": {"y": 1}})
    files.JsonlWriter(tmp_path / "m.jsonl").write({"x": 1})
    files.JsonlWriter(tmp_path / "m.jsonl", keep=1)  # rewritten atomically
    hw = Hardware("bench", "slm.Class", "slm", (8, 4), 8, "cam.Class", "cam", (8, 4), 8)
    CalibrationStore(tmp_path / "cal").save("dark", {"d": np.zeros(3)}, {}, hw)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    write_idx(mirror / "x-idx1-ubyte.gz", np.arange(4, dtype=np.uint8))
    md5 = hashlib.md5((mirror / "x-idx1-ubyte.gz").read_bytes()).hexdigest()
    fetch_mnist(tmp_path / "dl", base_url=mirror.as_uri() + "/", progress=False, checksums={"x-idx1-ubyte.gz": md5})
    written = [p for p in tmp_path.rglob("*") if p.is_file() and mirror not in p.parents]
    assert len(written) == 8 and not [p for p in written if p.name.startswith(".")]  # no temporary file left
    assert {p.relative_to(tmp_path).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == \
        {p.relative_to(tmp_path).as_posix(): oct(umask_027) for p in written}
