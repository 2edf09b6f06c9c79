"""IDX files (the MNIST format): read, write, download and locate.

An IDX file is ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the payload: the product of
the sizes times the item size, big-endian, row-major. Files may be gzip-compressed; compression is recognised
by the gzip magic bytes ``1f 8b``, not by the file name.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import struct
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..core.files import create_temp

# type code -> big-endian dtype of the payload
IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

# The four standard MNIST files and the MD5 of their gz files as distributed.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# SHA-256 of the offline copies in shared/data/mnist (t10k recompressed, content unchanged; train5k = the first
# 500 training images of each digit, sorted by digit).
MNIST_SHA256 = {
    "t10k-images-idx3-ubyte.gz": "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b",
    "t10k-labels-idx1-ubyte.gz": "fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c",
    "train5k-images-idx3-ubyte.gz": "e5267df2839ae561b5e76f26f2de21722c0549665ddcc8ac803dfb10a7b5a25a",
    "train5k-labels-idx1-ubyte.gz": "7c9a5115a47c51596e3401b18d017809679c31290def95dd8a625b44bf804063",
}
# split -> (images file, labels file)
MNIST_SPLITS = {
    "full": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "train5k": ("train5k-images-idx3-ubyte.gz", "train5k-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DEFAULT_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
DATA_ENV = "XYOPTICS_DATA"


class IDXError(ValueError):
    """A file that is not a valid IDX file."""


class ChecksumError(ValueError):
    """A file whose checksum differs from the expected one."""


class FetchError(OSError):
    """A download that failed (bad URL, no network, server error, connection lost); ``url`` names the file."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot download {url}: {reason}")
        self.url, self.reason = url, reason


def _why(exc: BaseException) -> str:
    """Why urlopen or a read failed, in a few words ('HTTP 404 Not Found', 'Connection refused', 'timed out')."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc  # URLError wraps the socket error
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array in an IDX file (plain or gzip), in native byte order; raises IDXError naming what is wrong."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IDXError(f"{path}: corrupt gzip data ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise IDXError(f"{path}: bad magic {raw[:4].hex(' ')!r}, expected 00 00 <type> <ndim>")
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES:
        raise IDXError(f"{path}: unsupported type code 0x{code:02X}; supported: "
                       + ", ".join(f"0x{c:02X}" for c in IDX_TYPES))
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"{path}: truncated header: {ndim} dims need {header} bytes, got {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_TYPES[code]
    expected, got = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize, len(raw) - header
    if got < expected:
        raise IDXError(f"{path}: truncated payload: dims {dims} need {expected} bytes, got {got}")
    if got > expected:
        raise IDXError(f"{path}: {got - expected} trailing bytes: dims {dims} need {expected} bytes, got {got}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``."""
    array = np.asarray(array)
    codes = {dt.newbyteorder("=").str: c for c, dt in IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("=").str)
    if code is None:
        raise IDXError(f"{path}: dtype {array.dtype} has no IDX type code")
    if array.ndim > 255:
        raise IDXError(f"{path}: too many dimensions ({array.ndim})")
    data = (bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes())
    if str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    Path(path).write_bytes(data)


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def verify_mnist(directory: str | os.PathLike, md5: Mapping[str, str] = MNIST_FILES,
                 sha256: Mapping[str, str] = MNIST_SHA256) -> dict[str, bool]:
    """For each known MNIST file present in ``directory``: whether it matches a listed checksum (the standard
    MD5 or the offline copy's SHA-256)."""
    result = {}
    for name in sorted(set(md5) | set(sha256)):
        p = Path(directory) / name
        if p.is_file():
            result[name] = ((name in md5 and file_digest(p, "md5") == md5[name])
                            or (name in sha256 and file_digest(p, "sha256") == sha256[name]))
    return result


def _download(url: str, target: Path, md5: str, progress: bool, timeout: float) -> None:
    """Stream ``url`` to a temporary file beside ``target``, check its MD5, then move it into place (mode
    0666 & ~umask). A failing URL, connection or server raises FetchError naming ``url``."""
    fd, tmp = create_temp(target.parent, f".{target.name}.", ".part")
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            try:
                resp = urllib.request.urlopen(url, timeout=timeout)
            except (OSError, ValueError, http.client.HTTPException) as exc:  # ValueError: not a URL
                raise FetchError(url, _why(exc)) from exc
            with resp:
                total, done = int(resp.headers.get("Content-Length") or 0), 0
                while True:
                    try:
                        chunk = resp.read(1 << 16)
                    except (OSError, http.client.HTTPException) as exc:
                        raise FetchError(url, _why(exc)) from exc
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
            if progress:
                print(f"  {target.name}: {done} bytes" + (f" of {total}" if total else ""), file=sys.stderr)
        if digest.hexdigest() != md5:
            raise ChecksumError(f"{url}: MD5 {digest.hexdigest()} differs from expected {md5}; file discarded")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_mnist(dest_dir: str | os.PathLike, base_url: str = DEFAULT_MIRROR, progress: bool = True,
                checksums: Mapping[str, str] | None = None, timeout: float = 60.0) -> Path:
    """Download the standard MNIST files (``checksums``: file name -> MD5, default MNIST_FILES) from
    ``base_url`` into ``dest_dir``; files already there with the right MD5 are kept. Each download goes to a
    temporary file that replaces the target only once its MD5 matches; a mismatch raises ChecksumError, a
    failed download FetchError (an OSError naming the URL), and either leaves nothing behind. ``base_url`` may
    be a local mirror, ``file:///folder/`` included. Returns ``dest_dir``."""
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for name, md5 in (MNIST_FILES if checksums is None else checksums).items():
        target = dest / name
        if target.is_file() and file_digest(target, "md5") == md5:
            if progress:
                print(f"  {name}: present, MD5 ok", file=sys.stderr)
            continue
        _download(base_url.rstrip("/") + "/" + name, target, md5, progress, timeout)
    return dest


def mnist_file(directory: str | os.PathLike, name: str) -> Path | None:
    """``directory/name``, or the same without ``.gz``, whichever exists; None if neither does."""
    for candidate in (Path(directory) / name, Path(directory) / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _has_mnist(directory: Path) -> bool:
    """Whether ``directory`` holds the test files and one training split."""
    def has(split):
        return all(mnist_file(directory, n) for n in MNIST_SPLITS[split])
    return has("test") and (has("full") or has("train5k"))


def _mnist_in(root: Path) -> Path | None:
    for directory in (root, root / "mnist"):
        if directory.is_dir() and _has_mnist(directory):
            return directory
    return None


def find_mnist_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder with the MNIST files: ``path`` if given, else ``$XYOPTICS_DATA``, else the project's
    ``shared/data/mnist`` (beside the repository, or inside it). ``path`` and ``$XYOPTICS_DATA`` may name the
    folder with the files or one with an ``mnist/`` subfolder. Raises FileNotFoundError saying how to get them."""
    how = (f"download them with `xyoptics data fetch mnist --dest DIR` and set {DATA_ENV}=DIR "
           f"(or pass the folder explicitly)")
    for source, given in (("path", path), (DATA_ENV, os.environ.get(DATA_ENV))):
        if given:
            found = _mnist_in(Path(given).expanduser())
            if found is None:
                raise FileNotFoundError(f"no MNIST files in {given} (from {source}); {how}")
            return found
    repo = Path(__file__).resolve().parents[2]
    looked = [repo.parent / "shared" / "data" / "mnist", repo / "shared" / "data" / "mnist"]
    for candidate in looked:
        found = _mnist_in(candidate)
        if found is not None:
            return found
    raise FileNotFoundError(f"MNIST files not found ({DATA_ENV} unset; looked in "
                            + ", ".join(map(str, looked)) + f"); {how}")
