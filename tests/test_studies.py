"""Smoke versions of the studies in xyoptics.studies (the shipped configs reduced by ``Config.smoke()``):
each writes results.json, table.md and its PNG figures, prints its table, and reports sane numbers;
a typo in a study config is rejected before any work starts."""

import json
from pathlib import Path

import numpy as np
import pytest

from xyoptics.config import ConfigError, load_yaml_model
from xyoptics.studies import (STUDIES, common, iris_size, nudge_costs, regions, replicate, skip_control, xor_size,
                              xor_success)

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "studies"


def smoke(module):
    return load_yaml_model(CONFIGS / f"{module.NAME}.yaml", module.Config).smoke()


def written(out: Path, results: dict) -> dict:
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["study"] == results["study"] and on_disk["table"] == results["table"]
    assert set(on_disk["provenance"]) == {"git", "versions", "machine"}  # commit, dirty flag, versions, host
    assert (out / "table.md").read_text().strip() == results["table"]
    for name in results["figures"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return on_disk


@pytest.mark.slow
def test_xor_success_smoke(tmp_path, capsys):
    cfg = smoke(xor_success)
    res = xor_success.run(cfg, tmp_path, progress=False)
    on_disk = written(tmp_path, res)
    assert "| architecture |" in capsys.readouterr().out
    assert len(res["runs"]) == cfg.seeds * len(cfg.architectures)
    for row in on_disk["summary"]:
        assert 0 <= row["success_rate"] <= 1 and row["n_seeds"] == cfg.seeds
        assert row["ci95"][0] <= row["success_rate"] <= row["ci95"][1]
        assert row["successes"] <= row["reached"]  # the success test is stricter than reaching 100 % once
    skip = [r for r in on_disk["summary"] if r["architecture"].get("skip_length")]
    assert len(skip) >= 3 and len({r["n_couplings"] for r in skip}) == 1  # fixed number of extra bonds


def test_xor_size_smoke(tmp_path, capsys):
    cfg = smoke(xor_size)
    res = xor_size.run(cfg, tmp_path, progress=False)
    on_disk = written(tmp_path, res)
    assert "mean final cost [95 % CI]" in capsys.readouterr().out
    assert len(res["runs"]) == cfg.seeds * len(cfg.sizes)
    for run in res["runs"]:
        assert run["final_cost"] >= 0 and np.isclose(run["final_cost"], run["final_cost_raw"] + np.log(2))
    for row in on_disk["summary"]:
        per_seed = [r["final_cost"] for r in res["runs"] if r["size"] == row["size"]]
        assert np.isclose(row["mean_final_cost"], np.mean(per_seed))
        lo, hi = row["ci95_final_cost"]
        assert min(per_seed) <= lo <= row["mean_final_cost"] <= hi <= max(per_seed)
        assert row["ci95_solved"][0] <= row["solved_rate"] <= row["ci95_solved"][1]


def test_skip_control_smoke(tmp_path, capsys):
    cfg = smoke(skip_control)
    res = skip_control.run(cfg, tmp_path, progress=False)
    on_disk = written(tmp_path, res)
    assert "input-output distance" in capsys.readouterr().out
    rows = on_disk["summary"]
    assert [r["kind"] for r in rows] == ["plain", "skip", "control", "skip", "control"]
    plain = rows[0]
    assert len({r["n_couplings"] for r in rows[1:]}) == 1 and rows[1]["n_couplings"] > plain["n_couplings"]
    for r in rows[1:]:
        shorter = min(r["io_distance"]) < min(plain["io_distance"])
        assert shorter == (r["kind"] == "skip") and (r["kind"] == "skip" or r["io_distance"] == plain["io_distance"])
    for run in res["runs"]:
        assert run["xi_initial"] > 0 and run["xi_trained"] > 0 and run["profile_trained"][0] > 0
        assert run["reached"] >= run["success"]  # success is the stricter test


@pytest.mark.slow
def test_nudge_costs_smoke_trains_digitally_and_through_the_calibrated_rig(tmp_path, capsys):
    cfg = smoke(nudge_costs)
    res = nudge_costs.run(cfg, tmp_path, progress=False)
    on_disk = written(tmp_path, res)
    assert "| task | nudge | machine |" in capsys.readouterr().out
    cells = [(r["nudge"], r["machine"]) for r in on_disk["summary"]]
    assert cells == [("log_cosine", "digital"), ("cosine", "digital"), ("adaptive", "digital"), ("cosine", "rig"),
                     ("adaptive", "rig")]  # no log-cosine nudge on the rig
    assert len(res["runs"]) == 3 * cfg.seeds + 2 * cfg.rig_seeds
    assert (tmp_path / "calibration" / cfg.tasks[0].label / "index.json").exists()
    for key in ("cosine", "adaptive"):
        assert (tmp_path / "rig_runs" / f"{cfg.tasks[0].label}_{key}_rig_seed0" / "summary.json").exists()
    # seed 0 starts from the same couplings in every cell: the digital runs differ only by their nudge
    configs = [cfg.run_config(cfg.tasks[0], n, 0) for n in cfg.nudges]
    assert len({c.model_dump_json(exclude={"ep"}) for c in configs}) == 1


def test_replicate_tunes_on_validation_then_reports_other_seeds(tmp_path, capsys):
    cfg = replicate.Config.model_validate({
        "seeds": 3, "first_seed": 0,
        "train": {"task": "iris", "ep": {"beta": 0.3, "cost": "log_cosine"}, "optimizer": {"kind": "adam", "lr": 0.03},
                  "batch_size": 15, "epochs": 3, "eval_every": 1, "validation_fraction": 0.2, "eval_starts": 2},
        "runs": [{"label": "a2a", "overrides": {"architecture": {"kind": "all_to_all", "hidden": 2}},
                  "tune": {"seeds": [50], "budget": {"epochs": 2}, "grid": {"optimizer.lr": [0.003, 0.1]}}},
                 {"label": "lattice",
                  "overrides": {"architecture": {"kind": "square_lattice", "rows": 3, "cols": 4}}},
                 {"label": "lattice-tuned",
                  "overrides": {"architecture": {"kind": "square_lattice", "rows": 3, "cols": 4}},
                  "tune": {"seeds": [51], "budget": {"epochs": 1}, "grid": {"ep.beta": [0.1, 0.5]}}}]})
    res = replicate.run(cfg, tmp_path, progress=False)
    on_disk = written(tmp_path, res)
    assert "Tuning of a2a (validation only)" in capsys.readouterr().out
    tuned, tuned_lattice = on_disk["tuning"]
    best = max(tuned["rows"], key=lambda r: r["mean_validation_accuracy"])
    assert tuned["chosen"] == best["updates"] == on_disk["summary"][0]["chosen"]
    assert on_disk["summary"][1]["chosen"] == {}
    # the second grid (tuned in the same pool) is judged on its own runs only
    lattice_runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").glob("lattice-tuned_tune*.json"))]
    assert [r["seed"] for r in lattice_runs] == [51, 51]
    assert [row["mean_validation_accuracy"] for row in tuned_lattice["rows"]] == [
        r["validation_accuracy"] for r in lattice_runs]
    assert on_disk["summary"][2]["chosen"] == tuned_lattice["chosen"] == max(
        tuned_lattice["rows"], key=lambda r: (r["mean_validation_accuracy"], -r["combo"]))["updates"]
    assert sorted({r["seed"] for r in res["runs"]}) == [0, 1, 2] and len(res["runs"]) == 9
    lr = best["updates"]["optimizer"]["lr"]
    assert all(json.loads((tmp_path / "runs" / f"a2a_seed{s}.json").read_text())["status"] == "ok" for s in range(3))
    assert cfg.entry_config(0, 0, best["updates"]).optimizer.lr == lr
    tune_records = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("a2a_tune*.json")]
    assert len(tune_records) == 2 and all(r["selected_epoch"] <= 2 for r in tune_records)  # the budget's epochs
    for row in on_disk["summary"]:
        sel = row["selected_test_accuracy"]
        assert 0 <= sel["ci95"][0] <= sel["mean"] <= sel["ci95"][1] <= 1
    with pytest.raises(ValueError, match="validation_fraction"):
        replicate.Config.model_validate({**cfg.model_dump(), "train": {**cfg.train, "validation_fraction": 0.0}})


def test_decay_length_of_known_profiles():
    d = np.arange(12)
    assert np.isclose(skip_control.decay_length(3.0 * np.exp(-d / 2.0)), 2.0)
    noisy = np.exp(-d / 4.0) * (1 + 0.01 * np.cos(d))
    assert abs(skip_control.decay_length(noisy) - 4.0) < 0.1
    assert skip_control.decay_length(np.ones(6)) == np.inf  # flat: no decay
    assert np.isnan(skip_control.decay_length([1.0, 0.5]))  # one usable distance


def test_bootstrap_interval_covers_the_mean_and_is_reproducible():
    rng = np.random.default_rng(0)
    v = rng.normal(3.0, 1.0, 400)
    lo, hi = common.bootstrap_interval(v, key=1)
    assert lo < v.mean() < hi and 0.15 < hi - lo < 0.25  # about 2 x 1.96 / sqrt(400) wide
    assert common.bootstrap_interval(v, key=1) == (lo, hi)
    assert common.bootstrap_interval([2.0]) == (2.0, 2.0)
    assert all(np.isnan(common.bootstrap_interval([])))


def test_regions_smoke(tmp_path, capsys):
    cfg = smoke(regions)
    res = regions.run(cfg, tmp_path, progress=False)
    written(tmp_path, res)
    assert "affected % by nudge response" in capsys.readouterr().out
    assert [s["step"] for s in res["runs"][0]["snapshots"]] == cfg.snapshots
    frac = res["fractions"]
    assert frac["all"]["n_seeds"] == cfg.seeds == frac["trained"]["n_seeds"] + frac["not_trained"]["n_seeds"]
    for key in ("affected_nudge_response", "affected_input_sensitivity", "accuracy"):
        vals = np.asarray(frac["all"][key]["per_seed"])
        assert vals.shape == (cfg.seeds, len(cfg.snapshots)) and np.all((vals >= 0) & (vals <= 1))
        ci = np.asarray(frac["all"][key]["ci95"])  # a bootstrap interval of the mean over seeds, per snapshot
        assert np.all((ci[:, 0] <= vals.mean(0) + 1e-12) & (vals.mean(0) <= ci[:, 1] + 1e-12))
        assert np.all((ci[:, 0] >= vals.min(0)) & (ci[:, 1] <= vals.max(0)))
    first = res["runs"][0]["snapshots"]
    assert np.all(np.asarray(first[0]["abs_dw_since_start"]) == 0)  # step 0 is the initial parameters
    assert np.any(np.asarray(first[-1]["abs_dw_since_start"]) > 0)
    assert all(s["nudge_response"][i] == 0 for s in first for i in res["input_sites"])


@pytest.fixture(scope="session")
def iris_smoke(tmp_path_factory):
    """One in-process smoke run of iris_size, shared by the two tests that read it."""
    out = tmp_path_factory.mktemp("iris_smoke")
    return out, iris_size.run(smoke(iris_size), out, progress=False)


@pytest.mark.slow
@pytest.mark.xdist_group("iris_smoke")
def test_iris_size_smoke(iris_smoke):
    out, res = iris_smoke
    cfg = smoke(iris_size)
    written(out, res)
    assert "| lattice |" in (out / "table.md").read_text()
    assert [r["n_sites"] for r in res["summary"]] == [a.rows * a.cols for a in cfg.lattices]
    for row in res["summary"]:
        acc = row["final_test_accuracy"]
        assert 0 <= acc["min"] <= acc["mean"] <= acc["max"] <= 1 and acc["std"] >= 0
        assert acc["min"] <= acc["ci95"][0] <= acc["mean"] <= acc["ci95"][1] <= acc["max"]
    # hyperparameters: the grid on the tuning seeds, the choice the best mean validation accuracy
    assert len(res["tuning"]) == len(cfg.tune.combos())
    best = max(res["tuning"], key=lambda r: r["mean_validation_accuracy"])
    assert res["chosen"] == best["updates"]
    assert not {r["seed"] for r in res["runs"]} & set(cfg.tune.seeds)


def test_tuning_grid_and_its_guards():
    from xyoptics.studies.tuning import Tuning, describe

    t = Tuning(seeds=[0], grid={"ep.beta": [0.1, 0.3], "optimizer.lr": [0.01], "epochs": [5]})
    assert t.combos() == [{"ep": {"beta": 0.1}, "optimizer": {"lr": 0.01}, "epochs": 5},
                          {"ep": {"beta": 0.3}, "optimizer": {"lr": 0.01}, "epochs": 5}]
    assert describe(t.combos()[1]) == "ep.beta=0.3, optimizer.lr=0.01, epochs=5"
    study = smoke(iris_size)
    with pytest.raises(ValueError, match="also reported seeds"):
        Tuning(seeds=[study.first_seed], grid={"ep.beta": [0.1]}).check(study.tuned_config,
                                                                        range(study.first_seed, 99))
    no_split = study.model_copy(update={"train": {**study.train, "validation_fraction": 0.0}})
    with pytest.raises(ValueError, match="validation_fraction"):
        Tuning(seeds=[0], grid={"ep.beta": [0.1]}).check(no_split.tuned_config, range(5, 7))


@pytest.mark.parametrize("name", [s for s in STUDIES if s != "mnist_local"])
def test_shipped_configs_validate(name):
    module = {"xor_success": xor_success, "xor_size": xor_size, "skip_control": skip_control, "regions": regions,
              "iris_size": iris_size, "nudge_costs": nudge_costs, "replicate": replicate}[name]
    cfg = load_yaml_model(CONFIGS / {"replicate": "mnist.yaml"}.get(name, f"{name}.yaml"), module.Config)
    assert cfg.seeds >= {"xor_success": 50, "xor_size": 100, "skip_control": 20, "regions": 20, "iris_size": 5,
                         "nudge_costs": 20, "replicate": 5}[name]
    if name == "replicate":
        assert load_yaml_model(CONFIGS / "digits.yaml", module.Config).seeds >= 20
        assert load_yaml_model(CONFIGS / "mnist_cnn.yaml", module.Config).seeds >= 5
    variants = {"xor_success": ("cosine", "adaptive"), "iris_size": ("adaptive",)}.get(name, ())
    for variant in variants:  # the same study under the optical nudges: only ep differs
        other = load_yaml_model(CONFIGS / f"{name}_{variant}.yaml", module.Config)
        assert other.model_dump(exclude={"train"}) == cfg.model_dump(exclude={"train"})
        assert {k: v for k, v in other.train.items() if k != "ep"} == {k: v for k, v in cfg.train.items() if k != "ep"}
        assert other.train["ep"]["cost"] == "cosine"


def test_typos_are_rejected(tmp_path):
    good = (CONFIGS / "xor_success.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    for wrong in [good.replace("strict_starts:", "strict_start:"),            # study field
                  good.replace("stop_at_accuracy:", "stop_at_acuracy:"),      # training field
                  good.replace("task: xor", "task: iris"),                    # wrong task for the study
                  good.replace("skip_length: 4, n_skip: 10", "skip_length: 4, n_skip: 8")]:  # bond count varies
        bad.write_text(wrong)
        with pytest.raises(ConfigError):
            load_yaml_model(bad, xor_success.Config)
    bad.write_text((CONFIGS / "regions.yaml").read_text().replace("epochs: 1000", "epochs: 500"))
    with pytest.raises(ConfigError, match="beyond"):
        load_yaml_model(bad, regions.Config)


@pytest.mark.slow
@pytest.mark.xdist_group("iris_smoke")
def test_cli_and_parallel_runs_match(iris_smoke, tmp_path):
    """--workers 2 (a spawn pool) gives the same per-seed results as one process."""
    one = iris_smoke[1]
    assert xor_success.main([str(CONFIGS / "iris_size.yaml"), "--out", str(tmp_path / "x")]) == 2  # wrong study
    assert iris_size.main([str(CONFIGS / "iris_size.yaml"), "--out", str(tmp_path / "two"), "--smoke",
                           "--workers", "2", "--quiet"]) == 0
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    strip = [{k: v for k, v in r.items() if k != "wall_s"} for r in one["runs"]]
    assert strip == [{k: v for k, v in r.items() if k != "wall_s"} for r in two["runs"]]


def test_wilson_interval():
    assert common.wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = common.wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = common.wilson_interval(50, 50)
    assert hi == 1.0 and lo == pytest.approx(0.9287, abs=1e-4)
