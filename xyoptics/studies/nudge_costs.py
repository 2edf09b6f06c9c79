"""The findings under the optical cost: log-cosine, cosine and adaptive nudges on the same seeds, on the digital
machine and through the calibrated simulated rig.

An optical machine nudges with an injected field, which adds beta (1 - cos(phi_o - y_o)): the cosine cost. The
seed paper's findings use the log-cosine cost, whose force beta sin Delta / (1 + cos Delta) grows where an
output is far from its target. The adaptive nudge (``ep.nudge: adaptive``) injects, per output, the strength
beta / (1 + cos Delta_free) measured at the free state (capped at ``adaptive_max_gain`` and at what the rig can
inject), so that the injected force at the free state is the log-cosine force.

For every task in ``tasks`` (a training config: the shared ``train`` merged with the task's ``overrides``) and
every nudge in ``nudges``, ``seeds`` runs train on the digital machine; tasks with ``rig: true`` also train
``rig_seeds`` runs through the rig ``rig`` (cosine and adaptive only: the rig cannot make a log-cosine nudge),
calibrated once per task into ``OUT/calibration/<task>`` before the runs. Seed k is the same seed (initial
couplings, data order, split, starts) in every cell of a task.

Measured per run, from the run's own evaluations: the final accuracy on the task's selection split (training
set for XOR, validation split for Iris) and on the test set, the test accuracy at the selected epoch, and for
XOR whether the run **solved** it (final training evaluation all right; ``eval_starts`` starts per pattern,
lowest-energy prediction). Per cell: solved rate with a 95 % Wilson interval, mean accuracies with 95 %
percentile-bootstrap intervals.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import common
from .engine import run_tasks

NAME = "nudge_costs"
LOCK_ENV = "XYOPTICS_LOCK_DIR"
NUDGES = {"log_cosine": {"cost": "log_cosine", "nudge": "fixed"}, "cosine": {"cost": "cosine", "nudge": "fixed"},
          "adaptive": {"cost": "cosine", "nudge": "adaptive"}}


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    overrides: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields merged into train")
    rig: bool = Field(default=False, description="also train rig_seeds runs through the rig")


class Config(common.StudyConfig):
    seeds: int = Field(default=20, ge=1)
    rig_seeds: int = Field(default=5, ge=0)
    first_seed: int = Field(default=0, ge=0)
    rig: str = Field(default="simulated", description="'simulated' or a rig file")
    nudges: list[Literal["log_cosine", "cosine", "adaptive"]] = Field(default=list(NUDGES), min_length=1)
    tasks: list[TaskSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self):
        if len({t.label for t in self.tasks}) != len(self.tasks):
            raise ValueError("task labels must be distinct")
        for t in self.tasks:
            for nudge in self.nudges:
                self.run_config(t, nudge, 0)
        return self

    def run_config(self, task: TaskSpec, nudge: str, seed: int):
        base = common.merged(self.train, **task.overrides)
        ep = {**base.get("ep", {}), **NUDGES[nudge]}
        return common.train_config({k: v for k, v in base.items() if k not in ("architecture", "ep")},
                                   base["architecture"], seed, ep=ep)

    def cells(self) -> list[tuple[int, str, str]]:
        """(task index, nudge, machine) of every cell, in table order."""
        out = []
        for k, t in enumerate(self.tasks):
            out += [(k, n, "digital") for n in self.nudges]
            if t.rig and self.rig_seeds:
                out += [(k, n, "rig") for n in self.nudges if n != "log_cosine"]
        return out

    def smoke(self) -> Config:
        """The first task that trains through the rig (else the first task), 4 epochs: two digital seeds and
        one rig seed."""
        task = next((t for t in self.tasks if t.rig), self.tasks[0])
        over = common.merged(task.overrides, epochs=4, eval_every=2)
        return Config.model_validate({**self.model_dump(), "seeds": 2, "rig_seeds": min(self.rig_seeds, 1),
                                      "tasks": [{**task.model_dump(), "overrides": over}]})


def _one_run(task) -> dict:
    """Train one seed of one cell; runs in a worker process. Rig runs get a run folder under ``folder``."""
    cfg, (cell, nudge, machine, rig, calibration, folder) = task
    t0 = time.perf_counter()
    if machine == "digital":
        summary = common.train_digital(cfg)[0].summary
    else:
        from ..lab.session import run_session

        saved = os.environ.get(LOCK_ENV)
        if rig == "simulated":  # every worker simulates its own rig: its lock must not block the others
            os.environ[LOCK_ENV] = tempfile.mkdtemp(prefix="xyoptics-study-lock-")
        try:
            summary = run_session(cfg, folder, machine=rig, calibration=calibration, progress=False).summary
        finally:
            if saved is None:
                os.environ.pop(LOCK_ENV, None)
            else:
                os.environ[LOCK_ENV] = saved
    common.ensure_finished(summary)
    selection = summary["final_validation_accuracy"] if summary["selected_by"] == "validation" \
        else summary["final_train_accuracy"]
    return {"cell": cell, "seed": cfg.seed, "nudge": nudge, "machine": machine, "final_selection": selection,
            "final_test": summary["final_test_accuracy"], "selected_test": summary["selected_test_accuracy"],
            "solved": summary["final_train_accuracy"] == 1.0, "epochs": summary["epochs_completed"],
            "unconverged": summary["unconverged_train_relaxations"], "dropped": summary.get("dropped_samples", 0),
            "wall_s": round(time.perf_counter() - t0, 3)}


def calibrate(cfg: Config, out_dir: Path, progress: bool) -> dict[int, str]:
    """Calibrate the rig once for every task that trains through it; returns the calibration folder per task
    index (an existing calibration there is reused)."""
    from calibration.runner import run_calibration

    from ..hil.rig import load_rig, simulated_rig
    from ..hil.riglock import rig_lock
    from ..lab.build import prepare

    rig = simulated_rig() if cfg.rig == "simulated" else load_rig(cfg.rig)
    folders = {}
    for k, task in enumerate(cfg.tasks):
        if not (task.rig and cfg.rig_seeds):
            continue
        folder = out_dir / "calibration" / task.label
        if not (folder / "index.json").exists():
            net = prepare(cfg.run_config(task, "cosine", cfg.first_seed))[2]
            with rig_lock(rig, f"calibrate {folder}"):
                report = run_calibration(rig, net, folder, progress=progress)
            if not report["ok"]:
                raise RuntimeError(f"calibration of {cfg.rig} for {task.label} failed; see {folder}")
        folders[k] = str(folder.resolve())
    return folders


def summarise(cfg: Config, runs: list[dict]) -> list[dict]:
    rows = []
    for c, (k, nudge, machine) in enumerate(cfg.cells()):
        mine = [r for r in runs if r["cell"] == c]
        wins = sum(r["solved"] for r in mine)
        row = {"cell": c, "task": cfg.tasks[k].label, "nudge": nudge, "machine": machine, "n_seeds": len(mine),
               "solved": wins, "solved_rate": wins / max(len(mine), 1),
               "ci95_solved": common.wilson_interval(wins, len(mine)),
               "unconverged": sum(r["unconverged"] for r in mine), "dropped": sum(r["dropped"] for r in mine)}
        for j, key in enumerate(("final_selection", "final_test", "selected_test")):
            v = [r[key] for r in mine if r[key] is not None]
            row[key] = {"mean": float(np.mean(v)) if v else None,
                        "ci95": common.bootstrap_interval(v, key=3 * c + j)}
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    def ci(d):
        if d["mean"] is None:
            return "—"
        return f"{100 * d['mean']:.1f} [{100 * d['ci95'][0]:.1f}, {100 * d['ci95'][1]:.1f}]"

    pct = common.pct
    return common.format_table(
        ["task", "nudge", "machine", "seeds", "solved [95 % CI]", "final selection-split acc. %",
         "final test acc. %", "test acc. at selected epoch %", "unconverged", "dropped"],
        [[r["task"], r["nudge"], r["machine"], r["n_seeds"],
          f"{r['solved']}/{r['n_seeds']} [{pct(r['ci95_solved'][0], 0)}, {pct(r['ci95_solved'][1], 0)}]",
          ci(r["final_selection"]), ci(r["final_test"]), ci(r["selected_test"]), r["unconverged"], r["dropped"]]
         for r in rows])


def plot(cfg: Config, rows: list[dict], path: Path) -> Path:
    """Final test accuracy per cell with 95 % intervals, one panel per task."""
    fig = common.figure(4.0 * len(cfg.tasks), 3.8)
    for k, ax in enumerate(np.atleast_1d(fig.subplots(1, len(cfg.tasks)))):
        mine = [r for r in rows if r["task"] == cfg.tasks[k].label and r["final_test"]["mean"] is not None]
        x = np.arange(len(mine))
        y = np.array([r["final_test"]["mean"] for r in mine])
        lohi = np.array([r["final_test"]["ci95"] for r in mine], float).T
        ax.errorbar(x, y, yerr=np.abs(lohi - y), fmt="o", capsize=4)
        ax.set_xticks(x, [f"{r['nudge']}\n{r['machine']}" for r in mine], fontsize=7)
        ax.set(ylabel="final test accuracy", ylim=(-0.02, 1.02), title=cfg.tasks[k].label)
        ax.grid(alpha=0.3)
    return common.save_figure(fig, path)


def run(cfg: Config, out_dir, progress: bool = True, workers: int = 1, engine=None) -> dict:
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    calibrations = calibrate(cfg, out_dir, progress)
    tasks = {}
    for c, (k, nudge, machine) in enumerate(cfg.cells()):
        n = cfg.seeds if machine == "digital" else cfg.rig_seeds
        for seed in range(cfg.first_seed, cfg.first_seed + n):
            key = f"{cfg.tasks[k].label}_{nudge}_{machine}_seed{seed}"
            folder = str((out_dir / "rig_runs" / key).resolve())
            tasks[key] = (cfg.run_config(cfg.tasks[k], nudge, seed),
                          (c, nudge, machine, cfg.rig, calibrations.get(k), folder))
    sweep = run_tasks(_one_run, tasks, cfg.model_dump(mode="json"), out_dir, engine, workers, progress, "nudges")
    sweep.check_groups([f"{cfg.tasks[k].label} {n} {m}" for k, n, m in cfg.cells()], "cell")
    rows = summarise(cfg, sweep.ok)
    plot(cfg, rows, out_dir / "nudges.png")
    return common.finish(NAME, cfg, out_dir, table(rows), sweep, t0, summary=rows, runs=sweep.ok,
                         figures=["nudges.png"])


def main(argv=None) -> int:
    return common.run_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
