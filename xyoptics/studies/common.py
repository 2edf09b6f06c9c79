"""What the studies share: config models built on training configs, seeded generators, a process pool for
independent training runs, binomial intervals, tables, figures and the results folder.

Parallel runs use a ``spawn`` process pool whose workers each get one BLAS / OpenMP thread
(``OPENBLAS_NUM_THREADS=1`` and friends are set before the workers import numpy). Every task carries its own
seeds, so results do not depend on the number of workers or on the order in which tasks finish.
"""

from __future__ import annotations

import argparse
import importlib
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..core.files import write_json_atomic, write_text_atomic
from ..core.schema import ConfigError, describe, load_yaml_model

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
STUDY_SET = ("architecture", "seed")  # training fields a study sets itself


class StudyConfig(BaseModel):
    """Base of every study config: unknown keys are errors. ``train`` is a partial ``TrainConfig`` (everything
    but the fields in ``STUDY_SET``), completed per run by ``train_config``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: dict[str, Any] = Field(description="TrainConfig fields shared by every run (not architecture/seed)")

    def train_config(self, architecture: dict | BaseModel, seed: int, **updates) -> TrainConfig:
        """The full training config of one run; raises ConfigError naming the bad fields."""
        return train_config(self.train, architecture, seed, **updates)

    def check_train(self, task: str | None, architectures: Sequence[dict | BaseModel], **updates) -> None:
        """Validate ``train`` against every architecture now, so a bad study config fails before any work."""
        clash = sorted(set(self.train) & set(STUDY_SET))
        if clash:
            raise ValueError(f"train: {', '.join(clash)} are set by the study, remove them")
        for arch in architectures:
            cfg = self.train_config(arch, 0, **updates)
            if task is not None and cfg.task.name != task:
                raise ValueError(f"train.task must be {task!r}, got {cfg.task.name!r}")


def train_config(base: dict, architecture: dict | BaseModel, seed: int, **updates) -> TrainConfig:
    arch = architecture.model_dump() if isinstance(architecture, BaseModel) else dict(architecture)
    try:
        return TrainConfig.model_validate({**base, **updates, "architecture": arch, "seed": int(seed)})
    except ValidationError as exc:
        raise ConfigError(f"training config:\n{describe(exc)}") from None


def merged(base: dict, **updates) -> dict:
    """``base`` with nested dict updates merged one level deep (e.g. ``optimizer={"lr": 0.1}``)."""
    out = dict(base)
    for key, value in updates.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def rng_for(*keys: int) -> np.random.Generator:
    """An independent generator for a tuple of non-negative integers (e.g. (study seed, arch, seed))."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


# ---- parallel runs ---------------------------------------------------------------------------------------
def _init_worker() -> None:
    for var in THREAD_VARS:
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:  # the variables above already limit a freshly imported numpy
        pass


def parallel_map(fn: Callable, tasks: Sequence, workers: int = 1, progress: bool = True,
                 desc: str = "runs") -> list:
    """``[fn(t) for t in tasks]`` in order; ``workers`` > 1 runs them in a spawn process pool with one thread
    per worker. ``fn`` must be a module-level function and tasks picklable."""
    tasks = list(tasks)
    bar = tqdm(total=len(tasks), desc=desc, unit="run", disable=not progress)
    try:
        if workers <= 1 or len(tasks) <= 1:
            out = []
            for t in tasks:
                out.append(fn(t))
                bar.update()
            return out
        saved = {v: os.environ.get(v) for v in THREAD_VARS}
        os.environ.update({v: "1" for v in THREAD_VARS})  # inherited by the spawned workers
        try:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
                futures = {pool.submit(fn, t): k for k, t in enumerate(tasks)}
                out = [None] * len(tasks)
                for fut in as_completed(futures):
                    out[futures[fut]] = fut.result()
                    bar.update()
            return out
        finally:
            for v, old in saved.items():
                if old is None:
                    os.environ.pop(v, None)
                else:
                    os.environ[v] = old
    finally:
        bar.close()


def train_and_recheck(cfg: TrainConfig, split: str, starts: int, rng: np.random.Generator):
    """Train ``cfg`` (digital machine, no run folder), then classify every sample of the ``split`` ("train" or
    "test") set from ``starts`` fresh random starts each, in one batch. Returns the ``RunResult`` and the
    ``Evaluation`` over all samples x starts."""
    from ..core.costs import make_cost
    from ..lab.build import digital_machine, prepare
    from ..lab.trainer import Trainer, evaluate

    train_set, test_set, net = prepare(cfg)
    machine = digital_machine(cfg, net)
    result = Trainer(cfg, machine, train_set, test_set, None, progress=False).run()
    data = train_set if split == "train" else test_set
    repeated = data.subset(np.tile(np.arange(len(data)), starts))
    return result, evaluate(machine, result.params, repeated, make_cost(cfg.ep.cost), rng,
                            batch_size=len(repeated))


def sweep_seeds(cfg, architectures: Sequence, one_seed: Callable, extra, workers: int, progress: bool,
                desc: str) -> list:
    """``one_seed((train_config, architecture index, extra))`` for every architecture and every seed of
    ``cfg`` (``first_seed`` .. ``first_seed + seeds - 1``), in that order."""
    tasks = [(cfg.train_config(a, seed), k, extra)
             for k, a in enumerate(architectures) for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds)]
    return parallel_map(one_seed, tasks, workers, progress, desc=desc)


def finish(name: str, cfg: StudyConfig, out_dir: Path, text: str, workers: int, t0: float, **results) -> dict:
    """Print the table and write results.json / table.md with the provenance header and the wall time."""
    print(text)
    results = {**study_header(name, cfg, workers), **results, "wall_time_s": round(time.perf_counter() - t0, 1)}
    return write_results(out_dir, results, text)


# ---- statistics and tables -------------------------------------------------------------------------------
def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % for the default z); (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    return lo, 1.0 if successes == n else min(1.0, centre + half)


def format_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub-markdown table; floats are expected to be formatted by the caller."""
    rows = [[str(c) for c in r] for r in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f} %"


# ---- output ---------------------------------------------------------------------------------------------
def figure(width: float = 6.4, height: float = 4.2, **kw) -> Figure:
    """A figure drawn by the Agg canvas directly (no pyplot, no global backend state)."""
    return Figure(figsize=(width, height), layout="constrained", **kw)


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)
    return path


def write_results(out_dir: str | Path, results: dict, table: str) -> dict:
    """Write ``results.json`` (``results`` plus the table) and ``table.md`` in ``out_dir``; returns what was
    written to results.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {**results, "table": table}
    write_json_atomic(out_dir / "results.json", results)
    write_text_atomic(out_dir / "table.md", table + "\n")
    return results


def study_header(name: str, cfg: StudyConfig, workers: int) -> dict:
    """Provenance stored with every result."""
    from .. import __version__
    return {"study": name, "config": cfg.model_dump(mode="json"), "workers": workers,
            "xyoptics_version": __version__, "numpy_version": np.__version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


# ---- command line ---------------------------------------------------------------------------------------
def run_main(name: str, argv: Sequence[str] | None = None) -> int:
    """``CONFIG --out DIR [--smoke] [--workers N] [--quiet]`` for the study module ``name``."""
    module = importlib.import_module(f"{__package__}.{name}")  # by full name, so pool workers can import it
    parser = argparse.ArgumentParser(prog=f"xyoptics study {name}", description=module.__doc__.split("\n")[0])
    parser.add_argument("config", help="study config (YAML)")
    parser.add_argument("--out", required=True, help="output folder (results.json, table.md, PNG figures)")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long reduced version of the config")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        cfg = load_yaml_model(args.config, module.Config, what=f"{name} config")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.smoke:
        cfg = cfg.smoke()
    t0 = time.perf_counter()
    module.run(cfg, args.out, progress=not args.quiet, workers=args.workers)
    print(f"{name}: {time.perf_counter() - t0:.1f} s; results in {args.out}")
    return 0
