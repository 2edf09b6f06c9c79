"""Every experiment config validates and builds its network; MNIST ones only where the data is present."""

from pathlib import Path

import pytest

from xyoptics.config import load_config
from xyoptics.data.idx import find_mnist_dir
from xyoptics.lab.trainer import prepare

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))


def _has_mnist() -> bool:
    try:
        find_mnist_dir()
        return True
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_experiment_config_builds(path):
    cfg = load_config(path)
    if cfg.task.name == "mnist" and not _has_mnist():
        pytest.skip("MNIST files not present (set XYOPTICS_DATA or run xyoptics data fetch mnist)")
    train, test, net = prepare(cfg)
    assert len(net.inputs) == train.n_inputs
    assert len(net.outputs) == train.n_outputs and len(train) > 0 and len(test) > 0
