"""XOR success rate over seeds: all-to-all vs square lattices vs lattices with skip connections of length l.

Measured: for every architecture, the fraction of seeds whose trained network classifies all four XOR patterns.

Protocol per seed (as ``tests/test_xor.py``): train with ``xyoptics.lab.trainer.train`` on the config's ``train``
settings (by default at most 1000 full-batch steps, an evaluation every 25 steps from one random start per
pattern, stopping at the first evaluation that gets all four right). Then the **success test**: the four patterns
are relaxed from ``strict_starts`` (default 10) fresh uniform random starts each, all in one batch, and the seed
counts as a success only if every one of the 4 x strict_starts relaxations is classified correctly
(class 1 iff sin(phi_out) > 0). "Reached" counts seeds whose training ever hit 100 % in one evaluation (a looser
criterion, reported alongside). The rate's 95 % interval is the Wilson score interval over seeds.

Skip lattices of one size must all have the same ``n_skip`` (the number of extra bonds is fixed while l varies,
``square_lattice(..., skip_length=l, n_skip=K)`` spreads K bonds evenly over all candidate pairs, half along rows
and half along columns). The plot puts the plain lattice of the same size at l = 1.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from ..config import ArchitectureConfig
from ..lab.build import prepare
from . import common

NAME = "xor_success"
STRICT_STREAM = 7001  # first key of the success-test generators


class Config(common.StudyConfig):
    """Seeds ``first_seed .. first_seed + seeds - 1`` for every entry of ``architectures``."""

    seeds: int = Field(default=50, ge=1)
    first_seed: int = Field(default=0, ge=0)
    strict_starts: int = Field(default=10, ge=1, description="fresh random starts per pattern in the success test")
    architectures: list[ArchitectureConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self):
        self.check_train("xor", self.architectures)
        n_skip: dict[tuple, set] = defaultdict(set)
        for a in self.architectures:
            if a.kind == "square_lattice" and a.skip_length is not None:
                n_skip[(a.rows, a.cols)].add(a.n_skip)
        for size, counts in n_skip.items():
            if None in counts or len(counts) > 1:
                raise ValueError(f"skip lattices {size[0]}x{size[1]} need one common explicit n_skip "
                                 f"(got {sorted(counts, key=str)}) so the bond count stays fixed across l")
        return self

    def smoke(self) -> Config:
        """Two seeds, 10 steps, 3 starts in the success test."""
        train = common.merged(self.train, epochs=10, eval_every=5)
        return Config.model_validate({**self.model_dump(), "seeds": 2, "strict_starts": 3, "train": train})


def label(a) -> str:
    if a.kind == "all_to_all":
        return f"all-to-all, {a.hidden} hidden"
    if a.kind == "square_lattice":
        skip = "" if a.skip_length is None else f" + {a.n_skip or 'all'} skips l={a.skip_length}"
        return f"lattice {a.rows}x{a.cols}{skip}"
    return a.kind


def _one_seed(task) -> dict:
    """Train one seed and apply the success test; runs in a worker process."""
    cfg, index, strict_starts = task
    t0 = time.perf_counter()
    result, ev = common.train_and_recheck(cfg, "train", strict_starts,
                                          common.rng_for(STRICT_STREAM, index, cfg.seed))
    s = result.summary
    return {"arch": index, "seed": cfg.seed, "epochs": s["epochs_completed"],
            "reached": s["selected_train_accuracy"] == 1.0, "strict_accuracy": ev.accuracy,
            "success": ev.accuracy == 1.0, "unconverged_train": s["unconverged_train_relaxations"],
            "unconverged_test": ev.n_unconverged, "wall_s": round(time.perf_counter() - t0, 3)}


def summarise(cfg: Config, runs: list[dict]) -> list[dict]:
    rows = []
    for k, a in enumerate(cfg.architectures):
        mine = [r for r in runs if r["arch"] == k]
        n, wins = len(mine), sum(r["success"] for r in mine)
        _, _, net = prepare(cfg.train_config(a, cfg.first_seed))
        lo, hi = common.wilson_interval(wins, n)
        won_epochs = [r["epochs"] for r in mine if r["success"]]
        rows.append({"arch": k, "label": label(a), "architecture": a.model_dump(), "network": net.name,
                     "n_couplings": net.n_couplings, "n_parameters": net.n_parameters, "n_seeds": n,
                     "successes": wins, "success_rate": wins / n, "ci95": [lo, hi],
                     "reached": sum(r["reached"] for r in mine), "reached_rate": sum(r["reached"] for r in mine) / n,
                     "mean_strict_accuracy": float(np.mean([r["strict_accuracy"] for r in mine])),
                     "median_epochs_successful": float(np.median(won_epochs)) if won_epochs else None,
                     "unconverged": sum(r["unconverged_train"] + r["unconverged_test"] for r in mine),
                     "mean_wall_s": float(np.mean([r["wall_s"] for r in mine]))})
    return rows


def table(rows: list[dict]) -> str:
    return common.format_table(
        ["architecture", "bonds", "parameters", "success (all starts)", "rate [95 % CI]", "reached 100 % once",
         "median epochs (successes)", "s / seed"],
        [[r["label"], r["n_couplings"], r["n_parameters"], f"{r['successes']}/{r['n_seeds']}",
          f"{common.pct(r['success_rate'], 0)} [{common.pct(r['ci95'][0], 0)}, {common.pct(r['ci95'][1], 0)}]",
          f"{r['reached']}/{r['n_seeds']}",
          "—" if r["median_epochs_successful"] is None else f"{r['median_epochs_successful']:.0f}",
          f"{r['mean_wall_s']:.1f}"] for r in rows])


def plot(cfg: Config, rows: list[dict], path: Path) -> Path:
    """Success rate vs skip length (plain lattice of the same size at l = 1); other architectures as lines."""
    fig = common.figure(6.6, 4.4)
    ax = fig.add_subplot()
    groups: dict[tuple, list] = defaultdict(list)
    for a, r in zip(cfg.architectures, rows):
        if a.kind == "square_lattice" and a.skip_length is not None:
            groups[(a.rows, a.cols)].append((a.skip_length, r))
    for a, r in zip(cfg.architectures, rows):
        if a.kind == "square_lattice" and a.skip_length is None and (a.rows, a.cols) in groups:
            groups[(a.rows, a.cols)].append((1, r))
    used = {id(r) for pts in groups.values() for _, r in pts}
    for (nr, nc), pts in sorted(groups.items()):
        pts.sort(key=lambda p: p[0])
        x = np.array([p[0] for p in pts], float)
        y = np.array([p[1]["success_rate"] for p in pts])
        err = np.abs(np.array([p[1]["ci95"] for p in pts]).T - y)
        line = ax.errorbar(x, y, yerr=err, marker="o", capsize=4, label=f"lattice {nr}x{nc}, "
                           f"{pts[-1][1]['architecture']['n_skip']} skip bonds (l=1: none)")
        ax.plot(x, [p[1]["reached_rate"] for p in pts], ls=":", marker="o", mfc="none",
                color=line[0].get_color(), label="same, reached 100 % once")
        ax.set_xticks(x)
    styles = iter(["--", "-.", (0, (5, 2, 1, 2)), (0, (1, 1))] * 4)
    for r in rows:
        if id(r) not in used:
            ax.axhline(r["success_rate"], ls=next(styles), color="0.35" if "all-to-all" in r["label"] else "C3",
                       label=f"{r['label']}: {r['successes']}/{r['n_seeds']}")
    ax.set(xlabel="skip length l", ylabel="success rate (all starts correct)", ylim=(-0.03, 1.03),
           title=f"XOR success over {cfg.seeds} seeds (95 % Wilson intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return common.save_figure(fig, path)


def run(cfg: Config, out_dir, progress: bool = True, workers: int = 1, engine=None) -> dict:
    """Run every seed of every architecture (``engine``, default the local pool of ``workers``; records in
    ``out_dir/runs``, finished ones kept) and summarise the ``ok`` runs."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    sweep = common.sweep_seeds(cfg, cfg.architectures, _one_seed, cfg.strict_starts, out_dir, engine, workers,
                               progress, "xor seeds")
    sweep.check_groups([label(a) for a in cfg.architectures], "arch")
    rows = summarise(cfg, sweep.ok)
    plot(cfg, rows, out_dir / "success_vs_skip.png")
    return common.finish(NAME, cfg, out_dir, table(rows), sweep, t0, summary=rows, runs=sweep.ok,
                         figures=["success_vs_skip.png"])


def main(argv=None) -> int:
    return common.run_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
