"""XOR final cost against the size N of an all-to-all network (the 2024 sweep, Wang et al. arXiv 2402.08579).

Measured: for every N in ``sizes`` (2 inputs, N - 3 hidden spins, 1 output) and every seed, one run of
``xyoptics.lab.trainer.train`` with the config's ``train`` settings (the 2024 protocol: beta = 0.1 one-sided EP,
log-cosine cost, plain gradient descent lr = 0.1, the full batch of four patterns, 1000 steps, one random start
per step). Per seed:

* **final cost**: the mean over the four patterns of C + log 2 = -log((1 + cos(phi_out - y)) / 2) at the free
  equilibrium of the last training step (the cost the training itself saw last, shifted by its minimum -log 2 so
  that 0 means every output on its target; the training cost C itself is in ``final_cost_raw``);
* **evaluated cost** (shifted the same way) and **accuracy**: the four patterns relaxed again from
  ``eval_starts`` fresh random starts each after training (the prediction from the lowest-energy start);
* whether the run solved XOR (all four patterns right in that evaluation).

Reported per N over the ``ok`` seeds: mean final cost with a 95 % percentile-bootstrap interval, the median,
and the success rate with its 95 % Wilson interval. XOR's four patterns are its training and test set alike, so
nothing is selected: every number is the end of the run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from . import common

NAME = "xor_size"
EVAL_STREAM = 7101  # first key of the evaluation generators
LOG_2 = float(np.log(2.0))  # minus the log-cosine cost's minimum per output


class Config(common.StudyConfig):
    """Seeds ``first_seed .. first_seed + seeds - 1`` for every all-to-all size in ``sizes``."""

    seeds: int = Field(default=100, ge=1)
    first_seed: int = Field(default=0, ge=0)
    sizes: list[int] = Field(min_length=1, description="total spins N (2 inputs + N - 3 hidden + 1 output)")
    eval_starts: int = Field(default=10, ge=1, description="random starts per pattern in the final evaluation")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v):
        if min(v) < 3 or len(set(v)) != len(v):
            raise ValueError("sizes must be distinct and at least 3 (2 inputs and 1 output)")
        return sorted(v)

    def model_post_init(self, _context) -> None:
        self.check_train("xor", self.architectures())

    def architectures(self) -> list[dict]:
        return [{"kind": "all_to_all", "hidden": n - 3} for n in self.sizes]

    def smoke(self) -> Config:
        """Three sizes, two seeds, 20 steps."""
        train = common.merged(self.train, epochs=20, eval_every=20)
        return Config.model_validate({**self.model_dump(), "seeds": 2, "sizes": self.sizes[:3], "train": train})


def _one_seed(task) -> dict:
    """Train one seed of one size and evaluate it; runs in a worker process."""
    cfg, index, eval_starts = task
    t0 = time.perf_counter()
    result, ev = common.train_and_recheck(cfg, "train", eval_starts, common.rng_for(EVAL_STREAM, index, cfg.seed),
                                          lowest_energy=True)
    raw = result.summary["final_train_cost"]
    return {"size": index, "seed": cfg.seed, "final_cost": raw + LOG_2, "final_cost_raw": raw,
            "evaluated_cost": ev.cost + LOG_2,
            "accuracy": ev.accuracy, "solved": ev.accuracy == 1.0,
            "unconverged": result.summary["unconverged_train_relaxations"] + ev.n_unconverged,
            "wall_s": round(time.perf_counter() - t0, 3)}


def summarise(cfg: Config, runs: list[dict]) -> list[dict]:
    rows = []
    for k, n in enumerate(cfg.sizes):
        mine = [r for r in runs if r["size"] == k]
        cost = np.array([r["final_cost"] for r in mine])
        wins = sum(r["solved"] for r in mine)
        rows.append({"size": k, "n_spins": n, "n_couplings": n * (n - 1) // 2, "n_seeds": len(mine),
                     "mean_final_cost": float(cost.mean()) if len(mine) else None,
                     "ci95_final_cost": common.bootstrap_interval(cost, key=k),
                     "median_final_cost": float(np.median(cost)) if len(mine) else None,
                     "mean_evaluated_cost": float(np.mean([r["evaluated_cost"] for r in mine])) if mine else None,
                     "solved": wins, "solved_rate": wins / max(len(mine), 1),
                     "ci95_solved": common.wilson_interval(wins, len(mine)),
                     "unconverged": sum(r["unconverged"] for r in mine),
                     "mean_wall_s": float(np.mean([r["wall_s"] for r in mine])) if mine else None})
    return rows


def table(rows: list[dict]) -> str:
    pct = common.pct
    return common.format_table(
        ["N", "bonds", "seeds", "mean final cost [95 % CI]", "median", "evaluated cost (mean)",
         "solved [95 % CI]", "unconverged", "s / seed"],
        [[r["n_spins"], r["n_couplings"], r["n_seeds"],
          f"{r['mean_final_cost']:.3f} [{r['ci95_final_cost'][0]:.3f}, {r['ci95_final_cost'][1]:.3f}]",
          f"{r['median_final_cost']:.3f}", f"{r['mean_evaluated_cost']:.3f}",
          f"{r['solved']}/{r['n_seeds']} = {pct(r['solved_rate'], 0)} [{pct(r['ci95_solved'][0], 0)}, "
          f"{pct(r['ci95_solved'][1], 0)}]", r["unconverged"], f"{r['mean_wall_s']:.1f}"] for r in rows])


def plot(cfg: Config, rows: list[dict], runs: list[dict], path: Path) -> Path:
    """Mean final cost against N with 95 % bootstrap intervals (log scale), the median, and every seed."""
    fig = common.figure(6.6, 4.4)
    ax = fig.add_subplot()
    n = np.array([r["n_spins"] for r in rows], float)
    mean = np.array([r["mean_final_cost"] for r in rows])
    err = np.abs(np.array([r["ci95_final_cost"] for r in rows]).T - mean)
    ax.scatter([cfg.sizes[r["size"]] for r in runs], [max(r["final_cost"], 1e-6) for r in runs], s=6, c="0.7",
               zorder=0, label="one seed")
    ax.errorbar(n, mean, yerr=err, fmt="o-", capsize=3, label="mean, 95 % bootstrap interval")
    ax.plot(n, [r["median_final_cost"] for r in rows], "s--", ms=4, label="median")
    ax.set(xlabel="N (all-to-all spins)", ylabel="final cost per pattern", yscale="log",
           title=f"XOR final cost after {cfg.train.get('epochs')} steps, {cfg.seeds} seeds per N")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return common.save_figure(fig, path)


def run(cfg: Config, out_dir, progress: bool = True, workers: int = 1, engine=None) -> dict:
    """Run every seed of every size (``engine``; records in ``out_dir/runs``, finished ones kept) and summarise
    the ``ok`` runs."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    sweep = common.sweep_seeds(cfg, cfg.architectures(), _one_seed, cfg.eval_starts, out_dir, engine, workers,
                               progress, "xor sizes")
    sweep.check_groups([f"N={n}" for n in cfg.sizes], "size")
    rows = summarise(cfg, sweep.ok)
    plot(cfg, rows, sweep.ok, out_dir / "cost_vs_size.png")
    return common.finish(NAME, cfg, out_dir, table(rows), sweep, t0, summary=rows, runs=sweep.ok,
                         figures=["cost_vs_size.png"])


def main(argv=None) -> int:
    return common.run_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
