"""Affected and marginal regions of a lattice forming during XOR training.

Measured, at the optimizer steps listed in ``snapshots`` (step 0 = the initial parameters), for each seed:

* nudge response r_i = < |wrap(phi^beta_i - phi^0_i)| > (rad) and input sensitivity s_i (rad per rad of input),
  from ``xyoptics.analysis.diagnostics``, averaged over the training patterns each relaxed from ``repeats`` fresh random
  starts (beta and cost as in training);
* |W_b| for every bond, and |W_b - W_b(step 0)|;
* the accuracy on the same patterns x ``repeats`` random starts.

Classification (per snapshot, over the non-input sites): a site is **affected** when its response is at least
``threshold`` times the largest response of any non-input site at that snapshot, r_i >= threshold * max_j r_j,
and **marginal** otherwise; likewise for the input sensitivity. The fractions are reported per seed and as
mean over seeds with a 95 % bootstrap interval. The relative threshold makes the fractions independent of the
overall response scale (which grows with beta); its value (default 0.1) is a choice, not a result.

How the snapshots are taken: the training loop (``xyoptics.lab.trainer.Trainer``) calls back after every optimizer
step with its committed state; at a scheduled step the maps are measured on that state's parameters with the
study's own generator, so training itself is unchanged. Step 0 is measured on the initial parameters before
the first step.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from pydantic import Field, model_validator

from ..analysis.diagnostics import bond_maps, input_sensitivity, nudge_response
from ..config import SquareLatticeConfig
from ..core.costs import make_cost
from ..core.digital import DigitalXYMachine
from ..core.network import Params
from ..lab.trainer import Trainer, evaluate, prepare
from . import common

NAME = "regions"
DIAG_STREAM = 7002
MAPS = ("nudge_response", "input_sensitivity")


class Config(common.StudyConfig):
    seeds: int = Field(default=8, ge=1)
    first_seed: int = Field(default=0, ge=0)
    architecture: SquareLatticeConfig
    snapshots: list[int] = Field(min_length=2, description="optimizer steps at which to measure (0 = initial)")
    map_steps: list[int] | None = Field(default=None, description="snapshots drawn in the map grid (default all)")
    map_seed: int | None = Field(default=None, description="seed drawn in the map grid (default: the first seed "
                                                           "with the highest accuracy at the last snapshot)")
    threshold: float = Field(default=0.1, gt=0, lt=1, description="affected iff response >= threshold * max")
    repeats: int = Field(default=8, ge=1, description="random starts per pattern for each measurement")

    @model_validator(mode="after")
    def _check(self):
        self.check_train("xor", [self.architecture])
        cfg = self.train_config(self.architecture, 0)
        if cfg.stop_at_accuracy is not None:
            raise ValueError("train.stop_at_accuracy must be unset: every snapshot step has to be reached")
        if sorted(set(self.snapshots)) != list(self.snapshots) or self.snapshots[0] < 0:
            raise ValueError("snapshots must be strictly increasing non-negative steps")
        steps = cfg.epochs * math.ceil(4 / cfg.batch_size)
        if self.snapshots[-1] > steps:
            raise ValueError(f"snapshot {self.snapshots[-1]} lies beyond the {steps} training steps")
        if self.map_steps is not None and not set(self.map_steps) <= set(self.snapshots):
            raise ValueError("map_steps must be a subset of snapshots")
        if self.map_seed is not None and not self.first_seed <= self.map_seed < self.first_seed + self.seeds:
            raise ValueError("map_seed must be one of the seeds run")
        return self

    def smoke(self) -> Config:
        """Two seeds of a 3x3 lattice, 12 steps, 2 starts per pattern."""
        d = self.model_dump()
        d.update(seeds=2, architecture={**d["architecture"], "rows": 3, "cols": 3, "skip_length": None,
                                        "n_skip": None},
                 snapshots=[0, 4, 12], map_steps=None, map_seed=None, repeats=2,
                 train=common.merged(self.train, epochs=12, eval_every=12))
        return Config.model_validate(d)


def _one_seed(task) -> dict:
    """Train one seed, measuring the maps at the snapshot steps; runs in a worker process."""
    cfg, _, (snapshots, repeats, threshold) = task
    t0 = time.perf_counter()
    train_set, test_set, net = prepare(cfg)
    r = cfg.relax
    inner = DigitalXYMachine(net, solver=r.solver, tol=r.tol, max_iter=r.max_iter, dtype=r.dtype,
                             backend=r.backend, threads=r.threads)
    cost = make_cost(cfg.ep.cost)
    rng = common.rng_for(DIAG_STREAM, cfg.seed)
    data = train_set.subset(np.tile(np.arange(len(train_set)), repeats))
    sites = net.free  # non-input sites (hidden and outputs)
    initial: list[Params] = []  # the step-0 parameters, once seen

    def measure(step: int, params: Params) -> dict:
        if not initial:
            initial.append(params)
        snap = {"step": step,
                "nudge_response": nudge_response(inner, params, data.x, data.targets, beta=cfg.ep.beta, cost=cost,
                                                 rng=rng),
                "input_sensitivity": input_sensitivity(inner, params, data.x, rng=rng),
                **bond_maps(net, params, initial[0]),
                "accuracy": evaluate(inner, params, data, cost, rng, batch_size=len(data)).accuracy}
        snap["abs_dw_since_start"] = snap.pop("abs_dw")
        for key in MAPS:
            v = snap[key][sites]
            snap[f"affected_{key}"] = float(np.mean(v >= threshold * v.max())) if v.max() > 0 else 0.0
        return {k: np.round(v, 6).tolist() if isinstance(v, np.ndarray) else v for k, v in snap.items()}

    schedule, taken = set(snapshots), []

    def on_step(state):
        if state.step in schedule:
            taken.append(measure(state.step, state.params))

    trainer = Trainer(cfg, inner, train_set, test_set, None, progress=False, on_step=on_step)
    if 0 in schedule:
        taken.append(measure(0, trainer.state.params))
    result = trainer.run()
    common.ensure_finished(result.summary)
    if [s["step"] for s in taken] != list(snapshots):
        raise RuntimeError(f"snapshots taken at steps {[s['step'] for s in taken]}, scheduled {list(snapshots)}: "
                           f"training ran {result.summary['steps_completed']} steps")
    return {"seed": cfg.seed, "final_test_accuracy": result.summary["final_test_accuracy"],
            "snapshots": taken, "wall_s": round(time.perf_counter() - t0, 3)}


def _panel_sites(ax, net, values, norm, cmap, ring=None):
    pos = net.positions
    ax.add_collection(LineCollection(pos[net.edges], colors="0.75", linewidths=0.6, zorder=0))
    free = net.free
    ax.scatter(pos[free, 0], pos[free, 1], c=values[free], cmap=cmap, norm=norm, s=110, marker="s", zorder=2)
    ax.scatter(pos[net.inputs, 0], pos[net.inputs, 1], s=110, marker="s", facecolors="none", edgecolors="0.3",
               zorder=2)
    if ring is not None:
        ax.scatter(pos[ring, 0], pos[ring, 1], s=200, marker="s", facecolors="none", edgecolors="red",
                   linewidths=1.2, zorder=3)
    ax.scatter(pos[net.outputs, 0], pos[net.outputs, 1], s=30, marker="*", c="white", zorder=4)


def plot_maps(net, run: dict, steps: list[int], threshold: float, path: Path) -> Path:
    """Rows: nudge response / max, input sensitivity / max (affected sites ringed red), |W|, |W - W(step 0)|;
    columns: steps."""
    snaps = [s for s in run["snapshots"] if s["step"] in steps]
    fig = common.figure(2.0 * len(snaps) + 1.4, 8.6)
    axes = fig.subplots(4, len(snaps), squeeze=False)
    for col, s in enumerate(snaps):
        for row, key in enumerate(MAPS):
            v = np.asarray(s[key])
            rel = v / v[net.free].max() if v[net.free].max() > 0 else v
            ring = np.flatnonzero(net.free & (rel >= threshold))
            _panel_sites(axes[row, col], net, rel, Normalize(0, 1), "viridis" if row == 0 else "magma", ring)
        for row, key, name in [(2, "abs_w", "|W|"), (3, "abs_dw_since_start", "|W - W(0)|")]:
            top = max(max(t[key]) for t in snaps) or 1.0
            lines = LineCollection(net.positions[net.edges], array=np.asarray(s[key]), linewidths=2.5,
                                   cmap="cividis" if row == 2 else "inferno", norm=Normalize(0, top))
            axes[row, col].add_collection(lines)
            if col == len(snaps) - 1:
                fig.colorbar(lines, ax=axes[row, -1], shrink=0.8, label=name)
        axes[0, col].set_title(f"step {s['step']} (acc {s['accuracy']:.2f})", fontsize=9)
    for ax in axes.ravel():
        ax.autoscale_view()
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for row, name in enumerate(["nudge response / max", "input sensitivity / max", "|W|", "|W - W(step 0)|"]):
        axes[row, 0].set_ylabel(name, fontsize=9)
    sm = axes[0, -1].collections[1]
    fig.colorbar(sm, ax=axes[:2, -1], shrink=0.8, label="fraction of max (red: affected)")
    fig.suptitle(f"{net.name}, seed {run['seed']}: affected (>= {threshold:g} x max) vs marginal sites",
                 fontsize=10)
    return common.save_figure(fig, path)


GROUPS = ("all", "trained", "not_trained")


def aggregate(runs: list[dict], steps: list[int]) -> dict:
    """Mean, std, 95 % bootstrap interval of the mean and per-seed values of the affected fractions and the
    accuracy at every snapshot, for all seeds and split by whether a seed ends trained (every pattern right from
    every start at the last snapshot)."""
    trained = [r["snapshots"][-1]["accuracy"] == 1.0 for r in runs]
    members = {"all": runs, "trained": [r for r, t in zip(runs, trained) if t],
               "not_trained": [r for r, t in zip(runs, trained) if not t]}
    out = {"step": steps, "trained_seeds": [r["seed"] for r in members["trained"]]}
    for g, (group, rs) in enumerate(members.items()):
        out[group] = {"n_seeds": len(rs)}
        for q, key in enumerate([f"affected_{m}" for m in MAPS] + ["accuracy"]):
            vals = np.array([[s[key] for s in r["snapshots"]] for r in rs]).reshape(len(rs), len(steps))
            out[group][key] = {"mean": vals.mean(0).tolist() if rs else None,
                               "std": vals.std(0).tolist() if rs else None,
                               "ci95": [common.bootstrap_interval(vals[:, k], key=100 * (4 * g + q) + k)
                                        for k in range(len(steps))] if rs else None,
                               "per_seed": vals.tolist()}
    return out


def plot_fractions(agg: dict, n_free: int, threshold: float, path: Path) -> Path:
    fig = common.figure(10.0, 4.0)
    axes = fig.subplots(1, 2, sharey=True)
    x = np.asarray(agg["step"], float)
    for ax, group in zip(axes, ("trained", "not_trained")):
        g = agg[group]
        for key, name in [("affected_nudge_response", "affected (nudge response)"),
                          ("affected_input_sensitivity", "affected (input sensitivity)"), ("accuracy", "accuracy")]:
            if g[key]["mean"] is None:
                continue
            m, ci = np.asarray(g[key]["mean"]), np.asarray(g[key]["ci95"])
            ax.plot(x, m, ls="--" if key == "accuracy" else "-", marker="o", ms=3, label=name)
            ax.fill_between(x, ci[:, 0], ci[:, 1], alpha=0.15)
        ax.set_xscale("symlog", linthresh=max(1.0, x[1]))
        ax.set(xlabel="training step", ylim=(-0.02, 1.02),
               title=f"{group.replace('_', ' ')} seeds ({g['n_seeds']}), mean and 95 % CI")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"fraction of {n_free} non-input sites (marginal = 1 - affected)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no seeds", ha="center", transform=ax.transAxes)
    fig.suptitle(f"affected: response >= {threshold:g} x max over non-input sites; "
                 "trained: all patterns right from all starts at the last step", fontsize=9)
    return common.save_figure(fig, path)


def _cell(g: dict, key: str, k: int) -> str:
    if g[key]["mean"] is None:
        return "—"
    lo, hi = g[key]["ci95"][k]
    return f"{100 * g[key]['mean'][k]:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def table(agg: dict) -> str:
    n = {g: agg[g]["n_seeds"] for g in GROUPS}
    headers = ["step"] + [f"affected % by {m.replace('_', ' ')}: {g.replace('_', ' ')} ({n[g]})"
                          for m in MAPS for g in GROUPS] + [f"accuracy % ({n['all']})"]
    rows = [[step] + [_cell(agg[g], f"affected_{m}", k) for m in MAPS for g in GROUPS]
            + [_cell(agg["all"], "accuracy", k)] for k, step in enumerate(agg["step"])]
    return common.format_table(headers, rows)


def run(cfg: Config, out_dir, progress: bool = True, workers: int = 1, engine=None) -> dict:
    """Run every seed (``engine``, default the local pool of ``workers``; records in ``out_dir/runs``,
    finished ones kept) and summarise the ``ok`` runs."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    sweep = common.sweep_seeds(cfg, [cfg.architecture], _one_seed, (cfg.snapshots, cfg.repeats, cfg.threshold),
                               out_dir, engine, workers, progress, "regions seeds")
    _, _, net = prepare(cfg.train_config(cfg.architecture, cfg.first_seed))
    sweep.check_groups([net.name])
    runs = sweep.ok
    agg = aggregate(runs, cfg.snapshots)
    chosen = [r for r in runs if r["seed"] == cfg.map_seed]
    if chosen:
        drawn = chosen[0]
    else:  # first seed with the best final accuracy (also when the map_seed run did not finish ok)
        drawn = max(runs, key=lambda r: (r["snapshots"][-1]["accuracy"], -r["seed"]))
    plot_maps(net, drawn, cfg.map_steps or cfg.snapshots, cfg.threshold, out_dir / "maps.png")
    plot_fractions(agg, int(net.n_free), cfg.threshold, out_dir / "affected_fraction.png")
    return common.finish(NAME, cfg, out_dir, table(agg), sweep, t0, network=net.name,
                         n_free_sites=int(net.n_free), input_sites=net.inputs.tolist(),
                         output_sites=net.outputs.tolist(), edges=net.edges.tolist(), map_seed=drawn["seed"],
                         fractions=agg, runs=runs, figures=["maps.png", "affected_fraction.png"])


def main(argv=None) -> int:
    return common.run_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
