"""Training configuration: a YAML file validated by pydantic before any work starts.

Unknown keys are errors, so a typo never silently falls back to a default; a bad value raises ``ConfigError``
naming its field (``core.schema``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from .core.schema import ConfigError, Strict, load_yaml_model  # ConfigError: what load_config raises


class AllToAllConfig(Strict):
    """All-to-all network; input and output counts come from the task."""

    kind: Literal["all_to_all"]
    hidden: int = Field(ge=0, description="number of hidden spins")


class LayeredConfig(Strict):
    """Dense layered network: task inputs, these hidden layers, task outputs."""

    kind: Literal["layered"]
    hidden: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)


class SquareLatticeConfig(Strict):
    """rows x cols lattice; the task's inputs spread along row 0, its outputs along the last row."""

    kind: Literal["square_lattice"]
    rows: int = Field(ge=2)
    cols: int = Field(ge=1)
    skip_length: int | None = Field(default=None, ge=2)
    skip_along: Literal["rows", "cols", "both"] = "both"
    skip_every: int = Field(default=1, ge=1)
    n_skip: int | None = Field(default=None, ge=1)
    keep_distance: bool = Field(default=False, description=(
        "place the n_skip skips only where they leave every input-output graph distance unchanged (a control)"))


class LocalLayerConfig(Strict):
    window: int = Field(ge=1)
    stride: int = Field(default=1, ge=1)
    channels: int = Field(default=1, ge=1)
    shared: bool = False
    intra: bool = False


class LocalLayersConfig(Strict):
    """Stacked lattices: the task's inputs as an image grid, local (LCL / CNN-like) hidden layers, dense outputs."""

    kind: Literal["local_layers"]
    input_shape: tuple[int, int]
    layers: list[LocalLayerConfig] = Field(min_length=1)


ArchitectureConfig = Annotated[Union[AllToAllConfig, LayeredConfig, SquareLatticeConfig, LocalLayersConfig],
                               Field(discriminator="kind")]


class TaskConfig(Strict):
    """A data set by name with its options (e.g. digits: protocol; mnist: n_train, n_test, path)."""

    name: Literal["xor", "iris", "digits", "mnist"]
    options: dict = Field(default_factory=dict)


class InitConfig(Strict):
    """w ~ N(0, coupling_std^2) (default 1/sqrt(mean degree)), h ~ U(0, bias_max), psi ~ U(-pi, pi)."""

    coupling_std: float | None = Field(default=None, gt=0)
    bias_max: float = Field(default=0.5, ge=0)


class EPConfig(Strict):
    beta: float = Field(default=0.1, gt=0)
    variant: Literal["one_sided", "symmetric"] = "one_sided"
    cost: Literal["log_cosine", "cosine"] = "log_cosine"
    m_init: int = Field(default=1, ge=1, description="random starts per sample and step")
    nudge: Literal["fixed", "adaptive"] = Field(default="fixed", description=(
        "adaptive: each output's cosine-nudge strength set from its free angle, beta / (1 + cos Delta), so the "
        "injected force at the free state is the log-cosine cost's (needs cost: cosine)"))
    adaptive_max_gain: float = Field(default=10.0, ge=0.5, description="cap on the adaptive strength / beta")

    @model_validator(mode="after")
    def _adaptive_needs_cosine(self):
        if self.nudge == "adaptive" and self.cost != "cosine":
            raise ValueError("nudge: adaptive shapes an injected (cosine) nudge; set cost: cosine")
        return self


class RelaxConfig(Strict):
    solver: Literal["lbfgs", "fire", "fire2", "nesterov", "euler"] = Field(
        default="lbfgs", description="minimiser (xyoptics.core.solvers); lbfgs measured fastest (benchmarks/relax.py)")
    backend: Literal["auto", "compiled", "numpy"] = Field(
        default="auto", description="compiled: numba loop per sample (lbfgs, fire); auto: compiled where it applies")
    threads: int | None = Field(default=None, ge=1, description="threads of the compiled loop (default: all cores)")
    tol: float = Field(default=1e-4, gt=0, description="stop when max|force| < tol")
    max_iter: int = Field(default=20000, ge=1)
    dtype: Literal["float32", "float64"] = "float32"
    structured: bool = Field(default=False, description="stencil / kernel-offset path for lattice-like networks")


class OptimizerConfig(Strict):
    kind: Literal["sgd", "momentum", "adam"] = "sgd"
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    trainable: list[Literal["w", "h", "psi"]] = Field(default_factory=lambda: ["w", "h", "psi"], min_length=1)


class DiagnosticsConfig(Strict):
    """Record site response maps and bond maps every ``every`` epochs on the first ``n_samples`` test samples."""

    every: int = Field(ge=1)
    n_samples: int = Field(default=16, ge=1)


class SessionConfig(Strict):
    """How a run keeps its data and survives faults: a checkpoint every ``checkpoint_every`` EP steps (and at
    every evaluation and stop), the newest ``keep_checkpoints`` kept; the free and nudged angles of every step logged to HDF5 (``log_angles``; None:
    on for optical machines, off for the digital one); a failing device step retried ``max_retries`` times,
    ``retry_wait_s`` apart, before the run stops safely; ``min_free_disk_mb`` kept free beyond the run's
    estimated size. A sample whose free or nudged measurement is unusable (not converged, or flagged by the
    readout) is measured again from a fresh start up to ``max_remeasure`` times, then dropped from the step's
    gradient; a step keeping less than ``min_good_fraction`` of its samples makes no update (skipped)."""

    checkpoint_every: int = Field(default=20, ge=1)
    keep_checkpoints: int = Field(default=3, ge=1)
    log_angles: bool | None = None
    max_retries: int = Field(default=3, ge=0)
    retry_wait_s: float = Field(default=1.0, ge=0)
    min_free_disk_mb: float = Field(default=100.0, ge=0)
    max_remeasure: int = Field(default=2, ge=0)
    min_good_fraction: float = Field(default=0.5, ge=0, le=1)

    def angles_logged(self, optical: bool) -> bool:
        return optical if self.log_angles is None else self.log_angles


class TrainConfig(Strict):
    """One training run: task, architecture, EP and relaxation settings, optimiser, schedule, seed."""

    task: TaskConfig
    architecture: ArchitectureConfig
    init: InitConfig = InitConfig()
    ep: EPConfig = EPConfig()
    relax: RelaxConfig = RelaxConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    epochs: int = Field(ge=1)
    batch_size: int = Field(default=4, ge=1)
    eval_every: int = Field(default=1, ge=1, description="epochs between accuracy evaluations")
    diagnostics: DiagnosticsConfig | None = None
    validation_fraction: float = Field(default=0.0, ge=0, lt=1, description=(
        "share of the training set held out (stratified, seeded) for model selection; 0: select on the training "
        "set"))
    eval_starts: int = Field(default=1, ge=1, description="random starts per sample in evaluations; the prediction "
                             "comes from the lowest-energy one")
    stop_at_accuracy: float | None = Field(default=None, gt=0, le=1, description=(
        "stop once an evaluation reaches this selection accuracy (validation, or training set without one)"))
    early_stop_patience: int | None = Field(default=None, ge=1, description=(
        "stop after this many evaluations without a higher selection accuracy"))
    session: SessionConfig = SessionConfig()
    seed: int = Field(ge=0)

    @field_validator("task", mode="before")
    @classmethod
    def _task_by_name(cls, v):
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _eval_cadence(self):
        if self.eval_every > self.epochs:
            raise ValueError(f"eval_every ({self.eval_every}) exceeds epochs ({self.epochs})")
        return self


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a training config; raises ConfigError naming every bad field."""
    return load_yaml_model(path, TrainConfig)
