"""Data layer: IDX reading/writing, MNIST fetch and lookup (offline), and the phase-encoded task data sets."""

import functools
import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from xyoptics.data import idx
from xyoptics.data.datasets import Dataset, digits, iris, load_task, mnist, stratified_choice
from xyoptics.data.idx import ChecksumError, IDXError, fetch_mnist, find_mnist_dir, read_idx, write_idx

HALF_PI = np.pi / 2
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


# ---------------------------------------------------------------- IDX format

@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(1)
    a = (rng.uniform(-100, 100, (3, 4, 5)) if dtype[0] == "f" else rng.integers(0, 100, (3, 4, 5))).astype(dtype)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, a)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    b = read_idx(path)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_idx_gzip_detected_by_magic_not_name(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "x.gz", a)
    (tmp_path / "plain-named").write_bytes((tmp_path / "x.gz").read_bytes())
    write_idx(tmp_path / "y", a)
    (tmp_path / "y.gz").write_bytes((tmp_path / "y").read_bytes())
    for name in ("plain-named", "y.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), a)


def test_idx_header_is_standard(tmp_path):
    write_idx(tmp_path / "l", np.array([7, 2, 1], dtype=np.uint8))
    assert (tmp_path / "l").read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])


def _idx_bytes(a):
    return bytes([0, 0, 8, a.ndim]) + b"".join(n.to_bytes(4, "big") for n in a.shape) + a.tobytes()


@pytest.mark.parametrize("data, message", [
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
    (b"\x00", "bad magic"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unsupported type code 0x07"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated header"),
    (_idx_bytes(np.zeros((2, 3), np.uint8))[:-2], "truncated payload: dims (2, 3) need 6 bytes, got 4"),
    (_idx_bytes(np.zeros((2, 3), np.uint8)) + b"\x00", "1 trailing bytes: dims (2, 3) need 6 bytes, got 7"),
    (gzip.compress(_idx_bytes(np.zeros((2, 3), np.uint8)))[:-6], "corrupt gzip"),
    (b"\x1f\x8b" + b"garbage" * 3, "corrupt gzip"),
], ids=["magic", "short", "type", "header", "truncated", "trailing", "gzip-truncated", "gzip-garbage"])
def test_idx_rejects_bad_files(tmp_path, data, message):
    path = tmp_path / "bad.idx"
    path.write_bytes(data)
    with pytest.raises(IDXError, match=re.escape(message)) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(IDXError, match="no IDX type code"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


# ---------------------------------------------------------------- fetch (local server, no internet)

def _serve_files(www):
    """Two small IDX gz files under www/mnist; returns name -> MD5."""
    (www / "mnist").mkdir()
    sums = {}
    for name, a in (("a-images-idx3-ubyte.gz", np.arange(24, dtype=np.uint8).reshape(2, 3, 4)),
                    ("a-labels-idx1-ubyte.gz", np.array([3, 1], dtype=np.uint8))):
        write_idx(www / "mnist" / name, a)
        sums[name] = hashlib.md5((www / "mnist" / name).read_bytes()).hexdigest()
    return sums


def test_fetch_downloads_verifies_and_skips_present(tmp_path, server):
    url, www, served = server
    sums = _serve_files(www)
    dest = tmp_path / "dest"
    assert fetch_mnist(dest, base_url=url, progress=False, checksums=sums) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(sums)  # no temporary files left
    np.testing.assert_array_equal(read_idx(dest / "a-labels-idx1-ubyte.gz"), [3, 1])
    assert len(served) == 2
    fetch_mnist(dest, base_url=url, progress=False, checksums=sums)
    assert len(served) == 2  # valid files are not downloaded again


def test_fetch_replaces_invalid_present_file(tmp_path, server):
    url, www, served = server
    sums = _serve_files(www)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a-labels-idx1-ubyte.gz").write_bytes(b"stale")
    fetch_mnist(dest, base_url=url, progress=False, checksums=sums)
    assert len(served) == 2
    assert idx.verify_mnist(dest, md5=sums, sha256={}) == {n: True for n in sums}


def test_fetch_rejects_bad_checksum_and_leaves_nothing(tmp_path, server):
    url, www, _ = server
    sums = _serve_files(www)
    name = "a-images-idx3-ubyte.gz"
    dest = tmp_path / "dest"
    with pytest.raises(ChecksumError, match=f"{name}: MD5 .* differs from expected 0+"):
        fetch_mnist(dest, base_url=url, progress=False, checksums={name: "0" * 32})
    assert list(dest.iterdir()) == []
    assert sums  # the served file itself was fine


def test_fetch_missing_file_raises_and_leaves_nothing(tmp_path, server):
    url, www, _ = server
    _serve_files(www)
    dest = tmp_path / "dest"
    with pytest.raises(OSError):  # urllib's HTTPError (404) is an OSError
        fetch_mnist(dest, base_url=url, progress=False, checksums={"missing.gz": "0" * 32})
    assert list(dest.iterdir()) == []


def test_mnist_checksum_tables():
    assert set(idx.MNIST_FILES) == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    assert idx.MNIST_FILES["t10k-labels-idx1-ubyte.gz"] == "ec29112dd5afa0611ce80d1b7f02629c"
    assert set(idx.MNIST_SHA256) == set(idx.MNIST_SPLITS["train5k"] + idx.MNIST_SPLITS["test"])


# ---------------------------------------------------------------- small generated MNIST

def _fake_mnist(folder, n_train=50, n_test=20, train_split="train5k", seed=0):
    """IDX gz files of random 28x28 images, labels cycling 0..9."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in ((train_split, n_train), ("test", n_test)):
        images_name, labels_name = idx.MNIST_SPLITS[split]
        write_idx(folder / images_name, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / labels_name, (np.arange(n) % 10).astype(np.uint8))
    return folder


def test_find_mnist_dir_from_env(tmp_path, monkeypatch):
    folder = _fake_mnist(tmp_path / "data" / "mnist")
    for value in (tmp_path / "data", folder):  # a parent with mnist/, or the folder itself
        monkeypatch.setenv("XYOPTICS_DATA", str(value))
        assert find_mnist_dir() == folder
    assert find_mnist_dir(tmp_path / "data") == folder  # an explicit path wins


def test_find_mnist_dir_missing_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("XYOPTICS_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere.*xyoptics data fetch mnist --dest DIR.*XYOPTICS_DATA"):
        find_mnist_dir()
    monkeypatch.delenv("XYOPTICS_DATA")
    with pytest.raises(FileNotFoundError, match="no MNIST files in .*empty"):
        find_mnist_dir(tmp_path / "empty")


def test_mnist_from_generated_files(tmp_path):
    folder = _fake_mnist(tmp_path / "m")
    train, test = mnist(folder)
    assert train.name == "mnist(train5k)" and test.name == "mnist(t10k)"
    assert train.x.shape == (50, 784) and test.x.shape == (20, 784)
    assert train.n_outputs == train.n_classes == 10
    raw = read_idx(folder / idx.MNIST_SPLITS["train5k"][0])
    np.testing.assert_allclose(train.x[7], raw[7].ravel() / 255 * np.pi - HALF_PI)
    np.testing.assert_array_equal(test.labels, np.arange(20) % 10)
    with pytest.raises(FileNotFoundError, match="full"):
        mnist(folder, train="full")


def test_mnist_prefers_full_training_set(tmp_path):
    folder = _fake_mnist(tmp_path / "m")
    _fake_mnist(folder, n_train=30, train_split="full")
    assert mnist(folder)[0].name == "mnist(full)" and len(mnist(folder)[0]) == 30
    assert len(mnist(folder, train="train5k")[0]) == 50


def test_mnist_pooled_to_14x14_averages_2x2_blocks(tmp_path):
    folder = _fake_mnist(tmp_path / "m")
    train, test = mnist(folder, pool=2)
    assert train.name == "mnist(train5k,14x14)" and train.x.shape == (50, 196) and test.x.shape == (20, 196)
    raw = read_idx(folder / idx.MNIST_SPLITS["train5k"][0]).astype(float)
    block = raw[3, 4:6, 10:12].mean()  # row 2, column 5 of the pooled image
    np.testing.assert_allclose(train.x[3, 2 * 14 + 5], block / 255 * np.pi - HALF_PI)
    with pytest.raises(ValueError, match="pool 3 does not divide 28x28"):
        mnist(folder, pool=3)


def test_mnist_subsampling(tmp_path):
    folder = _fake_mnist(tmp_path / "m")
    train, test = mnist(folder, n_train=20, n_test=10, seed=3)
    assert train.describe()["class_counts"] == [2] * 10 and test.describe()["class_counts"] == [1] * 10
    again, _ = load_task("mnist", seed=3, path=folder, n_train=20, n_test=10)
    np.testing.assert_array_equal(train.x, again.x)
    other, _ = mnist(folder, n_train=20, n_test=10, seed=4)
    assert not np.array_equal(train.x, other.x)
    with pytest.raises(ValueError, match="cannot draw 51 of 50"):
        mnist(folder, n_train=51)


@pytest.mark.skipif(not (SHARED_MNIST / "train5k-images-idx3-ubyte.gz").is_file(),
                    reason=f"offline MNIST files not in {SHARED_MNIST}")
def test_real_offline_mnist():
    assert all(idx.verify_mnist(SHARED_MNIST).values())
    train, test = mnist(SHARED_MNIST, train="train5k")
    assert (len(train), len(test), train.n_inputs) == (5000, 10000, 784)
    assert train.describe()["class_counts"] == [500] * 10
    assert test.x.min() >= -HALF_PI and test.x.max() <= HALF_PI


# ---------------------------------------------------------------- iris, digits, tasks

def _check_encoded(ds: Dataset):
    assert np.all(np.abs(ds.x) <= HALF_PI)
    assert ds.x.dtype == np.float64


def test_iris():
    train, test = iris(seed=0)
    assert (len(train), len(test), train.n_inputs, train.n_outputs) == (105, 45, 4, 3)
    assert train.describe()["class_counts"] == [35] * 3 and test.describe()["class_counts"] == [15] * 3
    both = np.concatenate([train.x, test.x])
    _check_encoded(train)
    np.testing.assert_allclose(both.min(axis=0), -HALF_PI)  # min-max over the whole set
    np.testing.assert_allclose(both.max(axis=0), HALF_PI)


def test_seeded_splits_reproducible_and_seed_dependent():
    for make in (iris, functools.partial(digits, protocol="random")):
        a, b, c = make(seed=1)[1], make(seed=1)[1], make(seed=2)[1]
        np.testing.assert_array_equal(a.x, b.x)
        assert not np.array_equal(a.x, c.x)


def test_digits_2024_protocol():
    from sklearn.datasets import load_digits

    train, test = digits()
    assert train.describe()["class_counts"] == [100] * 10 and test.describe()["class_counts"] == [70] * 10
    assert (len(train), len(test), train.n_inputs, train.n_outputs) == (1000, 700, 64, 10)
    _check_encoded(train)
    raw = load_digits()
    first0 = raw.data[np.flatnonzero(raw.target == 0)[0]]
    np.testing.assert_allclose(train.x[train.labels == 0][0], first0 / 16 * np.pi - HALF_PI)
    idx101 = np.flatnonzero(raw.target == 3)[100]  # the 101st image of class 3 is the first test image of 3
    np.testing.assert_allclose(test.x[test.labels == 3][0], raw.data[idx101] / 16 * np.pi - HALF_PI)
    assert digits(seed=5)[0].x.tobytes() == train.x.tobytes()  # deterministic


def test_digits_random_protocol():
    train, test = digits(seed=0, protocol="random")
    assert len(train) + len(test) == 1797 and len(test) == 539
    assert np.all(np.abs(np.array(test.describe()["class_counts"]) - 0.3 * np.array(
        [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])) < 1)
    with pytest.raises(ValueError, match="unknown digits protocol"):
        digits(protocol="2023")


def test_stratified_choice_quotas():
    labels = np.repeat([0, 1, 2], [10, 20, 30])
    pick = stratified_choice(labels, 7, np.random.default_rng(0))
    assert np.bincount(labels[pick]).tolist() == [1, 2, 4]  # 7/6, 14/6, 21/6 by largest remainder
    assert len(np.unique(pick)) == 7


def test_load_task():
    train, test = load_task("xor")
    assert len(train) == len(test) == 4 and train.n_outputs == 1
    np.testing.assert_array_equal(train.x, test.x)
    assert load_task("digits")[0].name == "digits(2024)"
    assert load_task("iris", seed=2, test_fraction=0.2)[1].describe()["class_counts"] == [10] * 3
    with pytest.raises(TypeError, match="no option 'bogus'"):
        load_task("iris", bogus=1)
    with pytest.raises(TypeError, match="no option 'protocol'"):
        load_task("xor", protocol="2024")
    with pytest.raises(ValueError, match="unknown task 'cifar'"):
        load_task("cifar")
