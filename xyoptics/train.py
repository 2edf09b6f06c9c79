"""The EP training loop. It talks to its machine only through the ``XYMachine`` seam.

A run folder holds ``config.yaml`` (the validated config), ``metrics.jsonl`` (one JSON line per evaluated epoch),
``summary.json`` (final and best accuracies, wall time, convergence counts), ``params.h5`` (final parameters),
``learning_curves.png``, and with diagnostics switched on ``diagnostics.h5`` plus PNG maps of the last snapshot.

Predictions: every evaluation relaxes each sample once from a fresh uniform random start of all non-input spins
(as in training) and predicts argmax_o sin(phi_o) (for one output spin: class 1 iff sin(phi_o) > 0).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from tqdm.auto import tqdm

from . import architectures
from .config import ConfigError, TrainConfig
from .costs import make_cost, predict
from .data import Dataset, load_task
from .diagnostics import DiagnosticsRecorder
from .digital import DigitalXYMachine
from .ep import ep_gradient
from .machine import XYMachine
from .network import Params, XYNetwork
from .optim import OPTIMIZERS, Optimizer
from .plots import plot_learning_curves, render_diagnostics
from .runio import JsonlWriter, write_arrays_h5, write_json_atomic, write_text_atomic


def build_network(cfg: TrainConfig, data: Dataset) -> XYNetwork:
    """The configured architecture sized for the task's inputs and outputs."""
    arch = cfg.architecture
    if arch.kind == "all_to_all":
        return architectures.all_to_all(data.n_inputs, arch.hidden, data.n_outputs)
    if arch.kind == "layered":
        return architectures.layered([data.n_inputs, *arch.hidden, data.n_outputs])
    if arch.kind == "square_lattice":
        return architectures.square_lattice(arch.rows, arch.cols, data.n_inputs, data.n_outputs,
                                            skip_length=arch.skip_length, skip_along=arch.skip_along,
                                            skip_every=arch.skip_every, n_skip=arch.n_skip)
    if arch.input_shape[0] * arch.input_shape[1] != data.n_inputs:
        raise ValueError(f"input_shape {arch.input_shape} does not hold the task's {data.n_inputs} inputs")
    layers = [architectures.LocalLayer(**layer.model_dump()) for layer in arch.layers]
    return architectures.local_layers(arch.input_shape, layers, data.n_outputs)


def build_optimizer(cfg: TrainConfig) -> Optimizer:
    o = cfg.optimizer
    extra = {"momentum": {"momentum": o.momentum}, "adam": {"beta1": o.beta1, "beta2": o.beta2}}.get(o.kind, {})
    return OPTIMIZERS[o.kind](o.lr, trainable=o.trainable, **extra)


def prepare(cfg: TrainConfig) -> tuple[Dataset, Dataset, XYNetwork]:
    """Load the task and build the network; any mismatch raises ConfigError before work starts."""
    try:
        train_set, test_set = load_task(cfg.task.name, seed=cfg.seed, **cfg.task.options)
    except (ValueError, TypeError, OSError) as exc:
        raise ConfigError(f"task {cfg.task.name!r}: {exc}") from None
    try:
        net = build_network(cfg, train_set)
    except ValueError as exc:
        raise ConfigError(f"architecture {cfg.architecture.kind!r}: {exc}") from None
    if cfg.relax.structured:
        net = dataclasses.replace(net, structured=True)
    return train_set, test_set, net


@dataclass(frozen=True)
class RunResult:
    """What a training run returns: the summary written to summary.json and the final parameters."""

    summary: dict
    params: Params


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    cost: float
    n_unconverged: int


def evaluate(machine: XYMachine, params: Params, data: Dataset, cost, rng: np.random.Generator,
             batch_size: int = 256) -> Evaluation:
    """Accuracy and mean free-phase cost with one random start per sample."""
    correct, total_cost, unconverged = 0, 0.0, 0
    out = machine.network.outputs
    for x, labels, targets in data.batches(batch_size):
        eq = machine.equilibrate(params, x, rng=rng)
        phi_out = eq.phases[:, out].astype(np.float64)
        correct += int(np.sum(predict(phi_out) == labels))
        total_cost += float(np.sum(cost.value(phi_out, targets)))
        unconverged += eq.n_unconverged
    return Evaluation(correct / len(data), total_cost / len(data), unconverged)


def train(cfg: TrainConfig, out_dir: str | Path | None = None, *, machine: XYMachine | None = None,
          progress: bool = True, rig=None, calibration: list[dict] | None = None) -> RunResult:
    """Train with EP as ``cfg`` says; write the run folder if ``out_dir`` is given."""
    t0 = time.perf_counter()
    train_set, test_set, net = prepare(cfg)
    if machine is not None:
        net = machine.network
    else:
        r = cfg.relax
        machine = DigitalXYMachine(net, solver=r.solver, tol=r.tol, max_iter=r.max_iter, dtype=r.dtype)
    rng_init, rng_shuffle, rng_train, rng_eval, rng_diag = (np.random.default_rng(s)
                                                            for s in np.random.SeedSequence(cfg.seed).spawn(5))
    params = net.init_params(rng_init, cfg.init.coupling_std, cfg.init.bias_max)
    optimizer = build_optimizer(cfg)
    cost = make_cost(cfg.ep.cost)
    recorder = DiagnosticsRecorder(params) if cfg.diagnostics else None
    history: list[dict] = []

    metrics = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        if rig is not None:
            write_text_atomic(out_dir / "rig.yaml", yaml.safe_dump(rig.model_dump(by_alias=True), sort_keys=False))
        if calibration is not None:
            write_json_atomic(out_dir / "calibration.json", [{**r, "path": str(r["path"])} for r in calibration])
        metrics = JsonlWriter(out_dir / "metrics.jsonl")

    best, last, status = None, None, "completed"
    unconverged_train = 0
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"train {net.name}", unit="epoch", disable=not progress)
    try:
        for epoch in bar:
            costs = []
            for x, _, targets in train_set.batches(cfg.batch_size, rng_shuffle):
                est = ep_gradient(machine, params, x, targets, beta=cfg.ep.beta, cost=cost, rng=rng_train,
                                  variant=cfg.ep.variant, m_init=cfg.ep.m_init)
                params = optimizer.step(params, est.grad)
                costs.append(est.cost)
                unconverged_train += est.n_unconverged
            if recorder is not None and (epoch % cfg.diagnostics.every == 0 or epoch == cfg.epochs):
                k = cfg.diagnostics.n_samples
                recorder.record(epoch, machine, params, test_set.x[:k], test_set.targets[:k], beta=cfg.ep.beta,
                                cost=cost, rng=rng_diag)
            if epoch % cfg.eval_every and epoch != cfg.epochs:
                continue
            tr = evaluate(machine, params, train_set, cost, rng_eval)
            te = evaluate(machine, params, test_set, cost, rng_eval)
            last = {"epoch": epoch, "train_cost": float(np.mean(costs)), "train_accuracy": tr.accuracy,
                    "test_accuracy": te.accuracy, "test_cost": te.cost,
                    "unconverged_train": unconverged_train, "unconverged_eval": tr.n_unconverged + te.n_unconverged,
                    "wall_s": round(time.perf_counter() - t0, 3)}
            if best is None or te.accuracy > best["test_accuracy"]:
                best = {"epoch": epoch, "test_accuracy": te.accuracy}
            bar.set_postfix(cost=f"{last['train_cost']:.3f}", train=f"{tr.accuracy:.2f}", test=f"{te.accuracy:.2f}")
            history.append(last)
            if metrics is not None:
                metrics.write(last)
            if cfg.stop_at_accuracy is not None and te.accuracy >= cfg.stop_at_accuracy:
                status = "target_reached"
                break
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        bar.close()

    summary = {"status": status, "network": net.name, "n_spins": net.n_spins, "n_couplings": net.n_couplings,
               "n_parameters": net.n_parameters, "epochs_completed": last["epoch"] if last else 0,
               "final_train_accuracy": last["train_accuracy"] if last else None,
               "final_test_accuracy": last["test_accuracy"] if last else None,
               "best_test_accuracy": best["test_accuracy"] if best else None,
               "best_epoch": best["epoch"] if best else None,
               "unconverged_train_relaxations": unconverged_train,
               "wall_time_s": round(time.perf_counter() - t0, 3)}
    if out_dir is not None:
        write_json_atomic(out_dir / "summary.json", summary)
        write_arrays_h5(out_dir / "params.h5", params.as_dict(), {"network": net.name})
        if history:
            plot_learning_curves(history, out_dir / "learning_curves.png")
        if recorder is not None and len(recorder):
            recorder.save(out_dir / "diagnostics.h5")
            render_diagnostics(net, recorder.arrays(), out_dir)
    if status == "interrupted":
        raise KeyboardInterrupt
    return RunResult(summary, params)
