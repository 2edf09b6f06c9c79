"""No unusable measurement reaches an EP gradient: flagged or non-converged samples are re-measured from a fresh
start, then dropped; a step with too few clean samples makes no update; all of it is counted."""

import json
import signal
import warnings

import numpy as np
import pytest
import yaml

from conftest import random_params
from xyoptics.config import TrainConfig
from xyoptics.core import architectures
from xyoptics.core.costs import LogCosineCost, targets_for
from xyoptics.core.digital import DigitalXYMachine
from xyoptics.core.ep import ep_gradient
from xyoptics.core.machine import Equilibrium
from xyoptics.data.datasets import xor
from xyoptics.lab.session import run_session
from xyoptics.lab.trainer import Trainer


class Flaky:
    """A digital machine whose readout flags every measurement of samples whose first input is ``bad_input``
    (a dead spot, say), and the first ``once`` free measurements of samples whose first input is ``shaky``."""

    def __init__(self, inner: DigitalXYMachine, bad_input=None, shaky=None, once: int = 0, flag="saturated"):
        self.inner, self.network = inner, inner.network
        self.bad_input, self.shaky, self.once, self.flag = bad_input, shaky, once, flag
        self.calls = 0

    def equilibrate(self, params, inputs, *, nudge=None, start=None, rng=None) -> Equilibrium:
        eq = self.inner.equilibrate(params, inputs, nudge=nudge, start=start, rng=rng)
        x = np.atleast_2d(inputs)[:, 0]
        flagged = np.zeros(len(x), dtype=bool)
        if self.bad_input is not None:
            flagged |= np.isclose(x, self.bad_input)
        if self.shaky is not None and nudge is None and self.once > 0:
            hit = np.isclose(x, self.shaky)
            flagged |= hit
            self.once -= int(hit.any())
        self.calls += 1
        return Equilibrium(eq.phases, eq.converged, eq.iterations, eq.residual, {**eq.quality, self.flag: flagged})


def problem(seed=0):
    rng = np.random.default_rng(seed)
    net = architectures.all_to_all(2, 3, 1)
    params = random_params(net, rng)
    x = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [0.5, 1.0]]) * np.pi / 2
    y = targets_for(np.array([0, 1, 1, 0]), 1)
    machine = DigitalXYMachine(net, tol=1e-10, max_iter=100000, dtype=np.float64)
    return machine, params, x, y, net.random_phases(rng, x)


def test_a_sample_flagged_every_time_is_dropped_and_the_rest_is_exact():
    machine, params, x, y, start = problem()
    flaky = Flaky(machine, bad_input=np.pi / 4)  # sample 3 has a dead spot
    est = ep_gradient(flaky, params, x, y, beta=0.05, cost=LogCosineCost(), rng=np.random.default_rng(1),
                      start=start, max_remeasure=2)
    assert est.kept.tolist() == [True, True, True, False] and est.n_dropped == 1 and est.remeasured == 2
    clean = ep_gradient(machine, params, x[:3], y[:3], beta=0.05, cost=LogCosineCost(),
                        rng=np.random.default_rng(1), start=start[:3])  # computed without the bad sample
    for name, g in est.grad.as_dict().items():
        np.testing.assert_allclose(g, clean.grad.as_dict()[name], rtol=1e-12, atol=1e-14)
    assert est.cost == pytest.approx(clean.cost, rel=1e-12)


def test_a_sample_flagged_once_is_measured_again_and_kept():
    machine, params, x, y, start = problem()
    flaky = Flaky(machine, shaky=np.pi / 2, once=1, flag="low_modulation")  # samples 2 (x0 = +pi/2) once
    est = ep_gradient(flaky, params, x, y, beta=0.05, cost=LogCosineCost(), rng=np.random.default_rng(1),
                      start=start, max_remeasure=1)
    assert est.kept.all() and est.remeasured == 1 and not est.skipped
    assert flaky.calls == 4  # free + nudged, then free + nudged again for the one sample
    without = ep_gradient(Flaky(machine, shaky=np.pi / 2, once=1), params, x, y, beta=0.05,
                          cost=LogCosineCost(), rng=np.random.default_rng(1), start=start, max_remeasure=0)
    assert without.kept.tolist() == [True, True, False, True]  # no second chance: dropped


def test_too_few_clean_samples_skip_the_step():
    machine, params, x, y, start = problem()
    everything = Flaky(machine, bad_input=None, shaky=None)
    everything.bad_input = x[0, 0]  # samples 0 and 1 share x0 = -pi/2: half the batch is dead
    half = ep_gradient(everything, params, x, y, beta=0.05, cost=LogCosineCost(), rng=np.random.default_rng(1),
                       start=start, min_good_fraction=0.75)
    assert half.skipped and half.grad is None and half.n_dropped == 2
    enough = ep_gradient(everything, params, x, y, beta=0.05, cost=LogCosineCost(), rng=np.random.default_rng(1),
                         start=start, min_good_fraction=0.5)
    assert not enough.skipped and enough.n_dropped == 2
    with pytest.raises(ValueError, match="min_good_fraction"):
        ep_gradient(machine, params, x, y, beta=0.05, cost=LogCosineCost(), rng=np.random.default_rng(1),
                    min_good_fraction=1.5)


def test_non_converged_relaxations_never_enter_a_gradient():
    machine, params, x, y, start = problem()
    capped = DigitalXYMachine(machine.network, tol=1e-10, max_iter=3, dtype=np.float64)
    est = ep_gradient(capped, params, x, y, beta=0.05, cost=LogCosineCost(), rng=np.random.default_rng(0),
                      start=start, max_remeasure=1)
    assert est.skipped and est.n_dropped == 4 and est.remeasured == 4


def config(**session) -> TrainConfig:
    return TrainConfig.model_validate({"task": "xor", "architecture": {"kind": "all_to_all", "hidden": 3},
                                       "epochs": 3, "batch_size": 4, "eval_every": 3, "seed": 0,
                                       "session": session})


def run(cfg, machine, tmp_path):
    train_set, test_set = xor(), xor()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = Trainer(cfg, machine, train_set, test_set, tmp_path, progress=False).run()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return result, records, caught


def test_the_trainer_counts_drops_and_skips(tmp_path):
    cfg = config(max_remeasure=1, min_good_fraction=0.5)
    inner = DigitalXYMachine(architectures.all_to_all(2, 3, 1))
    dead_spot = Flaky(inner, bad_input=np.pi / 2)  # the two XOR patterns with x0 = +pi/2: half of every batch
    result, records, _ = run(cfg, dead_spot, tmp_path / "half")
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["dropped"] for r in steps] == [2, 2, 2] and [r["remeasured"] for r in steps] == [2, 2, 2]
    assert not any(r["skipped"] for r in steps)
    s = result.summary
    assert s["dropped_samples"] == 6 and s["remeasured_samples"] == 6 and s["skipped_steps"] == 0
    assert [r["flagged_eval"] for r in records if r["kind"] == "eval"] == [4]  # 2 train + 2 test predictions

    strict = config(max_remeasure=0, min_good_fraction=0.75)
    result, records, caught = run(strict, Flaky(inner, bad_input=np.pi / 2), tmp_path / "skip")
    assert result.summary["skipped_steps"] == 3 and all(r["skipped"] for r in records if r["kind"] == "step")
    assert any("skipped: 2 of 4 samples measured cleanly (flagged free and nudged measurements: saturated 4;" in str(w.message) for w in caught)
    init = inner.network.init_params(np.random.default_rng(np.random.SeedSequence(0).spawn(5)[0]),
                                     strict.init.coupling_std, strict.init.bias_max)
    np.testing.assert_array_equal(result.params.w, init.w)  # no step moved a parameter


def test_a_run_started_before_the_new_session_settings_still_resumes(tmp_path):
    """A run folder whose config.yaml predates session.max_remeasure / min_good_fraction resumes with their
    defaults: the saved config is compared after validation."""
    def stop_after_two(state):
        if state.step == 2:
            signal.raise_signal(signal.SIGINT)

    first = run_session(config(), tmp_path / "run", progress=False, on_step=stop_after_two)
    assert first.summary["steps_completed"] == 2
    path = tmp_path / "run" / "config.yaml"
    old = yaml.safe_load(path.read_text())
    for key in ("max_remeasure", "min_good_fraction"):
        del old["session"][key]
    path.write_text(yaml.safe_dump(old, sort_keys=False))
    session = json.loads((tmp_path / "run" / "session.json").read_text())
    del session["files"]  # started before runs recorded their files' hashes
    (tmp_path / "run" / "session.json").write_text(json.dumps(session))
    with pytest.warns(RuntimeWarning, match="cannot be checked for changes"):
        assert run_session(None, tmp_path / "run", progress=False, resume=True).summary["status"] == "completed"
