"""The EP training loop. It talks to its machine only through the ``XYMachine`` seam.

A run folder holds ``config.yaml`` (the validated config); ``metrics.jsonl`` (one JSON line per EP step,
``"kind": "step"``, and per evaluation, ``"kind": "eval"``); ``checkpoints/step-N.h5`` (checkpoint.py: the
newest ``session.keep_checkpoints``, verified on load, the first at step 0);
``angles/`` (anglelog.py, when angle logging is on); ``summary.json`` (status, final and best accuracies,
wall time, convergence and readout-quality counts); ``params.h5`` (final parameters); ``learning_curves.png``
and ``couplings.png`` (|W| per bond on the network's geometry), and with diagnostics switched on
``diagnostics.h5`` plus PNG maps of the last snapshot (response maps, |W|, |dW|).

A run stops at a step boundary on SIGINT / SIGTERM (status "stopped") and on any error (status "failed", the
error re-raised) after writing a checkpoint; ``train(..., resume=True)`` continues from the newest good one
(``metrics.jsonl`` and the angle log trimmed to it, so no step is lost or repeated). On a machine that
can be replayed (digital, simulated rig) the resumed run ends with exactly the parameters of an uninterrupted
one. A ``DeviceFault`` during a step is retried ``session.max_retries`` times from the same random state.

Model selection and predictions follow ``evaluation``: with ``validation_fraction`` > 0 part of the training set
is held out, never trained on, and the selected epoch, early stopping and ``stop_at_accuracy`` look at it
alone (at the training set without one); the test set is only reported. Every evaluation relaxes each sample
from ``eval_starts`` fresh uniform random starts of all non-input spins and predicts argmax_o sin(phi_o) (for
one output spin: class 1 iff sin(phi_o) > 0) from the start of lowest energy.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from tqdm.auto import tqdm

from ..analysis.diagnostics import DiagnosticsRecorder, bond_maps
from ..config import ConfigError, TrainConfig
from ..core.costs import make_cost
from ..core.digital import DigitalXYMachine
from ..core.ep import EPEstimate, ep_gradient
from ..core.files import JsonlWriter, sha256_file, write_arrays_h5, write_json_atomic, write_text_atomic
from ..core.machine import FLAGS, DeviceFault, XYMachine
from ..core.network import Params
from ..core.provenance import provenance
from ..data.datasets import Dataset
from .anglelog import AngleLog
from .build import build_network, build_optimizer, digital_machine, prepare  # noqa: F401  (public API)
from .checkpoint import ResumePoint, TrainState, resume_point, save_checkpoint, set_aside
from .evaluation import Evaluation, better, evaluate, record_fields, split_validation  # noqa: F401  (public API)
from .preflight import config_text
from .stopping import stop_on_signals

RNG_NAMES = ("init", "shuffle", "train", "eval", "diag")
COUNTERS = ("unconverged_train", *FLAGS, "retries", "remeasured", "dropped", "skipped")


class TrainingFailed(RuntimeError):
    """A run that stopped on an error after saving its checkpoint: ``xyoptics train --resume`` continues it."""


@dataclass(frozen=True)
class RunResult:
    """What a training run returns: the summary written to summary.json and the final parameters."""

    summary: dict
    params: Params


def _quality_counts(est: EPEstimate) -> dict[str, int]:
    """Measurements (samples, free and nudged phases of a step) with each readout flag on any spin."""
    return {k: sum(int(e.flagged(k).sum()) for e in (est.free, *est.nudged)) for k in FLAGS}


def _drift(est: EPEstimate) -> dict:
    """Optical drift over a step's free measurements: the reference phase the inputs re-referenced (circular
    mean, rad) and the median ratio of spot modulation to its calibrated value (laser power and reference)."""
    q = est.free.quality
    if "reference_phase" not in q:
        return {}
    ratio = np.asarray(q["modulation_ratio"], dtype=float)
    return {"reference_phase_rad": round(float(np.angle(np.mean(np.exp(1j * q["reference_phase"])))), 4),
            "modulation_ratio": round(float(np.median(ratio)), 4) if np.isfinite(ratio).all() else None}


def initial_parameters(cfg: TrainConfig, net, rng: np.random.Generator | None = None) -> Params:
    """The parameters a new run of ``cfg`` starts from: drawn with the run's "init" generator (a fresh one from
    the seed unless given), exactly as ``Trainer`` draws them."""
    if rng is None:
        rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(len(RNG_NAMES))[RNG_NAMES.index("init")])
    return net.init_params(rng, cfg.init.coupling_std, cfg.init.bias_max)


class Trainer:
    """One training run of ``cfg`` on ``machine``, resumable from its run folder ``out_dir``.

    ``before_step()`` runs before every EP step (an instrument check, raising ``DeviceFault`` on trouble);
    ``on_step(state)`` after every completed step, with the committed ``TrainState``; ``live`` (a
    ``live.LivePublisher``) after that, with the trainer, the step's estimate and the stop request: a monitor's
    live data and safe stop. ``resume``: True (the newest good checkpoint of ``out_dir``) or a ``ResumePoint``
    already verified; ``init_params``: start a new run from these parameters instead of a random draw."""

    def __init__(self, cfg: TrainConfig, machine: XYMachine, train_set: Dataset, test_set: Dataset,
                 out_dir: Path | None, *, resume: bool | ResumePoint = False, progress: bool = True,
                 before_step=None, on_step=None, init_params: Params | None = None, live=None):
        self.cfg, self.machine, self.net = cfg, machine, machine.network
        train_set, self.validation_set = split_validation(train_set, cfg.validation_fraction, cfg.seed)
        self.train_set, self.test_set, self.out_dir = train_set, test_set, out_dir
        self.progress, self.before_step, self.on_step, self.live = progress, before_step, on_step, live
        seeds = np.random.SeedSequence(cfg.seed).spawn(len(RNG_NAMES))
        self.rngs = {name: np.random.default_rng(s) for name, s in zip(RNG_NAMES, seeds)}
        self.optimizer = build_optimizer(cfg)
        self.cost = make_cost(cfg.ep.cost)
        self.n_batches = math.ceil(len(train_set) / cfg.batch_size)
        log_angles = cfg.session.angles_logged(optical=not isinstance(machine, DigitalXYMachine))
        self._wall_base = 0.0  # wall time of earlier sessions of this run (s)
        if resume:
            self.state = self._restore(resume)
        else:
            params = initial_parameters(cfg, self.net, self.rngs["init"])
            if init_params is not None:  # the draw above still happens: the generators stay as in any run
                params = init_params
            self.state = TrainState(params, self.optimizer.state_dict(), {}, counters=dict.fromkeys(COUNTERS, 0))
            self.state.counters.update(epoch_cost_sum=0.0, epoch_steps=0)
            self.recorder = DiagnosticsRecorder(params) if cfg.diagnostics else None
            self._commit_diagnostics()
            self._commit(0.0)
        self.metrics = self.angles = None
        last = self.state.history[-1] if self.state.history else None
        self._accuracies = {} if last is None else {k: f"{last[f'{k}_accuracy']:.2f}" for k in
                                                     ("train", "validation", "test") if f"{k}_accuracy" in last}
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            if not resume and not (out_dir / "config.yaml").exists():  # a session has written (and hashed) it
                write_text_atomic(out_dir / "config.yaml", config_text(cfg))
            try:
                self.metrics = JsonlWriter(out_dir / "metrics.jsonl", keep=self.state.metrics_lines if resume else None,
                                           expect_sha256=self.state.metrics_sha256 if resume else None)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if log_angles:
                self.angles = AngleLog(out_dir / "angles", resume_step=self.state.step if resume else None)
            if not resume:
                self.checkpoint()  # step 0: every started run can be resumed

    # -- state ------------------------------------------------------------------------------------------
    def _restore(self, point: bool | ResumePoint) -> TrainState:
        if self.out_dir is None:
            raise ValueError("resuming needs the run folder")
        # compared after validation, so settings added since the run started take their defaults on both sides
        saved = TrainConfig.model_validate(yaml.safe_load((self.out_dir / "config.yaml").read_text()))
        if saved.model_dump(mode="json") != self.cfg.model_dump(mode="json"):
            raise ConfigError(f"{self.out_dir}: the config differs from the one the run was started with")
        point = point if isinstance(point, ResumePoint) else resume_point(self.out_dir)
        state = point.state
        if state.counters.get("finished"):
            raise ConfigError(f"{self.out_dir}: the run already ended ({state.counters['finished']})")
        if point.skipped:
            warnings.warn(point.message(), RuntimeWarning, stacklevel=3)
            set_aside(self.out_dir, point)
        for stray in [*self.out_dir.glob(".*.tmp"), *self.out_dir.glob("checkpoints/.*.tmp")]:
            stray.unlink()  # left by a process killed while writing
        self.optimizer.load_state_dict(state.optimizer)
        for name, rng in self.rngs.items():
            rng.bit_generator.state = state.rngs[name]
        if state.machine is not None and hasattr(self.machine, "load_state_dict"):
            self.machine.load_state_dict(state.machine)
        self.recorder = None
        if self.cfg.diagnostics:
            self.recorder = DiagnosticsRecorder()
            self.recorder.load_state_dict(state.diagnostics)
        self._wall_base = state.wall_s
        return state

    def _commit(self, elapsed: float) -> None:
        """Capture what a checkpoint needs beyond the fields the loop has just set."""
        s = self.state
        s.optimizer = self.optimizer.state_dict()
        s.rngs = {name: rng.bit_generator.state for name, rng in self.rngs.items()}
        s.machine = self.machine.state_dict() if hasattr(self.machine, "state_dict") else None
        s.wall_s = round(self._wall_base + elapsed, 3)

    def _commit_diagnostics(self) -> None:
        """The recorder changes only when it records, at an epoch's end, so it is captured with that boundary."""
        self.state.diagnostics = self.recorder.state_dict() if self.recorder is not None else None

    def checkpoint(self) -> None:
        """Angles of the committed steps first, then the checkpoint that covers them."""
        if self.out_dir is None:
            return
        if self.angles is not None and (chunk := self.angles.flush()) is not None:
            self.state.angle_chunks[chunk.name] = sha256_file(chunk)
        if self.metrics is not None:
            self.state.metrics_sha256 = self.metrics.sha256
        save_checkpoint(self.out_dir, self.state, keep=self.cfg.session.keep_checkpoints)

    def _log(self, record: dict) -> None:
        if self.metrics is not None:
            self.metrics.write(record)
        self.state.metrics_lines += 1

    # -- one EP step, retried on device faults ------------------------------------------------------------
    def _measure(self, samples: np.ndarray) -> tuple[EPEstimate, int]:
        cfg, rng = self.cfg, self.rngs["train"]
        data = self.train_set
        for attempt in range(cfg.session.max_retries + 1):
            saved = rng.bit_generator.state
            try:
                if self.before_step is not None:
                    self.before_step()
                est = ep_gradient(self.machine, self.state.params, data.x[samples], data.targets[samples],
                                  beta=cfg.ep.beta, cost=self.cost, rng=rng, variant=cfg.ep.variant,
                                  m_init=cfg.ep.m_init, max_remeasure=cfg.session.max_remeasure,
                                  min_good_fraction=cfg.session.min_good_fraction,
                                  adaptive_max_gain=cfg.ep.adaptive_max_gain if cfg.ep.nudge == "adaptive" else None)
                return est, attempt
            except DeviceFault as exc:
                if attempt == cfg.session.max_retries:
                    raise DeviceFault(f"{exc} (still failing after {attempt} retries)") from exc
                warnings.warn(f"step {self.state.step + 1}: {exc}; retrying ({attempt + 1}/"
                              f"{cfg.session.max_retries})", RuntimeWarning, stacklevel=2)
                rng.bit_generator.state = saved
                time.sleep(cfg.session.retry_wait_s)
        raise AssertionError("unreachable")

    def _train_epoch(self, stop, bar, t0: float) -> bool:
        """The rest of the epoch in progress; False when a stop was requested."""
        s, bs = self.state, self.cfg.batch_size
        order = s.order if s.order is not None else self.rngs["shuffle"].permutation(len(self.train_set))
        while s.batch < self.n_batches:
            samples = order[s.batch * bs:(s.batch + 1) * bs]
            est, retries = self._measure(samples)
            params = s.params if est.skipped else self.optimizer.step(s.params, est.grad)
            for name, p in params.as_dict().items():
                if not np.all(np.isfinite(p)):
                    raise FloatingPointError(f"parameters {name!r} became non-finite at step {s.step + 1}")
            quality = _quality_counts(est)
            if est.skipped:
                named = ", ".join(f"{k} {n}" for k, n in quality.items() if n) or "none, not converged"
                warnings.warn(f"step {s.step + 1} skipped: {len(est.kept) - est.n_dropped} of {len(est.kept)} "
                              f"samples measured cleanly (flagged free and nudged measurements: {named}; "
                              f"session.min_good_fraction = {self.cfg.session.min_good_fraction})",
                              RuntimeWarning, stacklevel=2)
            record = {"kind": "step", "step": s.step + 1, "epoch": s.epoch, "batch": s.batch + 1,
                      "cost": None if est.skipped else est.cost, "unconverged": est.n_unconverged, **quality,
                      "remeasured": est.remeasured, "dropped": est.n_dropped, "skipped": est.skipped,
                      **_drift(est), "retries": retries,
                      "wall_s": round(self._wall_base + time.perf_counter() - t0, 3)}
            self._log(record)
            if self.angles is not None:
                self.angles.add(s.step + 1, samples, est)
            s.params, s.order, s.batch, s.step = params, order, s.batch + 1, s.step + 1
            c = s.counters
            c["unconverged_train"] += est.n_unconverged
            c["retries"] += retries
            for key, n in (("remeasured", est.remeasured), ("dropped", est.n_dropped), ("skipped", est.skipped)):
                c[key] = c.get(key, 0) + int(n)  # .get: checkpoints written before these counters existed
            if not est.skipped:
                c["epoch_cost_sum"] += est.cost
                c["epoch_steps"] += 1
            for k, n in quality.items():
                c[k] = c.get(k, 0) + n
            self._commit(time.perf_counter() - t0)
            bar.set_postfix({"epoch": f"{s.epoch}/{self.cfg.epochs}", "cost": f"{est.cost:.3f}",
                             **({"dropped": c["dropped"]} if c["dropped"] else {}),
                             **self._accuracies}, refresh=False)
            bar.update(1)
            if self.on_step is not None:
                self.on_step(s)
            if self.live is not None:
                self.live.after_step(self, est, stop)
            if s.step % self.cfg.session.checkpoint_every == 0:
                self.checkpoint()
            if stop.requested:
                return False
        return True

    def _end_epoch(self, bar, t0: float) -> bool:
        """Diagnostics and evaluation closing the epoch in progress; True when the target accuracy is reached."""
        cfg, s = self.cfg, self.state
        epoch, reached = s.epoch, False
        if self.recorder is not None and (epoch % cfg.diagnostics.every == 0 or epoch == cfg.epochs):
            k = cfg.diagnostics.n_samples
            self.recorder.record(epoch, self.machine, s.params, self.test_set.x[:k], self.test_set.targets[:k],
                                 beta=cfg.ep.beta, cost=self.cost, rng=self.rngs["diag"])
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            splits = {"train": self.train_set, "validation": self.validation_set, "test": self.test_set}
            evals = {name: evaluate(self.machine, s.params, data, self.cost, self.rngs["eval"],
                                    starts=cfg.eval_starts)
                     for name, data in splits.items() if data is not None}
            c = s.counters
            record = {"kind": "eval", "epoch": epoch, "step": s.step,
                      "train_cost": c["epoch_cost_sum"] / max(c["epoch_steps"], 1)}
            for name, ev in evals.items():
                fields = record_fields(name, ev)
                if name == "train":
                    fields.pop("train_cost")  # the record's train_cost is the epoch's mean EP cost
                record.update(fields)
            selection = evals.get("validation", evals["train"])
            record.update({"selection_accuracy": selection.accuracy,
                           "unconverged_train": s.counters["unconverged_train"],
                           "unconverged_eval": sum(ev.n_unconverged for ev in evals.values()),
                           "flagged_eval": sum(ev.n_flagged for ev in evals.values()),
                           "wall_s": round(self._wall_base + time.perf_counter() - t0, 3)})
            self._log(record)
            s.history.append(record)
            if better(record, s.best):
                s.best = {k: record.get(k) for k in ("epoch", "selection_accuracy", "train_accuracy",
                                                     "validation_accuracy", "test_accuracy")}
            self._accuracies = {k: f"{record[f'{k}_accuracy']:.2f}" for k in ("train", "validation", "test")
                                if f"{k}_accuracy" in record}
            reached = cfg.stop_at_accuracy is not None and selection.accuracy >= cfg.stop_at_accuracy
            stale = sum(1 for r in s.history if r["epoch"] > s.best["epoch"])
            if cfg.early_stop_patience is not None and stale >= cfg.early_stop_patience:
                s.counters["early_stopped"] = epoch
                reached = True
        s.epoch, s.batch, s.order = epoch + 1, 0, None
        s.counters.update(epoch_cost_sum=0.0, epoch_steps=0)
        self._commit_diagnostics()
        self._commit(time.perf_counter() - t0)
        self.checkpoint()
        return reached

    # -- the whole run -------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Train to the end (or to the target accuracy, or to a stop request), then write the results."""
        cfg, s = self.cfg, self.state
        t0 = time.perf_counter()
        total = cfg.epochs * self.n_batches
        bar = tqdm(total=total, initial=min(s.step, total), desc=f"train {self.net.name}", unit="step",
                   disable=not self.progress, dynamic_ncols=True)
        status, error = "completed", None
        try:
            with stop_on_signals() as stop:
                while s.epoch <= cfg.epochs:
                    if not self._train_epoch(stop, bar, t0):
                        break
                    if self._end_epoch(bar, t0):
                        status = "early_stopped" if s.counters.get("early_stopped") else "target_reached"
                        break
                    if stop.requested:
                        break
                if stop.requested:
                    status = f"stopped ({stop.reason})"
        except KeyboardInterrupt:
            status, error = "stopped (KeyboardInterrupt)", "interrupted at once by a second Ctrl-C"
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            try:
                self._finish(status, error)
            except Exception as inner:  # never mask the error that stopped the run
                warnings.warn(f"could not write the results of the failed run: {inner}", RuntimeWarning)
            raise TrainingFailed(f"training stopped at step {s.step}: {error}") from exc
        finally:
            bar.close()
        return self._finish(status, error)

    def _finish(self, status: str, error: str | None) -> RunResult:
        s, net = self.state, self.net
        if status in ("completed", "target_reached", "early_stopped"):
            s.counters["finished"] = status
        self.checkpoint()
        last = s.history[-1] if s.history else {}
        c = s.counters
        summary = {"status": status, "error": error, "network": net.name, "n_spins": net.n_spins,
                   "n_couplings": net.n_couplings, "n_parameters": net.n_parameters,
                   "steps_completed": s.step, "epochs_completed": s.epoch - 1,
                   "selected_by": "validation" if self.validation_set is not None else "train",
                   **{f"selected_{k}": (s.best or {}).get(k) for k in ("epoch", "train_accuracy",
                                                                       "validation_accuracy", "test_accuracy")},
                   **{f"final_{k}_accuracy": last.get(f"{k}_accuracy") for k in ("train", "validation", "test")},
                   "final_train_cost": last.get("train_cost"), "final_test_cost": last.get("test_cost"),
                   "eval_starts": self.cfg.eval_starts,
                   **({"final_test_accuracy_one_start": last.get("test_accuracy_one_start")}
                      if self.cfg.eval_starts > 1 else {}),
                   "unconverged_train_relaxations": c["unconverged_train"],
                   **{f"{k}_samples": c.get(k, 0) for k in FLAGS},
                   "remeasured_samples": c.get("remeasured", 0), "dropped_samples": c.get("dropped", 0),
                   "skipped_steps": c.get("skipped", 0), "device_retries": c["retries"], "wall_time_s": s.wall_s}
        if self.out_dir is not None:
            from ..analysis.plots import plot_bond_map, plot_learning_curves, render_diagnostics  # matplotlib: ~1 s

            out = self.out_dir
            if not c.get("finished"):
                summary["resume"] = f"xyoptics train --resume {out}"
            summary["provenance"] = provenance()
            write_json_atomic(out / "summary.json", summary)
            write_arrays_h5(out / "params.h5", s.params.as_dict(), {"network": net.name, "step": s.step})
            if s.history:
                plot_learning_curves(s.history, out / "learning_curves.png")
            plot_bond_map(net, bond_maps(net, s.params)["abs_w"], out / "couplings.png",
                          f"{net.name}: coupling strength after step {s.step}", label=r"$|W_b|$")
            if self.recorder is not None and len(self.recorder):
                self.recorder.save(out / "diagnostics.h5")
                render_diagnostics(net, self.recorder.arrays(), out)
        return RunResult(summary, s.params)


def train(cfg: TrainConfig, out_dir: str | Path | None = None, *, machine: XYMachine | None = None,
          progress: bool = True, resume: bool = False, before_step=None, on_step=None) -> RunResult:
    """Train with EP as ``cfg`` says, on ``machine`` (default: the digital machine of ``cfg.relax``); write the
    run folder if ``out_dir`` is given, or continue the run there from its checkpoint with ``resume=True``.
    Returns when the run completes, reaches ``stop_at_accuracy`` or is stopped by SIGINT / SIGTERM (summary
    status says which); raises ``TrainingFailed`` after a checkpoint when an error stops it."""
    train_set, test_set, net = prepare(cfg)
    if machine is None:
        machine = digital_machine(cfg, net)
    trainer = Trainer(cfg, machine, train_set, test_set, Path(out_dir) if out_dir is not None else None,
                      resume=resume, progress=progress, before_step=before_step, on_step=on_step)
    return trainer.run()
