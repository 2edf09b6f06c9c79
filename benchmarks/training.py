"""Training speed: seconds per epoch of EP training (free + nudged relaxations, gradients, optimiser), by
relaxation engine, side by side in one run.

Networks: the shipped configs ``experiments/mnist_lcl.yaml`` (MNIST train5k, LCL 28x28 -> 23x23 -> 10, batch
50, 100 steps per epoch) and ``experiments/digits_all_to_all.yaml`` (1,000 digits, all-to-all 85 spins, batch
10, 100 steps). First ``--epochs`` epochs are trained with compiled L-BFGS on 2 threads and each epoch is timed
(relaxations get slower as the couplings grow). Then, from those trained parameters, each engine is timed side
by side: FIRE in numpy (the default before L-BFGS; its first ``--fire-steps`` steps, scaled to an epoch) and
compiled L-BFGS on 1 and 2 threads (a whole epoch). Evaluation is never included. Run with one BLAS thread:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/training.py --out benchmarks/results/training.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from xyoptics.config import load_config
from xyoptics.lab.build import digital_machine, prepare
from xyoptics.lab.trainer import Trainer, TrainingFailed

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"MNIST LCL train5k": ROOT / "experiments/mnist_lcl.yaml",
           "digits all-to-all": ROOT / "experiments/digits_all_to_all.yaml"}
ENGINES = [("fire", "numpy", 1), ("lbfgs", "compiled", 1), ("lbfgs", "compiled", 2)]


class _Enough(Exception):
    """Raised from the step hook once enough steps are timed."""


def with_engine(path: Path, solver: str, backend: str, threads: int, epochs: int):
    cfg = load_config(path)
    relax = cfg.relax.model_copy(update={"solver": solver, "backend": backend, "threads": threads})
    return cfg.model_copy(update={"relax": relax, "epochs": epochs, "eval_every": epochs})


def timed_steps(cfg, steps: int | None, init_params=None) -> tuple[list[float], Trainer]:
    """Run ``cfg`` (evaluation only at its end) and return the wall time of each EP step (s), stopping
    after ``steps`` steps when given."""
    train_set, test_set, net = prepare(cfg)
    machine = digital_machine(cfg, net)
    warm = net.init_params(np.random.default_rng(0))  # compile / load the compiled loop outside the timing
    machine.equilibrate(warm, train_set.x[:1], rng=np.random.default_rng(0))
    durations, began = [], []

    def before():
        began.append(time.perf_counter())

    def after(state):
        durations.append(time.perf_counter() - began[-1])
        if steps is not None and len(durations) >= steps:
            raise _Enough

    trainer = Trainer(cfg, machine, train_set, test_set, None, progress=False, before_step=before,
                      on_step=after, init_params=init_params)
    try:
        trainer.run()
    except TrainingFailed as exc:  # the trainer wraps what the hook raises
        if not isinstance(exc.__cause__, _Enough):
            raise
    return durations, trainer


def row(name, path, engine, durations, trainer, stage) -> dict:
    solver, backend, threads = engine
    per_epoch = len(trainer.train_set) // trainer.cfg.batch_size
    return {"network": name, "config": str(path.relative_to(ROOT)), "stage": stage, "solver": solver,
            "backend": backend, "threads": threads, "steps_timed": len(durations),
            "ms_per_step": 1e3 * float(np.mean(durations)), "epoch_s": float(np.mean(durations)) * per_epoch,
            "unconverged_relaxations": int(trainer.state.counters["unconverged_train"])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3, help="epochs trained first (compiled, 2 threads), each timed")
    ap.add_argument("--steps", type=int, help="time only this many steps per row and scale up")
    ap.add_argument("--fire-steps", type=int, default=20, help="steps timed for the (slow) numpy FIRE rows")
    ap.add_argument("--only", nargs="+", choices=list(CONFIGS))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = []
    print(f"{'network':<20} {'stage':<22} {'solver':<6} {'backend':<8} {'thr':>3} {'steps':>5} {'ms/step':>8} "
          f"{'s/epoch':>8} {'speed-up':>8} {'unconv':>6}")

    def show(r, first):
        r["speedup"] = None if first is None else first / r["epoch_s"]
        speedup = "" if first is None else f"{r['speedup']:.2f}"
        rows.append(r)
        print(f"{r['network']:<20} {r['stage']:<22} {r['solver']:<6} {r['backend']:<8} {r['threads']:>3} "
              f"{r['steps_timed']:>5} {r['ms_per_step']:>8.1f} {r['epoch_s']:>8.2f} {speedup:>8} "
              f"{r['unconverged_relaxations']:>6}", flush=True)

    for name, path in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        fast = ENGINES[-1]
        durations, trainer = timed_steps(with_engine(path, *fast, args.epochs), None)
        per_epoch = len(durations) // args.epochs
        for e in range(args.epochs):
            show(row(name, path, fast, durations[e * per_epoch:(e + 1) * per_epoch], trainer, f"epoch {e + 1}"),
                 None)
        trained = trainer.state.params
        first = None
        for engine in ENGINES:
            steps = args.fire_steps if engine[1] == "numpy" else args.steps
            durations, trainer = timed_steps(with_engine(path, *engine, 1), steps, init_params=trained)
            r = row(name, path, engine, durations, trainer, f"after {args.epochs} epochs")
            first = first or r["epoch_s"]
            show(r, first)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
                "date": time.strftime("%Y-%m-%d"), "note": "evaluation excluded; first steps of epoch 1"}
        args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
