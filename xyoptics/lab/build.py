"""Building a run from its config: the data sets, the network sized for them, and the optimiser."""

from __future__ import annotations

import dataclasses

from ..config import ConfigError, TrainConfig
from ..core import architectures
from ..core.digital import DigitalXYMachine
from ..core.network import XYNetwork
from ..core.optim import OPTIMIZERS, Optimizer
from ..data.datasets import Dataset, load_task


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
                                            skip_every=arch.skip_every, n_skip=arch.n_skip,
                                            keep_distance=arch.keep_distance)
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


def digital_machine(cfg: TrainConfig, net: XYNetwork) -> DigitalXYMachine:
    """The digital machine with the config's relaxation settings."""
    r = cfg.relax
    return DigitalXYMachine(net, solver=r.solver, tol=r.tol, max_iter=r.max_iter, dtype=r.dtype, backend=r.backend,
                            threads=r.threads)
