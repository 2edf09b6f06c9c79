"""General (dense / CSR) against structured (stencil / kernel-offset) coupling paths, and lattice relaxation
against DESIGN.md's speed targets.

Lattice set-up (DESIGN.md section 2.4): L x L, inputs clamped on row 0 to U(-pi/2, pi/2), couplings
N(0, 1)/sqrt(L(L-1)), h = 0, psi ~ U(-pi, pi), batch 64, starts U(-pi, pi), float32, stop at max|force| < 1e-4.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/operators.py --out benchmarks/results/operators.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from xyoptics.core.architectures import LocalLayer, local_layers, square_lattice
from xyoptics.core.network import Params
from xyoptics.core.relax import build_landscape, minimise


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def lattice_params(net, L, rng):
    return Params(rng.normal(0, 1, net.n_coupling_params) / np.sqrt(L * (L - 1)), np.zeros(net.n_spins),
                  rng.uniform(-np.pi, np.pi, net.n_spins))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    nets = {"lattice 10x10": square_lattice(10, 10, 10, 1), "lattice 28x28": square_lattice(28, 28, 28, 10),
            "lattice 28x28 + skip 7": square_lattice(28, 28, 28, 10, skip_length=7, skip_every=2),
            "LCL 28x28 w6": local_layers((28, 28), [LocalLayer(6)], 10),
            "CNN 28x28 w6 x4 +sq": local_layers((28, 28), [LocalLayer(6, channels=4, shared=True, intra=True)], 10)}
    rows = []
    print(f"{'network':<24} {'path':<10} {'free op/ms':>10} {'grads/ms':>9} {'relax/s':>8} {'steps':>6}")
    for name, net in nets.items():
        L = int(np.sqrt(len(net.inputs)))
        params = lattice_params(net, L, rng)
        x = rng.uniform(-np.pi / 2, np.pi / 2, (args.batch, len(net.inputs)))
        phi0 = rng.uniform(-np.pi, np.pi, (args.batch, net.n_free)).astype(np.float32)
        full = rng.uniform(-np.pi, np.pi, (args.batch, net.n_spins)).astype(np.float32)
        for path, variant in (("general", net), ("structured", dataclasses.replace(net, structured=True))):
            p32 = params.astype(np.float32)
            op = variant.free_operator(p32, np.float32)
            xs = np.concatenate([np.cos(phi0), np.sin(phi0)])
            t_op = best_of(lambda: op(xs), 5 * args.repeats)
            t_grad = best_of(lambda: variant.parameter_gradients(p32, full), args.repeats)
            land = build_landscape(variant, params, x, dtype=np.float32)
            res = None

            def relax():
                nonlocal res
                res = minimise(land, phi0, solver="fire", tol=1e-4, max_iter=100000, backend="numpy")
            t_relax = best_of(relax, args.repeats) if name.startswith("lattice") else float("nan")
            steps = int(res.iterations.max()) if res is not None else 0
            rows.append({"network": name, "path": path, "free_operator_ms": 1e3 * t_op, "gradients_ms": 1e3 * t_grad,
                         "relax_s": t_relax, "max_steps": steps,
                         "unconverged": res.n_unconverged if res is not None else None})
            print(f"{name:<24} {path:<10} {1e3 * t_op:>10.3f} {1e3 * t_grad:>9.2f} {t_relax:>8.3f} {steps:>6}",
                  flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"batch": args.batch, "results": rows}, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
