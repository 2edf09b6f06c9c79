"""Evaluation and model selection: the validation split, multi-start predictions, the selected epoch.

Honest protocol: every choice made during training (the "best" epoch, early stopping, a target accuracy) is
made on a **validation split** held out of the training set (``TrainConfig.validation_fraction``: stratified,
drawn from its own seeded stream, the same for every run of a seed), or on the training set itself when there
is none (XOR, whose four patterns are both training and test set). The test set is evaluated for the curves
only, and reported at the selected epoch and at the end.

Predictions: a sample is relaxed from ``starts`` fresh uniform random starts; the prediction is read from the
relaxation with the lowest free energy E(phi) (the model energy of the measured angles, in the units of the
couplings), among the usable ones (converged, not flagged). With several starts the accuracy of the first
start alone is reported beside it (``accuracy_one_start``), since a multistable network may classify
differently from one start to the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.costs import predict
from ..core.machine import XYMachine
from ..core.network import Params
from ..core.schema import ConfigError
from ..data.datasets import Dataset, stratified_split

VALIDATION_STREAM = 9001  # first key of the validation split's generator (after the seed)


def split_validation(train_set: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """(samples trained on, validation set); ``fraction`` = 0 gives (train_set, None). Stratified by class,
    drawn from SeedSequence([seed, VALIDATION_STREAM]); refuses a split that leaves a class out of either part."""
    if fraction == 0:
        return train_set, None
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), VALIDATION_STREAM]))
    fit, held = stratified_split(train_set.labels, fraction, rng)
    classes = np.unique(train_set.labels)
    for part, idx in (("training", fit), ("validation", held)):
        missing = np.setdiff1d(classes, train_set.labels[idx])
        if len(missing):
            raise ConfigError(f"validation_fraction {fraction} on {train_set.name} ({len(train_set)} samples) "
                              f"leaves class(es) {missing.tolist()} out of the {part} part; use a larger or "
                              f"smaller fraction, or 0 (select on the training set)")
    return (train_set.subset(fit, f"{train_set.name} (fit)"),
            train_set.subset(held, f"{train_set.name} (validation)"))


@dataclass(frozen=True)
class Evaluation:
    """Accuracy and mean cost over every sample (from its lowest-energy start); ``n_unconverged`` relaxations
    and ``n_flagged`` predictions that came from an unusable measurement are counted, not hidden.
    ``accuracy_one_start``: the accuracy of the first start alone (None with a single start)."""

    accuracy: float
    cost: float
    n_unconverged: int
    n_flagged: int = 0
    accuracy_one_start: float | None = None


def evaluate(machine: XYMachine, params: Params, data: Dataset, cost, rng: np.random.Generator,
             batch_size: int = 256, starts: int = 1) -> Evaluation:
    """Accuracy and mean free-phase cost over ``data``, each sample relaxed from ``starts`` random starts
    (``batch_size`` samples, i.e. ``batch_size * starts`` relaxations, at a time)."""
    if starts < 1:
        raise ValueError("starts must be at least 1")
    net = machine.network
    out = net.outputs
    correct = correct_first = 0
    total_cost, unconverged, flagged = 0.0, 0, 0
    for x, labels, targets in data.batches(batch_size):
        n = len(x)
        eq = machine.equilibrate(params, np.tile(x, (starts, 1)), rng=rng)  # start-major: row s * n + i
        phi_out = eq.phases[:, out].astype(np.float64).reshape(starts, n, len(out))
        usable = eq.usable.reshape(starts, n)
        energy = np.where(usable, net.energy(params, eq.phases.astype(np.float64)).reshape(starts, n), np.inf)
        pick = np.where(usable.any(axis=0), np.argmin(energy, axis=0), 0)
        chosen = phi_out[pick, np.arange(n)]
        correct += int(np.sum(predict(chosen) == labels))
        correct_first += int(np.sum(predict(phi_out[0]) == labels))
        total_cost += float(np.sum(cost.value(chosen, targets)))
        unconverged += eq.n_unconverged
        flagged += int(np.count_nonzero(~usable[pick, np.arange(n)]))
    return Evaluation(correct / len(data), total_cost / len(data), unconverged, flagged,
                      correct_first / len(data) if starts > 1 else None)


def record_fields(split: str, ev: Evaluation) -> dict:
    """The metrics.jsonl fields of one split's evaluation."""
    fields = {f"{split}_accuracy": ev.accuracy, f"{split}_cost": ev.cost}
    if ev.accuracy_one_start is not None:
        fields[f"{split}_accuracy_one_start"] = ev.accuracy_one_start
    return fields


def better(candidate: dict, best: dict | None) -> bool:
    """Whether an evaluation record beats the selected one: a higher selection accuracy (earliest epoch on a
    tie). A selection saved by a run started before selection existed (no ``selection_accuracy``) is replaced."""
    return best is None or candidate["selection_accuracy"] > best.get("selection_accuracy", -1.0)
