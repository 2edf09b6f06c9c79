"""Relaxation speed: FIRE against fixed-step Euler gradient flow on all-to-all networks.

Setup (DESIGN.md section 2.4): W = (A + A^T)/2 with A ~ N(0, 1/N), zero diagonal; 2 inputs clamped to
U(-pi/2, pi/2); h = 0, psi ~ U(-pi, pi); starts U(-pi, pi); stop when every sample has max|force| < 1e-4.
Prints a table and writes JSON. Run with one BLAS thread:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/relax.py --out benchmarks/results/relax.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from xyoptics.core.architectures import all_to_all
from xyoptics.core.network import Params
from xyoptics.core.relax import build_landscape, minimise


def problem(n: int, batch: int, dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    net = all_to_all(2, n - 3, 1)
    a = rng.normal(0.0, 1.0 / np.sqrt(n), (n, n))
    w = (a + a.T) / 2
    params = Params(w[net.edges[:, 0], net.edges[:, 1]], np.zeros(n), rng.uniform(-np.pi, np.pi, n))
    x = rng.uniform(-np.pi / 2, np.pi / 2, (batch, 2))
    land = build_landscape(net, params, x, dtype=dtype)
    phi0 = rng.uniform(-np.pi, np.pi, (batch, net.n_free)).astype(dtype)
    return land, phi0


def measure(n, batch, dtype, solver, tol, max_iter, repeats):
    land, phi0 = problem(n, batch, dtype)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = minimise(land, phi0, solver=solver, tol=tol, max_iter=max_iter)
        best = min(best, time.perf_counter() - t0)
    updates = float(res.iterations.sum()) * phi0.shape[1]
    return {"n_spins": n, "batch": batch, "dtype": np.dtype(dtype).name, "solver": solver,
            "time_s": best, "spin_updates_per_s": updates / best, "max_iterations": int(res.iterations.max()),
            "mean_iterations": float(res.iterations.mean()), "unconverged": res.n_unconverged}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--max-iter", type=int, default=500000)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs (FIRE); Euler runs once")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)

    rows = []
    header = f"{'N':>5} {'batch':>5} {'dtype':>7} {'solver':>6} {'time/s':>9} {'updates/s':>10} {'iters':>7} {'unconv':>6}"
    print(header)
    for n in args.sizes:
        for batch in args.batches:
            for dtype in (np.float32, np.float64):
                for solver in ("fire", "euler"):
                    r = measure(n, batch, dtype, solver, args.tol, args.max_iter,
                                args.repeats if solver == "fire" else 1)
                    rows.append(r)
                    print(f"{n:>5} {batch:>5} {r['dtype']:>7} {solver:>6} {r['time_s']:>9.4f} "
                          f"{r['spin_updates_per_s']:>10.3g} {r['max_iterations']:>7} {r['unconverged']:>6}",
                          flush=True)
    speedups = []
    for r in rows:
        if r["solver"] == "fire":
            e = next(q for q in rows if q["solver"] == "euler" and
                     (q["n_spins"], q["batch"], q["dtype"]) == (r["n_spins"], r["batch"], r["dtype"]))
            speedups.append({"n_spins": r["n_spins"], "batch": r["batch"], "dtype": r["dtype"],
                             "fire_speedup_over_euler": e["time_s"] / r["time_s"]})
    print("\nFIRE speed-up over Euler (time to equilibrium):")
    for s in speedups:
        print(f"  N={s['n_spins']:>4} batch={s['batch']:>3} {s['dtype']}: {s['fire_speedup_over_euler']:.1f}x")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"tol": args.tol, "machine": platform.machine(), "python": platform.python_version(),
                "numpy": np.__version__}
        args.out.write_text(json.dumps({"meta": meta, "results": rows, "speedups": speedups}, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
