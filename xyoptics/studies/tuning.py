"""Hyperparameters chosen honestly: a grid trained on tuning seeds and judged by validation accuracy only.

A study with a ``tune`` section first trains every combination of its ``grid`` (dotted ``TrainConfig`` paths,
e.g. ``optimizer.lr: [0.01, 0.03]``) on the ``seeds`` listed there, on one of its architectures, and keeps the
combination with the highest mean validation accuracy at the selected epoch (the first of equals); ``budget``
may shorten the tuning runs alike (e.g. fewer epochs). The test set is never read to choose. The reported runs then use the chosen values on their own seeds, which must not
include a tuning seed. Tuning runs are ordinary study runs (``tune<c>_seed<s>``): they stream to the study
folder and are skipped when the study is started again.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from . import common
from .engine import run_tasks
from .records import Sweep


class Tuning(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seeds: list[int] = Field(min_length=1, description="seeds trained for the choice (never reported)")
    grid: dict[str, list[Any]] = Field(min_length=1, description="dotted TrainConfig path: values to try")
    architecture: int = Field(default=0, ge=0, description="index of the study's architecture tuned on (where a "
                              "study has several)")
    budget: dict[str, Any] = Field(default_factory=dict, description=(
        "TrainConfig updates for the tuning runs only, e.g. {epochs: 3}: the same budget for every combination"))

    def combos(self) -> list[dict]:
        """Every combination as nested TrainConfig updates, in grid order."""
        keys = list(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            update: dict = {}
            for key, value in zip(keys, values):
                head, _, leaf = key.partition(".")
                if leaf:
                    update.setdefault(head, {})[leaf] = value
                else:
                    update[head] = value
            out.append(update)
        return out

    def check(self, config_for: Callable, reported_seeds: range) -> None:
        """Every combination must build a config (``config_for(seed, updates)``) with a validation split;
        tuning seeds are never reported."""
        clash = sorted(set(self.seeds) & set(reported_seeds))
        if clash:
            raise ValueError(f"tune.seeds {clash} are also reported seeds; tune on other seeds")
        for combo in self.combos():
            cfg = config_for(self.seeds[0], common.merged(self.budget, **combo))
            if cfg.validation_fraction == 0:
                raise ValueError("tuning chooses on validation accuracy: set train.validation_fraction > 0")


def _tune_run(task) -> dict:
    """Train one combination on one seed (digital machine); runs in a worker process."""
    cfg, combo = task
    t0 = time.perf_counter()
    summary = common.train_digital(cfg)[0].summary
    return {"combo": combo, "seed": cfg.seed, "validation_accuracy": summary["selected_validation_accuracy"],
            "selected_epoch": summary["selected_epoch"], "wall_s": round(time.perf_counter() - t0, 3)}


def choose(study: common.StudyConfig, tuning: Tuning, config_for: Callable, out_dir, engine=None, workers: int = 1,
           progress: bool = True, prefix: str = "tune") -> tuple[dict, list[dict]]:
    """Run the grid (``config_for(seed, updates)`` builds each run's config; runs ``<prefix><c>_seed<s>`` in
    ``study``'s folder) and return (the chosen updates, one row per combination with its mean validation
    accuracy and 95 % bootstrap interval)."""
    return choose_each(study, [(tuning, config_for, prefix)], out_dir, engine, workers, progress)[0]


def choose_each(study: common.StudyConfig, grids: list[tuple[Tuning, Callable, str]], out_dir, engine=None,
                workers: int = 1, progress: bool = True) -> list[tuple[dict, list[dict]]]:
    """``choose`` for several grids ``(tuning, config_for, prefix)`` at once: all their runs share one pool, so
    no worker idles while a short grid waits for a long one. One (chosen updates, rows) per grid."""
    tasks, owner = {}, {}
    for g, (tuning, config_for, prefix) in enumerate(grids):
        for c, combo in enumerate(tuning.combos()):
            for s in tuning.seeds:
                key = f"{prefix}{c}_seed{s}"
                tasks[key], owner[key] = (config_for(s, common.merged(tuning.budget, **combo)), c), g
    sweep = run_tasks(_tune_run, tasks, study.model_dump(mode="json"), out_dir, engine, workers, progress, "tuning",
                      study=type(study).__module__.rpartition(".")[2])
    return [_judge(tuning, Sweep([r for key, r in zip(tasks, sweep.records) if owner[key] == g], sweep.engine), prefix)
            for g, (tuning, _, prefix) in enumerate(grids)]


def _judge(tuning: Tuning, sweep: Sweep, prefix: str) -> tuple[dict, list[dict]]:
    combos = tuning.combos()
    sweep.check_groups([f"{prefix}{c}" for c in range(len(combos))], "combo")
    rows = []
    for c, combo in enumerate(combos):
        ok = [r for r in sweep.ok if r["combo"] == c]
        acc = [r["validation_accuracy"] for r in ok]
        rows.append({"combo": c, "updates": combo, "n_seeds": len(acc), "mean_validation_accuracy": float(np.mean(acc)),
                     "ci95": common.bootstrap_interval(acc, key=1000 + c),
                     "mean_wall_s": float(np.mean([r["wall_s"] for r in ok]))})
    best = max(rows, key=lambda r: (r["mean_validation_accuracy"], -r["combo"]))
    return combos[best["combo"]], rows


def describe(update: dict) -> str:
    """``{"optimizer": {"lr": 0.1}}`` as ``optimizer.lr=0.1``."""
    parts = []
    for key, value in update.items():
        parts += [f"{key}.{leaf}={v}" for leaf, v in value.items()] if isinstance(value, dict) else [f"{key}={value}"]
    return ", ".join(parts)


def table(rows: list[dict], chosen: dict) -> str:
    return common.format_table(
        ["settings", "seeds", "validation accuracy % [95 % CI]", "chosen"],
        [[describe(r["updates"]), r["n_seeds"], f"{100 * r['mean_validation_accuracy']:.1f} "
          f"[{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]", "yes" if r["updates"] == chosen else ""]
         for r in rows])
