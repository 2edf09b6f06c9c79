"""MNIST with local hidden layers against a dense layered baseline: accuracy, couplings and time per epoch.

Measured: each network in ``networks`` is trained by one resumable training session (``xyoptics.lab.session``) in
``OUT/<name>/`` on the MNIST training subset the ``train`` settings name (offline: train5k, 500 images per
digit) and evaluated on the official 10k test set, every sample relaxed from one fresh random start (as in
training). A finished run folder is reused and a stopped one resumed, so the study can be interrupted at any
point and run again to continue.

Reported per network: couplings (bonds) and trainable parameters; best and final test accuracy (the best
selects on the test set, as the papers report it, and is therefore optimistic); epochs; wall time per epoch of
training (EP steps only) and per evaluation of train + test sets, from the run's ``metrics.jsonl`` (seconds on
this machine, one BLAS thread per run).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import ConfigError
from ..core.files import read_json
from ..lab.checkpoint import has_checkpoint
from ..lab.session import run_session
from . import common

NAME = "mnist_local"


class Network(BaseModel):
    """One network of the comparison; ``overrides`` are TrainConfig fields for this network only (merged one
    level deep into ``train``, e.g. ``{optimizer: {lr: 0.001}}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    architecture: dict
    overrides: dict = Field(default_factory=dict)


class Config(common.StudyConfig):
    seed: int = Field(default=0, ge=0)
    networks: list[Network] = Field(min_length=1)

    def network_config(self, net: Network):
        return common.train_config(common.merged(self.train, **net.overrides), net.architecture, self.seed)

    @model_validator(mode="after")
    def _check(self):
        names = [n.name for n in self.networks]
        if len(set(names)) != len(names):
            raise ValueError(f"network names must be unique, got {names}")
        self.check_train("mnist", [])
        for net in self.networks:
            cfg = self.network_config(net)
            if cfg.task.name != "mnist":
                raise ValueError(f"{net.name}: train.task must be mnist")
        return self

    def smoke(self) -> Config:
        """200 training and 100 test images, one epoch."""
        task = dict(self.train["task"])
        task["options"] = {**task.get("options", {}), "n_train": 200, "n_test": 100}
        d = self.model_dump()
        d["train"] = common.merged(self.train, task=task, epochs=1, eval_every=1, batch_size=50)
        return Config.model_validate(d)


def epoch_times(metrics: list[dict]) -> tuple[float, float]:
    """Mean wall time (s) per epoch of EP steps and per evaluation, from one run's metrics records (wall_s is
    cumulative over the run's sessions)."""
    train_s, eval_s, n_epochs, n_evals, previous = 0.0, 0.0, 0, 0, 0.0
    for r in metrics:
        if r["kind"] == "step":
            train_s += r["wall_s"] - previous
            previous = r["wall_s"]
            if r["batch"] == 1:
                n_epochs += 1
        else:
            eval_s += r["wall_s"] - previous
            previous = r["wall_s"]
            n_evals += 1
    return train_s / max(n_epochs, 1), eval_s / max(n_evals, 1)


def _train_one(task) -> dict:
    """Train (or resume, or reuse) one network's run folder and summarise it; runs in a worker process."""
    cfg, folder, progress = task
    folder = Path(folder)
    saved = folder / "config.yaml"
    if saved.exists() and yaml.safe_load(saved.read_text()) != cfg.model_dump(mode="json"):
        raise ConfigError(f"{folder} holds a run of a different config; remove it or choose another --out")
    summary_path = folder / "summary.json"
    summary = read_json(summary_path) if summary_path.exists() else None
    if summary is None or summary.get("resume"):  # not started, or stopped before the end
        resume = has_checkpoint(folder)
        run_session(None if resume else cfg, folder, progress=progress, resume=resume)
        summary = read_json(summary_path)
    common.ensure_finished(summary)  # a training stopped by a signal is resumed on the next start
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in metrics if m["kind"] == "eval"]
    per_epoch, per_eval = epoch_times(metrics)
    return {"training_status": summary["status"], "network": summary["network"], "n_couplings": summary["n_couplings"],
            "n_parameters": summary["n_parameters"], "epochs": summary["epochs_completed"],
            "selected_test_accuracy": summary["selected_test_accuracy"], "selected_epoch": summary["selected_epoch"],
            "final_test_accuracy": summary["final_test_accuracy"],
            "final_train_accuracy": summary["final_train_accuracy"],
            "train_s_per_epoch": round(per_epoch, 3), "eval_s": round(per_eval, 3),
            "curve": [[m["epoch"], m["test_accuracy"]] for m in evals]}


def plot(rows: dict[str, dict], out_dir: Path) -> list[Path]:
    fig = common.figure(11, 4.2)
    ax_size, ax_curve = fig.subplots(1, 2)
    for name, r in rows.items():
        ax_size.scatter(r["n_couplings"], 100 * r["final_test_accuracy"], s=40)
        ax_size.annotate(name, (r["n_couplings"], 100 * r["final_test_accuracy"]), textcoords="offset points",
                         xytext=(6, 4), fontsize=9)
        epochs, acc = zip(*r["curve"]) if r["curve"] else ((), ())
        ax_curve.plot(epochs, [100 * a for a in acc], marker="o", label=name)
    ax_size.set(xscale="log", xlabel="couplings (bonds)", ylabel="final test accuracy (%)",
                title="MNIST: accuracy against couplings")
    ax_curve.set(xlabel="epoch", ylabel="test accuracy (%)", title="MNIST: learning curves (10k test set)")
    ax_curve.legend()
    for ax in (ax_size, ax_curve):
        ax.grid(alpha=0.3)
    return [common.save_figure(fig, out_dir / "mnist_local.png")]


def run(cfg: Config, out_dir: str | Path, progress: bool = True, workers: int = 1, engine=None) -> dict:
    """Train every network (on ``engine``, default the local pool of ``workers``; one run ``<name>`` each,
    recorded in ``out_dir/runs``) and write results.json, table.md and mnist_local.png from the ``ok`` runs."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    engine = engine or common.make_engine("local", workers)
    in_process = engine.in_process  # show each training's own progress bar rather than one over the runs
    tasks = {n.name: (cfg.network_config(n), str(out_dir.resolve() / n.name), progress and in_process)
             for n in cfg.networks}
    sweep = common.run_tasks(_train_one, tasks, cfg.model_dump(mode="json"), out_dir, engine,
                             progress=progress and not in_process, desc="networks")
    rows = {r["key"]: {k: v for k, v in r.items() if k not in ("key", "status")} for r in sweep.ok}
    table = common.format_table(
        ["network", "couplings", "parameters", "epochs", "test at selected epoch", "final test", "train s/epoch",
         "eval s"],
        [[name, f"{r['n_couplings']:,}", f"{r['n_parameters']:,}", r["epochs"],
          common.pct(r["selected_test_accuracy"]), common.pct(r["final_test_accuracy"]), r["train_s_per_epoch"],
          r["eval_s"]] for name, r in rows.items()])
    plot(rows, out_dir)
    return common.finish(NAME, cfg, out_dir, table, sweep, t0, networks=rows, figures=["mnist_local.png"])


def main(argv=None) -> int:
    return common.run_main(NAME, argv)


if __name__ == "__main__":
    raise SystemExit(main())
