"""XOR with the 2024 protocol on a 6-spin all-to-all network (2 inputs, 3 hidden, 1 output).

beta = 0.1, one-sided EP with the log-cosine cost, plain gradient descent lr = 0.1, full batch of the four
patterns, one random start per step, at most 1000 steps; training stops early once an evaluation (every 25
steps) classifies all four patterns. Success is then judged strictly: every pattern must be classified
correctly from each of 10 fresh random starts (prediction: class 1 iff sin(phi_out) > 0).
"""

from pathlib import Path

import numpy as np
import pytest

from xyoptics.config import load_config
from xyoptics.core.costs import LogCosineCost
from xyoptics.core.digital import DigitalXYMachine
from xyoptics.data.datasets import xor
from xyoptics.lab.trainer import build_network, evaluate, train

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "xor_all_to_all.yaml"
SEEDS = range(8)


@pytest.mark.slow
def test_xor_success_rate_over_8_seeds():
    base = load_config(CONFIG)
    cfg = base.model_copy(update={"epochs": 1000, "eval_every": 25, "stop_at_accuracy": 1.0})
    data = xor()
    machine = DigitalXYMachine(build_network(cfg, data), tol=cfg.relax.tol, max_iter=cfg.relax.max_iter)
    successes, steps = 0, []
    for seed in SEEDS:
        result = train(cfg.model_copy(update={"seed": seed}), None, progress=False)
        steps.append(result.summary["epochs_completed"])
        rng = np.random.default_rng(1000 + seed)
        ok = all(evaluate(machine, result.params, data, LogCosineCost(), rng).accuracy == 1.0 for _ in range(10))
        successes += ok
    print(f"XOR N=6: {successes}/{len(SEEDS)} seeds classify all four patterns; steps used {steps}")
    assert successes >= 0.8 * len(SEEDS)
