"""Relaxation: every minimiser side by side, to max|force| <= 1e-4 and to the authors' residuals.

Problems (DESIGN.md section 2.4; batch 64, float32, starts U(-pi, pi)):
  lattice L x L: inputs clamped on row 0 to U(-pi/2, pi/2), couplings N(0, 1)/sqrt(L(L-1)), h = 0, psi ~ U(-pi, pi);
  all-to-all 100: W = (A + A^T)/2, A ~ N(0, 1/N), 2 inputs, 1 output;
  LCL 28x28: window 6, stride 1 -> 23x23 -> 10 outputs, couplings as the 28x28 lattice;
  digits: the 2024 all-to-all network (64 inputs, 11 hidden, 10 outputs) at its training batch of 10, couplings
  as all-to-all, inputs U(-pi/2, pi/2).
The authors' code stops near max|force| = 0.05 (lattices) and 0.135 (all-to-all 100); 0.05 is used for LCL and
digits. "baseline" is a plain numpy Nesterov scheme with gradient restart written here, independent of the
library. Times are the best of --repeats runs on one BLAS thread; the ratio column divides the baseline's time
by each row's, so it is stable on a busy machine.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/relax.py --out benchmarks/results/relax.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from operators import lattice_params
from xyoptics.core.architectures import LocalLayer, all_to_all, local_layers, square_lattice
from xyoptics.core.network import Params
from xyoptics.core.relax import build_landscape, minimise

RESIDUAL = {"lattice 10x10": 0.05, "lattice 28x28": 0.05, "all-to-all 100": 0.135, "LCL 28x28 w6": 0.05,
            "digits all-to-all": 0.05}
#: (solver, backend, threads) per row; the baseline is this file's own loop
CANDIDATES = [("baseline", "numpy", 1), ("fire", "numpy", 1), ("fire2", "numpy", 1), ("nesterov", "numpy", 1),
              ("lbfgs", "numpy", 1), ("fire", "compiled", 1), ("lbfgs", "compiled", 1), ("lbfgs", "compiled", 2)]


def all_to_all_params(net, rng):
    n = net.n_spins
    a = rng.normal(0.0, 1.0 / np.sqrt(n), (n, n))
    w = (a + a.T) / 2
    return Params(w[net.edges[:, 0], net.edges[:, 1]], np.zeros(n), rng.uniform(-np.pi, np.pi, n))


def problems(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    nets = {"lattice 10x10": (square_lattice(10, 10, 10, 1), 10), "lattice 28x28": (square_lattice(28, 28, 28, 10), 28),
            "LCL 28x28 w6": (local_layers((28, 28), [LocalLayer(6)], 10), 28),
            "all-to-all 100": (all_to_all(2, 97, 1), None), "digits all-to-all": (all_to_all(64, 11, 10), None)}
    for name, (net, side) in nets.items():
        params = lattice_params(net, side, rng) if side else all_to_all_params(net, rng)
        b = 10 if name.startswith("digits") else batch
        x = rng.uniform(-np.pi / 2, np.pi / 2, (b, len(net.inputs)))
        land = build_landscape(net, params, x, dtype=np.float32)
        yield name, land, rng.uniform(-np.pi, np.pi, (b, net.n_free)).astype(np.float32)


def baseline(land, phi0, tol, max_iter=200000):
    """Nesterov's accelerated gradient, step 1/L, momentum k/(k+3), restart when the force opposes the
    momentum; finished samples are frozen. Returns per-sample iterations."""
    eta = 1.0 / land.curvature_bound
    x = phi0.copy()
    y = phi0.copy()
    k = np.zeros((len(x), 1), x.dtype)
    live = np.arange(len(x))
    iters = np.zeros(len(x), np.int64)
    for it in range(max_iter + 1):
        f = land.take(live).forces(y[live])
        done = np.abs(f).max(axis=1) < tol
        iters[live[done]] = it
        live, f = live[~done], f[~done]
        if not len(live):
            break
        step = eta * f
        step *= np.minimum(1.0, 0.3 / np.abs(step).max(axis=1, keepdims=True))
        new = y[live] + step
        momentum = new - x[live]
        against = (f * momentum).sum(axis=1) < 0
        k[live[against]] = 0
        k[live] += 1
        momentum[against] = 0
        x[live] = new
        y[live] = new + (k[live] - 1) / (k[live] + 2) * momentum
    return iters


def run_once(land, phi0, solver, backend, threads, tol):
    t0 = time.perf_counter()
    if solver == "baseline":
        iters, unconverged = baseline(land, phi0, tol), 0
    else:
        res = minimise(land, phi0, solver=solver, tol=tol, max_iter=200000, backend=backend, threads=threads)
        iters, unconverged = res.iterations, res.n_unconverged
    return time.perf_counter() - t0, iters, unconverged


def measure(name, land, phi0, solver, backend, threads, tol, repeats):
    if backend == "compiled":  # compile (or load from cache) outside the timing
        minimise(land.take(np.arange(1)), phi0[:1], solver=solver, tol=tol, backend=backend)
    best = np.inf
    for _ in range(repeats):
        t, iters, unconverged = run_once(land, phi0, solver, backend, threads, tol)
        best = min(best, t)
    return {"problem": name, "batch": len(phi0), "n_free": phi0.shape[1], "solver": solver, "backend": backend,
            "threads": threads, "tol": tol, "time_s": best, "max_iterations": int(iters.max()),
            "mean_iterations": float(iters.mean()), "unconverged": int(unconverged)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    ap.add_argument("--only", nargs="+", help="problem names to run (default: all)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)

    rows = []
    print(f"{'problem':<18} {'solver':<9} {'backend':<8} {'thr':>3} | {'1e-4: ms':>9} {'iters max/mean':>15} "
          f"{'x base':>6} | {'residual':>8} {'ms':>7} {'iters':>6} {'x base':>6}")
    for name, land, phi0 in problems(args.batch):
        if args.only and name not in args.only:
            continue
        base = {}
        for solver, backend, threads in CANDIDATES:
            tight = measure(name, land, phi0, solver, backend, threads, 1e-4, args.repeats)
            loose = measure(name, land, phi0, solver, backend, threads, RESIDUAL[name], args.repeats)
            if solver == "baseline":
                base = {"tight": tight["time_s"], "loose": loose["time_s"]}
            tight["speedup_over_baseline"] = base["tight"] / tight["time_s"]
            loose["speedup_over_baseline"] = base["loose"] / loose["time_s"]
            rows += [tight, loose]
            print(f"{name:<18} {solver:<9} {backend:<8} {threads:>3} | {1e3 * tight['time_s']:>9.1f} "
                  f"{tight['max_iterations']:>7}/{tight['mean_iterations']:<7.0f} "
                  f"{tight['speedup_over_baseline']:>6.2f} | {RESIDUAL[name]:>8} {1e3 * loose['time_s']:>7.1f} "
                  f"{loose['max_iterations']:>6} {loose['speedup_over_baseline']:>6.2f}"
                  + ("  UNCONVERGED" if tight["unconverged"] or loose["unconverged"] else ""), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"batch": args.batch, "repeats": args.repeats, "dtype": "float32", "machine": platform.machine(),
                "processor": platform.processor(), "python": platform.python_version(), "numpy": np.__version__,
                "date": time.strftime("%Y-%m-%d")}
        args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
