"""Iris test accuracy against the size of a square lattice.

Measured: for each lattice in ``lattices`` (4 inputs spread along row 0, 3 outputs along the last row) and each
seed, a run of ``xyoptics.lab.trainer.train`` with the config's ``train`` settings. The seed sets the initial
parameters, the training order and the stratified 105 / 45 train / test split of the 150 flowers.

* **final test accuracy** (the headline number): the trained parameters classify the 45 test flowers, each relaxed
  from ``eval_starts`` fresh uniform random starts (all in one batch); the accuracy is averaged over the
  45 x eval_starts relaxations, which smooths out the run-to-run swing of a multistable network;
* **test accuracy at the selected epoch**: from the training run's evaluation at the epoch chosen on the
  validation split (on the training set when the config holds none), never on the test set;
* final train accuracy from the run's last evaluation.

Hyperparameters: with a ``tune`` section, chosen first on validation accuracy of separate seeds (``tuning``).
Reported per lattice: the mean over seeds with a 95 % percentile-bootstrap interval (and standard deviation, min,
max in the JSON, with every seed's value).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from ..config import SquareLatticeConfig
from ..lab.build import prepare
from . import common, tuning
from .tuning import Tuning

NAME = "iris_size"
EVAL_STREAM = 7003


class Config(common.StudyConfig):
    seeds: int = Field(default=5, ge=1)
    first_seed: int = Field(default=0, ge=0)
    eval_starts: int = Field(default=5, ge=1, description="random starts per test flower for the final accuracy")
    lattices: list[SquareLatticeConfig] = Field(min_length=1)
    tune: Tuning | None = Field(default=None, description="hyperparameters chosen on validation first")

    @model_validator(mode="after")
    def _check(self):
        self.check_train("iris", self.lattices)
        if self.tune is not None:
            if self.tune.architecture >= len(self.lattices):
                raise ValueError(f"tune.architecture {self.tune.architecture} is not a lattice index")
            self.tune.check(self.tuned_config, range(self.first_seed, self.first_seed + self.seeds))
        return self

    def tuned_config(self, seed: int, updates: dict):
        """A tuning run's config: the tuned lattice with ``updates``."""
        return self.train_config(self.lattices[self.tune.architecture], seed, **updates)

    def smoke(self) -> Config:
        """The first two lattices, two seeds, two epochs, two starts per test flower."""
        d = self.model_dump()
        d.update(seeds=2, eval_starts=2, lattices=d["lattices"][:2],
                 train=common.merged(self.train, epochs=2, eval_every=2))
        if self.tune is not None:
            d["tune"] = {**d["tune"], "seeds": d["tune"]["seeds"][:1]}
        return Config.model_validate(d)


def label(a: SquareLatticeConfig) -> str:
    skip = "" if a.skip_length is None else f" + skips l={a.skip_length}" + (f" ({a.n_skip})" if a.n_skip else "")
    return f"{a.rows}x{a.cols}{skip}"


def _one_seed(task) -> dict:
    """Train one seed and measure its final test accuracy; runs in a worker process."""
    cfg, index, eval_starts = task
    t0 = time.perf_counter()
    result, ev = common.train_and_recheck(cfg, "test", eval_starts, common.rng_for(EVAL_STREAM, index, cfg.seed))
    s = result.summary
    return {"lattice": index, "seed": cfg.seed, "final_test_accuracy": ev.accuracy,
            "final_test_accuracy_one_start": s["final_test_accuracy"],
            "selected_test_accuracy": s["selected_test_accuracy"],
            "selected_epoch": s["selected_epoch"], "final_train_accuracy": s["final_train_accuracy"],
            "unconverged": s["unconverged_train_relaxations"] + ev.n_unconverged,
            "wall_s": round(time.perf_counter() - t0, 3)}


def summarise(cfg: Config, runs: list[dict]) -> list[dict]:
    rows = []
    for k, a in enumerate(cfg.lattices):
        mine = [r for r in runs if r["lattice"] == k]
        _, _, net = prepare(cfg.train_config(a, cfg.first_seed))
        row = {"lattice": k, "label": label(a), "architecture": a.model_dump(), "n_sites": net.n_spins,
               "n_couplings": net.n_couplings, "n_parameters": net.n_parameters, "n_seeds": len(mine),
               "unconverged": sum(r["unconverged"] for r in mine),
               "mean_wall_s": float(np.mean([r["wall_s"] for r in mine]))}
        for j, key in enumerate(("final_test_accuracy", "selected_test_accuracy", "final_train_accuracy")):
            v = np.array([r[key] for r in mine], float)
            row[key] = {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
                        "max": float(v.max()), "ci95": common.bootstrap_interval(v, key=3 * k + j)}
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    def ms(r, key):
        lo, hi = r[key]["ci95"]
        return f"{100 * r[key]['mean']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"

    return common.format_table(
        ["lattice", "sites", "bonds", "parameters", "seeds", "final test % (mean [95 % CI])", "min–max %",
         "test % at selected epoch", "final train %", "s / seed"],
        [[r["label"], r["n_sites"], r["n_couplings"], r["n_parameters"], r["n_seeds"],
          ms(r, "final_test_accuracy"),
          f"{100 * r['final_test_accuracy']['min']:.1f}–{100 * r['final_test_accuracy']['max']:.1f}",
          ms(r, "selected_test_accuracy"), ms(r, "final_train_accuracy"), f"{r['mean_wall_s']:.1f}"] for r in rows])


def plot(rows: list[dict], runs: list[dict], path: Path) -> Path:
    fig = common.figure(6.4, 4.2)
    ax = fig.add_subplot()
    x = np.array([r["n_sites"] for r in rows], float)
    for key, name, shift, fmt in [("final_test_accuracy", "final test (mean over starts)", -0.15, "o-"),
                                  ("selected_test_accuracy", "test at the selected epoch", 0.15, "s--")]:
        m = np.array([r[key]["mean"] for r in rows])
        lohi = np.array([r[key]["ci95"] for r in rows], float).T
        ax.errorbar(x + shift, m, yerr=np.abs(lohi - m), fmt=fmt, capsize=4, label=f"{name}, mean, 95 % CI")
    seeds_x = np.array([rows[r["lattice"]]["n_sites"] for r in runs], float) - 0.15
    ax.scatter(seeds_x, [r["final_test_accuracy"] for r in runs], s=10, c="0.5", zorder=0, label="final, per seed")
    for r, xi in zip(rows, x):
        ax.annotate(r["label"], (xi, 0.02), ha="center", fontsize=8, xycoords=("data", "axes fraction"))
    ax.axhline(0.93, color="0.6", lw=0.8, ls=":")
    ax.set(xlabel="lattice sites", ylabel="Iris test accuracy", title="Iris accuracy vs lattice size",
           ylim=(min(0.3, ax.get_ylim()[0]), 1.01))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center")
    return common.save_figure(fig, path)


def run(cfg: Config, out_dir, progress: bool = True, workers: int = 1, engine=None) -> dict:
    """Run every seed of every lattice (``engine``, default the local pool of ``workers``; records in
    ``out_dir/runs``, finished ones kept) and summarise the ``ok`` runs."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    chosen, tuned = {}, []
    if cfg.tune is not None:
        chosen, tuned = tuning.choose(cfg, cfg.tune, cfg.tuned_config, out_dir, engine, workers, progress)
    sweep = common.sweep_seeds(cfg, cfg.lattices, _one_seed, cfg.eval_starts, out_dir, engine, workers, progress,
                               "iris runs", updates=chosen)
    sweep.check_groups([label(a) for a in cfg.lattices], "lattice")
    runs = sweep.ok
    rows = summarise(cfg, runs)
    plot(rows, runs, out_dir / "accuracy_vs_size.png")
    best = max(rows, key=lambda r: r["final_test_accuracy"]["mean"])
    text = table(rows)
    if tuned:
        text = f"Tuning (validation only; seeds {cfg.tune.seeds}):\n\n{tuning.table(tuned, chosen)}\n\n{text}"
    return common.finish(NAME, cfg, out_dir, text, sweep, t0, summary=rows, runs=runs, tuning=tuned,
                         chosen=chosen,
                         best_lattice=best["label"],
                         best_mean_final_test_accuracy=best["final_test_accuracy"]["mean"],
                         figures=["accuracy_vs_size.png"])


def main(argv=None) -> int:
    return common.run_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
