"""Model selection on a validation split, never on the test set; multi-start predictions."""

import numpy as np
import pytest

from xyoptics.config import TrainConfig
from xyoptics.core import architectures
from xyoptics.core.costs import LogCosineCost
from xyoptics.core.digital import DigitalXYMachine
from xyoptics.core.schema import ConfigError
from xyoptics.data.datasets import load_task
from xyoptics.lab.build import digital_machine, prepare
from xyoptics.lab.evaluation import evaluate, split_validation
from xyoptics.lab.trainer import Trainer


def iris_config(**updates) -> TrainConfig:
    base = {"task": "iris", "architecture": {"kind": "all_to_all", "hidden": 3},
            "ep": {"beta": 0.1, "cost": "log_cosine"}, "optimizer": {"kind": "adam", "lr": 0.05},
            "epochs": 4, "batch_size": 15, "eval_every": 1, "seed": 3, "validation_fraction": 0.2}
    return TrainConfig.model_validate({**base, **updates})


def test_validation_split_is_stratified_seeded_and_disjoint():
    train, _ = load_task("iris", seed=0)
    fit, held = split_validation(train, 0.2, seed=5)
    again_fit, again_held = split_validation(train, 0.2, seed=5)
    other = split_validation(train, 0.2, seed=6)[1]
    assert len(fit) + len(held) == len(train) and len(held) == round(0.2 * len(train))
    np.testing.assert_array_equal(held.x, again_held.x)
    assert not np.array_equal(held.x, other.x)
    rows = {tuple(r) for r in fit.x}
    assert not any(tuple(r) in rows for r in held.x)  # no flower is both trained on and used to select
    share = np.bincount(held.labels) / np.bincount(train.labels)
    assert np.ptp(share) < 0.1
    assert split_validation(train, 0.0, seed=5) == (train, None)


def test_a_split_that_loses_a_class_is_refused():
    xor, _ = load_task("xor")
    with pytest.raises(ConfigError, match="leaves class"):
        split_validation(xor, 0.25, seed=0)


def test_multi_start_evaluation_predicts_from_the_lowest_energy_start():
    rng = np.random.default_rng(0)
    net = architectures.all_to_all(4, 3, 3)
    params = net.init_params(rng, coupling_std=1.5)
    train, _ = load_task("iris", seed=0)
    data = train.subset(np.arange(40))
    machine = DigitalXYMachine(net, dtype=np.float64, tol=1e-9)
    cost = LogCosineCost()
    many = evaluate(machine, params, data, cost, np.random.default_rng(1), starts=4)
    one = evaluate(machine, params, data, cost, np.random.default_rng(1), starts=1)
    assert many.accuracy_one_start == one.accuracy and one.accuracy_one_start is None
    # independently: relax the same 4 x 40 starts, keep each sample's lowest-energy end point
    eq = machine.equilibrate(params, np.tile(data.x, (4, 1)), rng=np.random.default_rng(1))
    energy = net.energy(params, eq.phases).reshape(4, 40)
    best = eq.phases.reshape(4, 40, -1)[np.argmin(energy, axis=0), np.arange(40)]
    s = np.sin(best[:, net.outputs])
    assert many.accuracy == np.mean(np.argmax(s, axis=1) == data.labels)
    assert many.n_unconverged == eq.n_unconverged


def test_the_epoch_is_selected_on_validation_and_the_test_set_cannot_change_it():
    cfg = iris_config()
    train_set, test_set, net = prepare(cfg)
    result = Trainer(cfg, digital_machine(cfg, net), train_set, test_set, None, progress=False).run()
    s = result.summary
    assert s["selected_by"] == "validation" and s["status"] == "completed"
    # a test set with the same inputs but scrambled labels: same random draws, so only labels could matter
    scrambled = test_set.subset(np.arange(len(test_set)))
    scrambled = type(scrambled)(scrambled.name, scrambled.x, np.roll(scrambled.labels, 7), scrambled.n_classes,
                                scrambled.n_outputs)
    trainer = Trainer(cfg, digital_machine(cfg, net), train_set, scrambled, None, progress=False)
    other = trainer.run().summary
    history = trainer.state.history
    assert other["selected_epoch"] == s["selected_epoch"]
    assert other["selected_validation_accuracy"] == s["selected_validation_accuracy"]
    val = [r["validation_accuracy"] for r in history]
    assert s["selected_epoch"] == history[int(np.argmax(val))]["epoch"]  # earliest best validation epoch
    chosen = next(r for r in history if r["epoch"] == other["selected_epoch"])
    assert other["selected_test_accuracy"] == chosen["test_accuracy"]
    assert trainer.n_batches == int(np.ceil(len(trainer.train_set) / cfg.batch_size))
    assert len(trainer.train_set) + len(trainer.validation_set) == len(train_set)


def test_early_stopping_and_the_target_look_at_validation_only():
    cfg = iris_config(epochs=6, early_stop_patience=1, optimizer={"kind": "sgd", "lr": 1e-6})
    train_set, test_set, net = prepare(cfg)
    trainer = Trainer(cfg, digital_machine(cfg, net), train_set, test_set, None, progress=False)
    s = trainer.run().summary
    assert s["status"] == "early_stopped" and s["epochs_completed"] < 6
    later = [r for r in trainer.state.history if r["epoch"] > s["selected_epoch"]]
    assert len(later) == 1 and later[0]["validation_accuracy"] <= s["selected_validation_accuracy"]
    target = iris_config(stop_at_accuracy=0.05)  # any validation accuracy reaches it at the first evaluation
    s = Trainer(target, digital_machine(target, net), train_set, test_set, None, progress=False).run().summary
    assert s["status"] == "target_reached" and s["epochs_completed"] == 1


def test_adaptive_nudge_config_needs_the_cosine_cost_and_trains():
    with pytest.raises(ValueError, match="set cost: cosine"):
        iris_config(ep={"beta": 0.1, "cost": "log_cosine", "nudge": "adaptive"})
    cfg = iris_config(epochs=2, ep={"beta": 0.1, "cost": "cosine", "nudge": "adaptive", "adaptive_max_gain": 5})
    train_set, test_set, net = prepare(cfg)
    s = Trainer(cfg, digital_machine(cfg, net), train_set, test_set, None, progress=False).run().summary
    assert s["status"] == "completed" and s["unconverged_train_relaxations"] == 0
