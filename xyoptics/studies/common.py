"""What the studies share: config models built on training configs, seeded generators, sweeps of independent
training runs, binomial intervals, tables, figures, the results folder and the command line.

The runs of a study go through ``engine.run_tasks`` on the local process pool (default) or on Ray; each run's
record streams to ``OUT/runs/<key>.json`` as it ends, and a study started again skips the runs recorded ``ok``
(``records``). Summaries use only ``ok`` records. Every task carries its own seeds, so results do not depend on
the engine, the number of workers or the order in which runs finish.
"""

from __future__ import annotations

import argparse
import importlib
import math
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import TrainConfig
from ..core.files import write_json_atomic, write_text_atomic
from ..core.schema import ConfigError, describe, load_yaml_model
from .engine import ENGINES, EngineUnavailable, StudyStopped, ensure_finished, make_engine, run_tasks
from .folderlock import hold_study_folder
from .records import StudyIncomplete, Sweep, clear_records

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
        return TrainConfig.model_validate({**merged(base, **updates), "architecture": arch, "seed": int(seed)})
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


# ---- runs ----------------------------------------------------------------------------------------------
def train_digital(cfg: TrainConfig):
    """Train ``cfg`` on its digital machine (no run folder); a run stopped by a signal raises ``RunInterrupted``.
    Returns (RunResult, machine, train set, test set)."""
    from ..lab.build import digital_machine, prepare
    from ..lab.trainer import Trainer

    train_set, test_set, net = prepare(cfg)
    machine = digital_machine(cfg, net)
    result = Trainer(cfg, machine, train_set, test_set, None, progress=False).run()
    ensure_finished(result.summary)
    return result, machine, train_set, test_set


def train_and_recheck(cfg: TrainConfig, split: str, starts: int, rng: np.random.Generator,
                      lowest_energy: bool = False):
    """Train ``cfg`` (digital machine, no run folder), then classify every sample of the ``split`` ("train" or
    "test") set from ``starts`` fresh random starts each, in one batch. Returns the ``RunResult`` and the
    ``Evaluation``: over all samples x starts, or with ``lowest_energy`` one prediction per sample from its
    lowest-energy start (``lab.evaluation.evaluate``)."""
    from ..core.costs import make_cost
    from ..lab.trainer import evaluate

    result, machine, train_set, test_set = train_digital(cfg)
    data = train_set if split == "train" else test_set
    cost = make_cost(cfg.ep.cost)
    if lowest_energy:
        return result, evaluate(machine, result.params, data, cost, rng, batch_size=len(data), starts=starts)
    repeated = data.subset(np.tile(np.arange(len(data)), starts))
    return result, evaluate(machine, result.params, repeated, cost, rng, batch_size=len(repeated))


def sweep_seeds(cfg: StudyConfig, architectures: Sequence, one_seed: Callable, extra, out_dir: str | Path,
                engine=None, workers: int = 1, progress: bool = True, desc: str = "runs",
                updates: dict | None = None) -> Sweep:
    """``one_seed((train_config, architecture index, extra))`` for every architecture and every seed of
    ``cfg`` (``first_seed`` .. ``first_seed + seeds - 1``), in that order, as runs ``arch<index>_seed<seed>``
    of ``engine.run_tasks`` (records streamed to ``out_dir/runs``, finished runs skipped)."""
    tasks = {f"arch{k}_seed{seed}": (cfg.train_config(a, seed, **(updates or {})), k, extra)
             for k, a in enumerate(architectures) for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds)}
    return run_tasks(one_seed, tasks, cfg.model_dump(mode="json"), out_dir, engine, workers, progress, desc)


def finish(name: str, cfg: StudyConfig, out_dir: Path, text: str, sweep: Sweep, t0: float, **results) -> dict:
    """Print the table, with a line under it for runs left out (failed or stopped), and write results.json /
    table.md with the provenance header, the run counts, the runs left out and the wall time."""
    left_out = sweep.not_ok
    if left_out:
        counts = sweep.counts()
        keys = ", ".join(r["key"] for r in left_out[:6]) + (", ..." if len(left_out) > 6 else "")
        text += (f"\n\n{counts['failed']} failed and {counts['stopped']} stopped of {len(sweep.records)} runs are "
                 f"left out of this table ({keys}); their reasons are in runs/, and running the same command again "
                 f"retries them.")
    print(text)
    results = {**study_header(name, cfg, sweep.engine), **results, "run_counts": sweep.counts(),
               "runs_left_out": [{k: r.get(k) for k in ("key", "status", "reason")} for r in left_out],
               "wall_time_s": round(time.perf_counter() - t0, 1)}
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


BOOTSTRAP_STREAM = 8001  # first key of the bootstrap generators


def bootstrap_interval(values, statistic=np.mean, n_boot: int = 10000, key: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values`` (resampled with replacement ``n_boot``
    times from the seeded stream (BOOTSTRAP_STREAM, ``key``), so the interval is reproducible); (nan, nan) for
    no values, (v, v) for one."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    if v.size == 1:
        return float(v[0]), float(v[0])
    rng = rng_for(BOOTSTRAP_STREAM, key)
    stats = statistic(v[rng.integers(0, v.size, (n_boot, v.size))], axis=1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


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


def study_header(name: str, cfg: StudyConfig, engine: dict) -> dict:
    """Provenance stored with every result (``engine``: the engine's description, workers included; the git
    commit and dirty flag, package versions and machine from ``core.provenance``)."""
    from .. import __version__
    from ..core.provenance import provenance
    return {"study": name, "config": cfg.model_dump(mode="json"), **engine,
            "xyoptics_version": __version__, "numpy_version": np.__version__, "provenance": provenance(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


# ---- command line ---------------------------------------------------------------------------------------
def run_main(name: str, argv: Sequence[str] | None = None) -> int:
    """``CONFIG --out DIR [--engine local|ray] [--address ADDR] [--workers N] [--smoke] [--restart] [--quiet]``
    for the study module ``name``. Exit codes: 0 every run ok; 1 some runs failed (left out of the summary) or
    too few finished to summarise; 2 a bad command line, config or folder; 130 stopped, resumable."""
    module = importlib.import_module(f"{__package__}.{name}")  # by full name, so workers can import it
    parser = argparse.ArgumentParser(prog=f"xyoptics study {name}", description=module.__doc__.split("\n")[0])
    parser.add_argument("config", help="study config (YAML)")
    parser.add_argument("--out", required=True, help="output folder (results.json, table.md, PNG figures, runs/)")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="where the runs train: local (a process pool, the default) or ray (one Ray task per run)")
    parser.add_argument("--address", help="with --engine ray: the Ray cluster to join (default: start one here)")
    parser.add_argument("--workers", type=int, help="runs at a time (default: 1 locally; on Ray, every CPU; "
                                                    "a local Ray instance gets this many CPUs)")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long reduced version of the config")
    parser.add_argument("--restart", action="store_true",
                        help="discard the run records already in --out (runs/, study.json) and start over")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.address is not None and args.engine != "ray":
        parser.error("--address needs --engine ray")
    try:
        cfg = load_yaml_model(args.config, module.Config, what=f"{name} config")
        engine = make_engine(args.engine, args.workers, args.address)
    except (ConfigError, EngineUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.smoke:
        cfg = cfg.smoke()
    again = shlex.join(["xyoptics", "study", name,
                        *(a for a in (sys.argv[1:] if argv is None else argv) if a != "--restart")])
    t0 = time.perf_counter()
    try:
        with hold_study_folder(args.out):  # held from --restart to the summary: no second driver slips in
            if args.restart:
                print(f"{name}: --restart discarded {clear_records(args.out)} run records in {args.out}",
                      file=sys.stderr)
            results = module.run(cfg, args.out, progress=not args.quiet, workers=engine.workers or 1,
                                 engine=engine)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (StudyStopped, KeyboardInterrupt) as exc:
        print(f"{name}: {str(exc) or 'interrupted'}; finished runs are recorded in {args.out}/runs. Resume with "
              f"the same command: {again}", file=sys.stderr)
        return 130
    except StudyIncomplete as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{name}: {time.perf_counter() - t0:.1f} s; results in {args.out}")
    counts = results["run_counts"]
    if counts["ok"] < sum(counts.values()):
        print(f"{name}: {sum(counts.values()) - counts['ok']} runs did not finish ok and are left out; run the "
              f"same command again to retry them: {again}", file=sys.stderr)
        return 1
    return 0
