"""Training configs over many seeds, each tuned on validation first: the accuracy a protocol gives, with intervals.

For every entry of ``runs`` (the shared ``train`` settings merged with the entry's ``overrides``, which name its
task and architecture) the study optionally tunes hyperparameters on the entry's ``tune`` seeds by validation
accuracy (``tuning``), then trains ``seeds`` other seeds with the chosen values on the digital machine. Each run
selects its epoch on its validation split (``validation_fraction`` of its training set) and evaluates with
``eval_starts`` random starts per sample (lowest-energy prediction). Reported per entry: the test accuracy at
the selected epoch, the final test accuracy (and its single-start value), the selected epoch, with 95 %
percentile-bootstrap intervals over seeds. The test set is never used to choose anything.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import common, tuning
from .engine import run_tasks
from .tuning import Tuning

NAME = "replicate"
FIELDS = ("selected_test_accuracy", "final_test_accuracy", "final_test_accuracy_one_start", "selected_epoch")


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    overrides: dict[str, Any] = Field(description="TrainConfig fields for this entry (architecture included)")
    tune: Tuning | None = None


class Config(common.StudyConfig):
    seeds: int = Field(default=20, ge=1)
    first_seed: int = Field(default=0, ge=0)
    runs: list[Entry] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self):
        if len({e.label for e in self.runs}) != len(self.runs):
            raise ValueError("run labels must be distinct")
        for k, entry in enumerate(self.runs):
            cfg = self.entry_config(k, self.first_seed, {})
            if cfg.validation_fraction == 0:
                raise ValueError(f"{entry.label}: set validation_fraction > 0 (the epoch is selected on it)")
            if entry.tune is not None:
                entry.tune.check(lambda seed, updates, k=k: self.entry_config(k, seed, updates),
                                 range(self.first_seed, self.first_seed + self.seeds))
        return self

    def entry_config(self, k: int, seed: int, updates: dict):
        base = common.merged(self.train, **self.runs[k].overrides)
        return common.train_config({key: v for key, v in base.items() if key != "architecture"},
                                   base["architecture"], seed, **updates)

    def smoke(self) -> Config:
        """Two seeds, two epochs, one tuning seed."""
        runs = []
        for e in self.runs:
            d = e.model_dump()
            d["overrides"] = common.merged(e.overrides, epochs=2, eval_every=1)
            if e.tune is not None:
                d["tune"] = {**d["tune"], "seeds": d["tune"]["seeds"][:1]}
            runs.append(d)
        return Config.model_validate({**self.model_dump(), "seeds": 2, "runs": runs})


def _one_seed(task) -> dict:
    """Train one seed of one entry; runs in a worker process."""
    cfg, entry = task
    t0 = time.perf_counter()
    s = common.train_digital(cfg)[0].summary
    return {"entry": entry, "seed": cfg.seed, **{f: s.get(f) for f in FIELDS},
            "final_test_accuracy_one_start": s.get("final_test_accuracy_one_start", s["final_test_accuracy"]),
            "epochs": s["epochs_completed"], "unconverged": s["unconverged_train_relaxations"],
            "n_couplings": s["n_couplings"], "wall_s": round(time.perf_counter() - t0, 3)}


def summarise(cfg: Config, runs: list[dict], chosen: list[dict]) -> list[dict]:
    rows = []
    for k, entry in enumerate(cfg.runs):
        mine = [r for r in runs if r["entry"] == k]
        row = {"entry": k, "label": entry.label, "chosen": chosen[k], "n_seeds": len(mine),
               "n_couplings": mine[0]["n_couplings"] if mine else None,
               "unconverged": sum(r["unconverged"] for r in mine),
               "mean_wall_s": float(np.mean([r["wall_s"] for r in mine])) if mine else None}
        for j, field in enumerate(FIELDS):
            v = [r[field] for r in mine if r[field] is not None]
            row[field] = {"mean": float(np.mean(v)) if v else None,
                          "ci95": common.bootstrap_interval(v, key=len(FIELDS) * k + j)}
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    def ci(d, scale=100.0, digits=1):
        if d["mean"] is None:
            return "—"
        return f"{scale * d['mean']:.{digits}f} [{scale * d['ci95'][0]:.{digits}f}, {scale * d['ci95'][1]:.{digits}f}]"

    return common.format_table(
        ["run", "bonds", "chosen settings", "seeds", "test % at selected epoch", "final test %",
         "final test %, one start", "selected epoch", "s / seed"],
        [[r["label"], r["n_couplings"], tuning.describe(r["chosen"]) or "—", r["n_seeds"],
          ci(r["selected_test_accuracy"]), ci(r["final_test_accuracy"]), ci(r["final_test_accuracy_one_start"]),
          ci(r["selected_epoch"], 1.0, 1), f"{r['mean_wall_s']:.1f}"] for r in rows])


def plot(rows: list[dict], path: Path) -> Path:
    fig = common.figure(max(5.0, 1.3 * len(rows) + 2), 3.8)
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    for shift, field, name in ((-0.1, "selected_test_accuracy", "at the selected epoch"),
                               (0.1, "final_test_accuracy", "final")):
        y = np.array([np.nan if r[field]["mean"] is None else r[field]["mean"] for r in rows])
        lohi = np.array([r[field]["ci95"] for r in rows], float).T
        ax.errorbar(x + shift, y, yerr=np.abs(lohi - y), fmt="o", capsize=4, label=f"test accuracy {name}")
    ax.set_xticks(x, [r["label"] for r in rows], fontsize=8)
    ax.set(ylabel="test accuracy (95 % CI over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return common.save_figure(fig, path)


def run(cfg: Config, out_dir, progress: bool = True, workers: int = 1, engine=None) -> dict:
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    grids = [(k, entry) for k, entry in enumerate(cfg.runs) if entry.tune is not None]
    choices = tuning.choose_each(cfg, [(entry.tune, lambda seed, updates, k=k: cfg.entry_config(k, seed, updates),
                                        f"{entry.label}_tune") for k, entry in grids],
                                 out_dir, engine, workers, progress)
    chosen = [{} for _ in cfg.runs]
    tuned = []
    for (k, entry), (best, rows) in zip(grids, choices):
        chosen[k] = best
        tuned.append({"label": entry.label, "rows": rows, "chosen": best})
    # the entries whose tuning runs took longest start first, so that two workers end close together
    tuning_s = {k: max(row["mean_wall_s"] for row in rows) for (k, _), (_, rows) in zip(grids, choices)}
    order = sorted(range(len(cfg.runs)), key=lambda k: -tuning_s.get(k, 0.0))
    tasks = {f"{cfg.runs[k].label}_seed{s}": (cfg.entry_config(k, s, chosen[k]), k)
             for k in order for s in range(cfg.first_seed, cfg.first_seed + cfg.seeds)}
    sweep = run_tasks(_one_seed, tasks, cfg.model_dump(mode="json"), out_dir, engine, workers, progress, "seeds")
    sweep.check_groups([e.label for e in cfg.runs], "entry")
    rows = summarise(cfg, sweep.ok, chosen)
    plot(rows, out_dir / "accuracy.png")
    text = "\n\n".join([f"Tuning of {t['label']} (validation only):\n\n{tuning.table(t['rows'], t['chosen'])}"
                        for t in tuned] + [table(rows)])
    return common.finish(NAME, cfg, out_dir, text, sweep, t0, summary=rows, tuning=tuned, runs=sweep.ok,
                         figures=["accuracy.png"])


def main(argv=None) -> int:
    return common.run_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
