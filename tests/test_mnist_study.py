"""The MNIST local-layers study on small generated IDX files: run, reuse, resume, table and figure."""

import numpy as np
import pytest

from xyoptics.config import ConfigError
from xyoptics.core.files import read_json
from xyoptics.data.idx import write_idx
from xyoptics.studies import mnist_local


def fake_mnist(folder, rng):
    """60 training and 30 test 28x28 images: a bright square whose position encodes the digit."""
    for split, n in (("train5k", 60), ("t10k", 30)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for k, d in enumerate(labels):
            r, c = divmod(int(d), 5)
            images[k, 4 + 10 * r:12 + 10 * r, 2 + 5 * c:6 + 5 * c] = 255
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)


def study_config(data):
    return {"seed": 0,
            "train": {"task": {"name": "mnist", "options": {"path": str(data), "train": "train5k"}},
                      "optimizer": {"kind": "adam", "lr": 0.01}, "epochs": 2, "batch_size": 30, "eval_every": 1},
            "networks": [{"name": "lcl", "architecture": {"kind": "local_layers", "input_shape": [28, 28],
                                                          "layers": [{"window": 10, "stride": 6}]}},
                         {"name": "dense", "architecture": {"kind": "layered", "hidden": [6]},
                          "overrides": {"epochs": 1}}]}


def test_mnist_study_runs_reuses_and_tabulates(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    fake_mnist(data, np.random.default_rng(0))
    cfg = mnist_local.Config.model_validate(study_config(data))
    out = tmp_path / "out"
    results = mnist_local.run(cfg, out, progress=False)
    lcl, dense = results["networks"]["lcl"], results["networks"]["dense"]
    assert lcl["n_couplings"] == 16 * 100 + 16 * 10 and dense["n_couplings"] == 784 * 6 + 6 * 10
    assert lcl["epochs"] == 2 and dense["epochs"] == 1 and len(lcl["curve"]) == 2
    assert 0 <= lcl["final_test_accuracy"] <= 1 and lcl["train_s_per_epoch"] > 0
    assert "| lcl | 1,760 |" in capsys.readouterr().out
    assert (out / "mnist_local.png").stat().st_size > 5000
    assert read_json(out / "results.json")["table"] == (out / "table.md").read_text().strip()
    # a second call reuses the finished runs
    before = (out / "lcl" / "metrics.jsonl").read_text()
    again = mnist_local.run(cfg, out, progress=False)
    assert (out / "lcl" / "metrics.jsonl").read_text() == before
    assert again["networks"]["lcl"]["final_test_accuracy"] == lcl["final_test_accuracy"]


def test_mnist_study_refuses_a_run_folder_of_another_config(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    fake_mnist(data, np.random.default_rng(1))
    raw = study_config(data)
    raw["networks"] = raw["networks"][1:]
    out = tmp_path / "out"
    mnist_local.run(mnist_local.Config.model_validate(raw), out, progress=False)
    raw["train"]["optimizer"]["lr"] = 0.02
    with pytest.raises(ConfigError, match="different config"):
        mnist_local.run(mnist_local.Config.model_validate(raw), out, progress=False)


def test_shipped_config_validates_and_its_lcl_is_the_experiment_config():
    from pathlib import Path

    from xyoptics.config import load_config, load_yaml_model

    root = Path(__file__).resolve().parents[1]
    cfg = load_yaml_model(root / "experiments" / "studies" / "mnist_local.yaml", mnist_local.Config)
    assert [n.name for n in cfg.networks] == ["lcl", "cnn", "dense"]
    assert cfg.network_config(cfg.networks[0]) == load_config(root / "experiments" / "mnist_lcl.yaml")


def test_mnist_study_config_errors(tmp_path):
    raw = study_config(tmp_path)
    raw["networks"].append(dict(raw["networks"][0]))
    with pytest.raises(ValueError, match="unique"):
        mnist_local.Config.model_validate(raw)
    raw = study_config(tmp_path)
    raw["netwerks"] = []
    with pytest.raises(ValueError, match="netwerks"):
        mnist_local.Config.model_validate(raw)
