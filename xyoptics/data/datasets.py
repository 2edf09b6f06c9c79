"""Data sets as phase-encoded inputs: every input feature is an angle in [-pi/2, pi/2] (radians).

A feature v with range [lo, hi] becomes the angle theta = (v - lo) / (hi - lo) * pi - pi/2. Each class gets one
output spin (n_outputs = n_classes), except binary XOR, which has a single output spin.

Tasks (``load_task(name, seed=0, **options)`` returns ``(train, test)``):

* ``xor``: the 4 patterns, train = test.
* ``iris``: 150 flowers, 4 features min-max scaled over the whole set, seeded stratified split.
* ``digits``: scikit-learn's 8x8 digits (values 0..16, theta = v/16 * pi - pi/2); protocol "2024" (Wang et al.
  2024): per class, in data set order, images 0..99 train and 100..169 test; or "random", a seeded stratified split.
* ``mnist``: 28x28 digits from IDX files (theta = pixel/255 * pi - pi/2, 784 inputs; ``pool: 2`` averages 2x2
  blocks to 14x14 = 196 inputs), see ``xyoptics.data.idx``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from ..core.costs import targets_for
from .idx import MNIST_SPLITS, find_mnist_dir, mnist_file, read_idx


@dataclass(frozen=True)
class Dataset:
    """Clamp angles ``x`` (n, n_inputs) in [-pi/2, pi/2], integer ``labels`` (n,), and the number of output
    spins (one per class, or one for a binary task)."""

    name: str
    x: np.ndarray
    labels: np.ndarray
    n_classes: int
    n_outputs: int

    def __post_init__(self):
        if len(self.x) != len(self.labels):
            raise ValueError("x and labels differ in length")
        if np.any(np.abs(self.x) > np.pi / 2 + 1e-12):
            raise ValueError(f"{self.name}: input angles must lie in [-pi/2, pi/2]")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_inputs(self) -> int:
        return self.x.shape[1]

    @property
    def targets(self) -> np.ndarray:
        return targets_for(self.labels, self.n_outputs)

    def batches(self, batch_size: int, rng: np.random.Generator | None = None):
        """Yield (x, labels, targets) mini-batches, shuffled with ``rng`` when given."""
        order = np.arange(len(self)) if rng is None else rng.permutation(len(self))
        targets = self.targets
        for k in range(0, len(order), batch_size):
            sel = order[k:k + batch_size]
            yield self.x[sel], self.labels[sel], targets[sel]

    def subset(self, index, name: str | None = None) -> Dataset:
        """The samples at ``index`` (integer indices or a boolean mask), same classes and outputs."""
        return Dataset(name or self.name, self.x[index], self.labels[index], self.n_classes, self.n_outputs)

    def describe(self) -> dict:
        """Name, size, inputs, classes, outputs and the number of samples of each class."""
        counts = np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=self.n_classes)
        return {"name": self.name, "n": len(self), "n_inputs": self.n_inputs, "n_classes": self.n_classes,
                "n_outputs": self.n_outputs, "class_counts": counts.tolist()}


def xor() -> Dataset:
    """XOR on two spins clamped to +-pi/2; one output spin, target +pi/2 when exactly one input is +pi/2."""
    bits = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    return Dataset("xor", (bits - 0.5) * np.pi, bits[:, 0] ^ bits[:, 1], n_classes=2, n_outputs=1)


def phase_encode(values, lo, hi) -> np.ndarray:
    """theta = (v - lo) / (hi - lo) * pi - pi/2, clipped to [-pi/2, pi/2]; ``lo``/``hi`` may be per feature."""
    theta = np.array(values, dtype=np.float64)  # a copy, then in place: MNIST is large
    theta -= lo
    theta *= np.pi / (np.asarray(hi, dtype=np.float64) - lo)
    theta -= np.pi / 2
    return np.clip(theta, -np.pi / 2, np.pi / 2, out=theta)


def stratified_choice(labels, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``n`` samples drawn without replacement, each class getting its share of ``n``
    (n * count_c / N, rounded by largest remainder, ties to the lower class)."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if not 0 <= n <= len(labels):
        raise ValueError(f"cannot draw {n} of {len(labels)} samples")
    quota, remainder = np.divmod(n * counts.astype(np.int64), len(labels))
    quota[np.argsort(-remainder, kind="stable")[:n - quota.sum()]] += 1
    picks = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)


def stratified_split(labels, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) sorted indices; the test part holds round(test_fraction * N) samples, stratified."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    test = stratified_choice(labels, int(round(test_fraction * len(labels))), rng)
    return np.setdiff1d(np.arange(len(labels)), test), test


def _split(full: Dataset, seed: int, test_fraction: float) -> tuple[Dataset, Dataset]:
    train, test = stratified_split(full.labels, test_fraction, np.random.default_rng(seed))
    return full.subset(train), full.subset(test)


def iris(seed: int = 0, test_fraction: float = 0.3) -> tuple[Dataset, Dataset]:
    """Fisher's iris (scikit-learn): 4 features, each min-max scaled over all 150 samples,
    theta = (v - min) / (max - min) * pi - pi/2; 3 classes, 3 outputs; stratified split seeded by ``seed``."""
    from sklearn.datasets import load_iris

    raw = load_iris()
    x = phase_encode(raw.data, raw.data.min(axis=0), raw.data.max(axis=0))
    return _split(Dataset("iris", x, raw.target.astype(np.int64), 3, 3), seed, test_fraction)


DIGITS_PROTOCOLS = ("2024", "random")


def digits(seed: int = 0, protocol: str = "2024", test_fraction: float = 0.3) -> tuple[Dataset, Dataset]:
    """scikit-learn's 8x8 digits (1797 images, values 0..16), theta = v/16 * pi - pi/2; 64 inputs, 10 outputs.

    Protocol "2024" (Wang et al. 2024), deterministic: per class, in data set order, the first 100 images train
    (1000 in all) and images 100..169 test (700 in all). Protocol "random": stratified split seeded by ``seed``
    with ``test_fraction`` of the images in the test set."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    full = Dataset(f"digits({protocol})", phase_encode(raw.data, 0.0, 16.0), raw.target.astype(np.int64), 10, 10)
    if protocol == "random":
        return _split(full, seed, test_fraction)
    if protocol != "2024":
        raise ValueError(f"unknown digits protocol {protocol!r}; choose from {DIGITS_PROTOCOLS}")
    rank = np.zeros(len(full), dtype=np.int64)  # position of each image within its class
    for c in range(10):
        members = full.labels == c
        rank[members] = np.arange(members.sum())
    return full.subset(rank < 100), full.subset((rank >= 100) & (rank < 170))


MNIST_TRAIN = ("auto", "full", "train5k")


def pool_images(images: np.ndarray, pool: int) -> np.ndarray:
    """Average ``pool`` x ``pool`` blocks of images (n, rows, cols): a 28x28 digit becomes 14x14 for pool 2."""
    n, rows, cols = images.shape
    if pool < 1 or rows % pool or cols % pool:
        raise ValueError(f"pool {pool} does not divide {rows}x{cols} images")
    return images.reshape(n, rows // pool, pool, cols // pool, pool).mean(axis=(2, 4))


def _read_mnist_split(directory, split: str, n: int | None, rng: np.random.Generator, name: str,
                      pool: int = 1) -> Dataset:
    images_file, labels_file = (mnist_file(directory, f) for f in MNIST_SPLITS[split])
    if images_file is None or labels_file is None:
        raise FileNotFoundError(f"MNIST {split} files {MNIST_SPLITS[split]} not in {directory}")
    images, labels = read_idx(images_file), read_idx(labels_file).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{directory}: MNIST {split} images {images.shape} and labels {labels.shape} "
                         "do not match (expected (n, rows, cols) and (n,))")
    if labels.size and not 0 <= labels.min() <= labels.max() <= 9:
        raise ValueError(f"{labels_file}: labels outside 0..9")
    if n is not None:
        keep = stratified_choice(labels, n, rng)
        images, labels = images[keep], labels[keep]
    if pool > 1:
        images = pool_images(images.astype(np.float64), pool)
    x = phase_encode(images.reshape(len(images), -1), 0.0, 255.0)
    return Dataset(name, x, labels, 10, 10)


def mnist(path=None, train: str = "auto", n_train: int | None = None, n_test: int | None = None,
          seed: int = 0, pool: int = 1) -> tuple[Dataset, Dataset]:
    """MNIST from the folder ``xyoptics.data.idx.find_mnist_dir(path)`` finds; theta = pixel/255 * pi - pi/2,
    flattened to 784 inputs (``pool`` > 1 averages pool x pool blocks first: 196 inputs of 14x14 for 2); 10
    outputs.

    ``train``: "full" (the 60,000-image files), "train5k" (the offline subset, 500 per digit) or "auto" (full if
    present, else train5k); the training set's name says which, e.g. "mnist(train5k)". The test set is t10k.
    ``n_train``/``n_test``: stratified subsamples of that size, seeded by ``seed``."""
    if train not in MNIST_TRAIN:
        raise ValueError(f"unknown MNIST training split {train!r}; choose from {MNIST_TRAIN}")
    directory = find_mnist_dir(path)
    if train == "auto":
        train = "full" if all(mnist_file(directory, f) for f in MNIST_SPLITS["full"]) else "train5k"
    rng_train, rng_test = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    size = "" if pool == 1 else f",{28 // pool}x{28 // pool}"
    return (_read_mnist_split(directory, train, n_train, rng_train, f"mnist({train}{size})", pool),
            _read_mnist_split(directory, "test", n_test, rng_test, f"mnist(t10k{size})", pool))


def _xor_task(seed: int = 0) -> tuple[Dataset, Dataset]:
    """XOR: train and test are the same 4 patterns (``seed`` is unused)."""
    return xor(), xor()


# name -> function(seed=..., **options) returning (train, test)
TASKS = {"xor": _xor_task, "iris": iris, "digits": digits, "mnist": mnist}


def load_task(name: str, seed: int = 0, **options) -> tuple[Dataset, Dataset]:
    """(train, test) data for a task name; ``options`` are the task function's keyword arguments."""
    try:
        make = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}") from None
    allowed = [p for p in inspect.signature(make).parameters if p != "seed"]
    for key in options:
        if key not in allowed:
            raise TypeError(f"task {name!r} has no option {key!r}; options: {allowed or 'none'}")
    return make(seed=seed, **options)
