"""Training through a rig that holds R replicas of the network against one that holds one: same configs, same
seeds, the ideal simulated rig (experiments/rigs/ideal.yaml on a 512x256 SLM, so that four copies fit).

Fresh starts come from the seeded generator, so both rigs start every sample from the same angles; what
differs is the readout noise of their equilibria and how many frames a batch takes. Per config and seed the
table gives final test accuracy and the test accuracy at the epoch selected on the training set, camera frames and wall time for R = 1 and R = REPLICAS.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/replicas.py --out benchmarks/results/replicas.json
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from xyoptics.config import load_config
from xyoptics.core.files import write_json_atomic
from xyoptics.hil.rig import NetworkRouting, load_rig, open_optical_machine
from xyoptics.lab.trainer import prepare, train

CONFIGS = {"xor": ("experiments/xor_lattice_skip_rig.yaml", None), "iris": ("experiments/iris_rig.yaml", None)}


def ideal_rig(replicas: int):
    rig = load_rig("experiments/rigs/ideal.yaml")
    slm = rig.slm.model_copy(update={"kwargs": {**rig.slm.kwargs, "resolution": [512, 256]}})
    return rig.model_copy(update={"slm": slm, "topology": NetworkRouting(routing="network", replicas=replicas)})


def run(config: str, seed: int, replicas: int, epochs: int | None) -> dict:
    cfg = load_config(config).model_copy(update={"seed": seed, **({"epochs": epochs} if epochs else {})})
    net = prepare(cfg)[2]
    t0 = time.perf_counter()
    with open_optical_machine(ideal_rig(replicas), net) as machine:
        summary = train(cfg, machine=machine, progress=False).summary
        frames = machine.frames_read
    return {"final": summary["final_test_accuracy"], "selected": summary["selected_test_accuracy"],
            "status": summary["status"], "steps": summary["steps_completed"], "frames": frames,
            "seconds": time.perf_counter() - t0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs=2, default=[10, 5], metavar=("XOR", "IRIS"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    logging.getLogger("slmsuite").setLevel(logging.ERROR)
    results = {}
    print(f"{'task':>5} {'seed':>4} {'final R=1':>9} {'final R=' + str(args.replicas):>9} {'sel. R=1':>8} "
          f"{'sel. R=' + str(args.replicas):>8} {'frames ratio':>12} {'time ratio':>10}")
    for (task, (config, epochs)), n_seeds in zip(CONFIGS.items(), args.seeds):
        rows = results.setdefault(task, [])
        for seed in range(n_seeds):
            one, many = run(config, seed, 1, epochs), run(config, seed, args.replicas, epochs)
            rows.append({"seed": seed, "one": one, "replicated": many})
            print(f"{task:>5} {seed:>4} {one['final']:>9.3f} {many['final']:>9.3f} {one['selected']:>8.3f} "
                  f"{many['selected']:>8.3f} {many['frames'] / one['frames']:>12.2f} "
                  f"{many['seconds'] / one['seconds']:>10.2f}")
        finals = np.array([[r["one"]["final"], r["replicated"]["final"]] for r in rows])
        print(f"{task:>5} mean final accuracy R=1 {finals[:, 0].mean():.3f}, R={args.replicas} "
              f"{finals[:, 1].mean():.3f}; largest seed difference {np.abs(finals[:, 0] - finals[:, 1]).max():.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out, results)


if __name__ == "__main__":
    main()
