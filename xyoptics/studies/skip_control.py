"""Skip length on 8x8 and 10x10 XOR lattices, controlled: a fixed number of skip bonds, and a control placement
that never shortens the input-output graph distance; success rate and the measured nudge-response range.

The seed paper finds that longer skip connections raise the XOR success rate of lattices and explains it by
long-range responses. On a small lattice, long skips also wire the inputs closer to the output, which alone
could raise the rate. This study separates the two. For each lattice (``n_skip`` extra bonds, fixed for every
length l) it trains three kinds of network per seed:

* ``plain``: the lattice without skips (drawn at l = 1);
* ``skip l``: ``n_skip`` skips of length l spread evenly over all candidates, half along rows, half along columns
  (``square_lattice(..., n_skip=K)``); they shorten the input-output distance more as l grows;
* ``control l``: ``n_skip`` skips of length l placed only where every input-output graph distance stays that of
  the plain lattice (``keep_distance``).

Per seed, with the XOR protocol of ``xor_success`` (training stops at the first evaluation with all four patterns
right): **success** when afterwards each pattern is right from every one of ``strict_starts`` fresh starts
(and, looser, whether training **reached** 100 % in one evaluation); and
the **response range** of the initial and of the trained network: the mean over the four patterns of the nudge
response r_i = |phi_i^beta - phi_i^0| (log-cosine nudge of ``response_beta``, relaxed in float64 to
max|force| < 1e-10), averaged over the sites at each lattice (Manhattan) distance d from the output, fitted as
r(d) ~ exp(-d / xi) over d >= 1; xi (in lattice spacings) is the decay length, and ``input reach`` is the mean
response on the row next to the inputs over the output's own.

Reported per network over its ``ok`` seeds: success rate with a 95 % Wilson interval, mean strict accuracy and
mean xi (initial and trained) with 95 % percentile-bootstrap intervals, the input-output graph distance.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core.architectures import graph_distances
from ..core.costs import LogCosineCost, targets_for
from ..core.digital import DigitalXYMachine
from . import common

NAME = "skip_control"
STRICT_STREAM, RESPONSE_STREAM = 7201, 7202
RESPONSE_TOL = 1e-10


class LatticeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int = Field(ge=3)
    cols: int = Field(ge=3)
    n_skip: int = Field(ge=1, description="skip bonds added at every length (the bond count stays fixed)")
    lengths: list[int] = Field(min_length=1)


class Config(common.StudyConfig):
    seeds: int = Field(default=50, ge=1)
    first_seed: int = Field(default=0, ge=0)
    strict_starts: int = Field(default=10, ge=1)
    response_beta: float = Field(default=0.1, gt=0)
    lattices: list[LatticeSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self):
        self.check_train("xor", [a for a, _ in self.networks()])
        return self

    def networks(self) -> list[tuple[dict, dict]]:
        """(architecture, description) of every network, lattice by lattice: plain, then skip / control per l."""
        out = []
        for lat in self.lattices:
            base = {"kind": "square_lattice", "rows": lat.rows, "cols": lat.cols}
            out.append((base, {"lattice": f"{lat.rows}x{lat.cols}", "kind": "plain", "length": 1}))
            for length in lat.lengths:
                for kind, keep in (("skip", False), ("control", True)):
                    out.append(({**base, "skip_length": length, "n_skip": lat.n_skip, "keep_distance": keep},
                                {"lattice": f"{lat.rows}x{lat.cols}", "kind": kind, "length": length}))
        return out

    def smoke(self) -> Config:
        """The first lattice with two lengths, two seeds, 10 steps."""
        train = common.merged(self.train, epochs=10, eval_every=5)
        first = self.lattices[0].model_copy(update={"lengths": self.lattices[0].lengths[:2]})
        return Config.model_validate({**self.model_dump(), "seeds": 2, "strict_starts": 3, "train": train,
                                      "lattices": [first.model_dump()]})


def response_profile(net, params, beta: float, rng: np.random.Generator) -> dict:
    """Nudge response of ``net`` with ``params`` against lattice distance from the (single) output: the mean
    response per distance, the decay length xi of an exponential fit over d >= 1, the input reach."""
    from ..analysis.diagnostics import nudge_response
    from ..data.datasets import xor

    data = xor()
    machine = DigitalXYMachine(net, tol=RESPONSE_TOL, max_iter=200000, dtype=np.float64)
    r = nudge_response(machine, params, data.x, targets_for(data.labels, 1), beta=beta, cost=LogCosineCost(),
                       rng=rng)
    pos = np.asarray(net.positions)
    d = np.abs(pos - pos[net.outputs[0]]).sum(axis=1).round().astype(int)
    free = np.ones(net.n_spins, bool)
    free[net.inputs] = False
    dist = np.arange(d[free].max() + 1)
    mean = np.array([r[free & (d == k)].mean() if np.any(free & (d == k)) else np.nan for k in dist])
    row_next_to_inputs = free & (np.round(-pos[:, 1]).astype(int) == 1)
    return {"per_distance": mean.tolist(), "xi": decay_length(mean),
            "input_reach": float(r[row_next_to_inputs].mean() / r[net.outputs[0]])}


def decay_length(mean_per_distance) -> float:
    """xi of the least-squares fit log r(d) = a - d / xi over d >= 1 (entries that are nan or <= 0 left out);
    inf when the response does not fall with distance, nan with fewer than two usable distances."""
    mean = np.asarray(mean_per_distance, float)
    dist = np.arange(len(mean))
    fit = (dist >= 1) & np.isfinite(mean) & (mean > 0)
    if fit.sum() < 2:
        return float("nan")
    slope = np.polyfit(dist[fit], np.log(mean[fit]), 1)[0]
    return float(-1.0 / slope) if slope < 0 else float("inf")


def _one_seed(task) -> dict:
    """Train one seed of one network, apply the success test and measure the response range."""
    from ..lab.build import prepare
    from ..lab.trainer import initial_parameters

    cfg, index, (strict_starts, beta) = task
    t0 = time.perf_counter()
    result, ev = common.train_and_recheck(cfg, "train", strict_starts, common.rng_for(STRICT_STREAM, index, cfg.seed))
    net = prepare(cfg)[2]
    initial = response_profile(net, initial_parameters(cfg, net), beta, common.rng_for(RESPONSE_STREAM, index, 0))
    trained = response_profile(net, result.params, beta, common.rng_for(RESPONSE_STREAM, index, 1))
    return {"network": index, "seed": cfg.seed, "success": ev.accuracy == 1.0, "strict_accuracy": ev.accuracy,
            "reached": result.summary["status"] == "target_reached",
            "epochs": result.summary["epochs_completed"], "xi_initial": initial["xi"], "xi_trained": trained["xi"],
            "reach_initial": initial["input_reach"], "reach_trained": trained["input_reach"],
            "profile_trained": trained["per_distance"],
            "unconverged": result.summary["unconverged_train_relaxations"] + ev.n_unconverged,
            "wall_s": round(time.perf_counter() - t0, 3)}


def _mean_ci(values, key: int) -> dict:
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    return {"mean": float(v.mean()) if v.size else None, "ci95": common.bootstrap_interval(v, key=key),
            "n_finite": int(v.size)}


def summarise(cfg: Config, runs: list[dict]) -> list[dict]:
    from ..lab.build import prepare

    rows = []
    for k, (arch, desc) in enumerate(cfg.networks()):
        mine = [r for r in runs if r["network"] == k]
        net = prepare(cfg.train_config(arch, cfg.first_seed))[2]
        io = graph_distances(net.n_spins, net.edges, net.inputs)[:, net.outputs]
        wins = sum(r["success"] for r in mine)
        rows.append({"network": k, **desc, "architecture": arch, "n_couplings": net.n_couplings,
                     "io_distance": [int(v) for v in io.ravel()], "n_seeds": len(mine), "successes": wins,
                     "reached": (sum(r["reached"] for r in mine)  # None: runs recorded before it was measured
                                 if all("reached" in r for r in mine) else None),
                     "success_rate": wins / max(len(mine), 1), "ci95": common.wilson_interval(wins, len(mine)),
                     "strict_accuracy": _mean_ci([r["strict_accuracy"] for r in mine], 3 * k),
                     "xi_initial": _mean_ci([r["xi_initial"] for r in mine], 3 * k + 1),
                     "xi_trained": _mean_ci([r["xi_trained"] for r in mine], 3 * k + 2),
                     "reach_trained_median": float(np.median([r["reach_trained"] for r in mine])) if mine else None,
                     "unconverged": sum(r["unconverged"] for r in mine)})
    return rows


def table(rows: list[dict]) -> str:
    def ci(d, digits=2, scale=1.0):
        if d["mean"] is None:
            return "—"
        lo, hi = d["ci95"]
        return f"{scale * d['mean']:.{digits}f} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"

    pct = common.pct
    return common.format_table(
        ["lattice", "network", "l", "bonds", "input-output distance", "success [95 % CI]", "reached 100 % once",
         "strict accuracy %", "xi initial", "xi trained", "input reach (median)"],
        [[r["lattice"], r["kind"], r["length"], r["n_couplings"], "/".join(map(str, r["io_distance"])),
          f"{r['successes']}/{r['n_seeds']} = {pct(r['success_rate'], 0)} [{pct(r['ci95'][0], 0)}, "
          f"{pct(r['ci95'][1], 0)}]", "—" if r["reached"] is None else f"{r['reached']}/{r['n_seeds']}",
          ci(r["strict_accuracy"], 1, 100),
          ci(r["xi_initial"]), ci(r["xi_trained"]),
          f"{r['reach_trained_median']:.2g}"] for r in rows])


def plot(rows: list[dict], out_dir: Path) -> list[str]:
    """success_vs_length.png (with the looser reached-once rate, hollow) and response_range.png: one panel per
    lattice, skip and control against l."""
    lattices = sorted({r["lattice"] for r in rows}, key=lambda s: int(s.split("x")[0]))
    names = []
    for fname, key, ylabel in (("success_vs_length.png", "success", "success rate (all starts correct)"),
                               ("response_range.png", "xi_trained", "decay length xi of the nudge response")):
        fig = common.figure(4.2 * len(lattices), 3.8)
        for ax, lat in zip(np.atleast_1d(fig.subplots(1, len(lattices))), lattices):
            plain = next(r for r in rows if r["lattice"] == lat and r["kind"] == "plain")
            for kind, fmt in (("skip", "o-"), ("control", "s--")):
                pts = [plain] + [r for r in rows if r["lattice"] == lat and r["kind"] == kind]
                x = np.array([r["length"] for r in pts], float) + (0.08 if kind == "control" else 0)
                if key == "success":
                    y = np.array([r["success_rate"] for r in pts])
                    lohi = np.array([r["ci95"] for r in pts]).T
                else:
                    y = np.array([np.nan if r[key]["mean"] is None else r[key]["mean"] for r in pts])
                    lohi = np.array([r[key]["ci95"] for r in pts], float).T
                label = "skips shorten the path" if kind == "skip" else "control: same distance"
                bars = ax.errorbar(x, y, yerr=np.abs(lohi - y), fmt=fmt, capsize=3, label=label)
                if key == "success" and all(r["reached"] is not None for r in pts):
                    ax.plot(x, [r["reached"] / r["n_seeds"] for r in pts], fmt[0] + ":", mfc="none",
                            color=bars.lines[0].get_color(), label=f"{label}: reached 100 % once")
            ax.set(xlabel="skip length l (1: plain lattice)", ylabel=ylabel, title=f"{lat}, XOR")
            if key == "success":  # room above 1 for the legend
                ax.set_ylim(-0.02, 1.4)
                ax.set_yticks(np.linspace(0, 1, 6))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        common.save_figure(fig, out_dir / fname)
        names.append(fname)
    return names


def run(cfg: Config, out_dir, progress: bool = True, workers: int = 1, engine=None) -> dict:
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    sweep = common.sweep_seeds(cfg, [a for a, _ in cfg.networks()], _one_seed,
                               (cfg.strict_starts, cfg.response_beta), out_dir, engine, workers, progress,
                               "skip control")
    sweep.check_groups([f"{d['lattice']} {d['kind']} l={d['length']}" for _, d in cfg.networks()], "network")
    rows = summarise(cfg, sweep.ok)
    figures = plot(rows, out_dir)
    return common.finish(NAME, cfg, out_dir, table(rows), sweep, t0, summary=rows, runs=sweep.ok, figures=figures)


def main(argv=None) -> int:
    return common.run_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
