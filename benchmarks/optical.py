"""The optical machine on the ideal simulated rig (every imperfection off, 16-bit SLM) against the digital
machine: largest angle difference of free and nudged equilibria, and time per equilibrium.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/optical.py --out benchmarks/results/optical.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from drivers.simulated_rig import RigCamera, RigSLM
from xyoptics.core.angles import wrap
from xyoptics.core.architectures import square_lattice
from xyoptics.core.costs import CosineCost
from xyoptics.core.digital import DigitalXYMachine
from xyoptics.core.machine import Nudge
from xyoptics.hil.layout import RigTopology
from xyoptics.hil.optical import OpticalXYMachine


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    logging.getLogger("slmsuite").setLevel(logging.ERROR)
    net = square_lattice(3, 4, inputs=2, outputs=1, skip_length=2)
    topology = RigTopology(n_spins=net.n_spins, bonds=[tuple(e) for e in net.edges.tolist()])
    digital = DigitalXYMachine(net, tol=1e-9, dtype=np.float64)
    results = {}
    for readout in ("phase_shifting", "off_axis"):
        errors, seconds = [], 0.0
        for seed in range(args.seeds):
            slm = RigSLM((256, 128), 16, topology=topology.model_dump(), imperfections="none", seed=seed)
            optical = OpticalXYMachine(net, slm, RigCamera(slm), topology, readout=readout)
            rng = np.random.default_rng(seed)
            params = net.init_params(rng)
            x = rng.uniform(-np.pi / 2, np.pi / 2, (args.batch, 2))
            t0 = time.perf_counter()
            free = optical.equilibrate(params, x)
            seconds += time.perf_counter() - t0
            ref = digital.equilibrate(params, x, start=free.phases)
            nudge = Nudge(0.5, np.where(rng.random((args.batch, 1)) < 0.5, np.pi / 2, -np.pi / 2), CosineCost())
            nudged = optical.equilibrate(params, x, nudge=nudge, start=free)
            ref_nudged = digital.equilibrate(params, x, nudge=nudge, start=ref)
            errors += [np.abs(wrap(free.phases - ref.phases)).max(), np.abs(wrap(nudged.phases - ref_nudged.phases)).max()]
        results[readout] = {"max_abs_difference_rad": float(max(errors)), "median_rad": float(np.median(errors)),
                            "ms_per_free_equilibrium": 1e3 * seconds / (args.seeds * args.batch)}
        r = results[readout]
        print(f"{readout:>15}: max |optical - digital| = {r['max_abs_difference_rad']:.4f} rad "
              f"(median {r['median_rad']:.4f}), {r['ms_per_free_equilibrium']:.1f} ms per free equilibrium")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
