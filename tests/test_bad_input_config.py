"""Bad input, as a new user types it: each case is refused with one `twins: error` line naming the field, the
value and what is valid (no traceback, exit code 2), and nothing already on disk is lost or changed.

Config values are checked on the pre-check path (the same code `python -m twins` runs before Hydra starts a
job; a few cases also go through the real command line); the run-folder checks (export, review verify,
results) use a tiny real run folder. Keep this module fast (< ~60 s on 2 cores): tiny horizons only.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
TINY_NET = ROOT / "tests" / "data" / "sumo" / "tiny.net.xml"


def twins(*args, timeout=240):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "twins", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def snapshot(folder: Path, skip=(".hydra", "twins.log")) -> dict:
    """Every file's bytes under ``folder`` (Hydra's own .hydra/ and log excluded: Hydra writes those per job)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not any(s in p.parts for s in skip)}


@pytest.fixture
def existing(tmp_path):
    """A folder holding a user's earlier work, which a refused command must leave as it was."""
    d = tmp_path / "earlier"
    d.mkdir()
    (d / "notes.txt").write_text("my notes\n")
    (d / "metrics.json").write_text('{"mean_delay_s": {"mean": 1.0}}\n')
    return d


def one_error_line(text: str, prefix: str = "twins: error: ") -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert "Traceback" not in text, text
    errs = [ln for ln in lines if ln.startswith(prefix)]
    assert len(errs) == 1, text
    return errs[0]


def precheck_error(capsys, *overrides: str) -> str:
    """``python -m twins run OVERRIDES``'s pre-check, in process: its exit code and its one error line."""
    from twins import cli

    with pytest.raises(SystemExit) as ex:
        cli.precheck(list(overrides))
    assert ex.value.code == 2
    return one_error_line(capsys.readouterr().err)


# --- 1. every config value validated where it is declared ------------------------------------------------
@pytest.fixture(scope="module")
def empty_routes(tmp_path_factory):
    p = tmp_path_factory.mktemp("sumo") / "empty.rou.xml"
    p.write_text("<routes>\n    <vType id='car'/>\n</routes>\n")  # a vType, but no vehicle, trip or flow
    return p


VALUE_CASES = {
    # id: (overrides, what the line must name: field=value, and what is valid / what to do)
    "horizon_inf": (["horizon_s=inf"], ["horizon_s=inf", "a finite number"]),
    "horizon_nan": (["horizon_s=nan"], ["horizon_s=nan", "a finite number"]),
    "flow_inf": (["scenario=junction", "scenario.flows_veh_h.N=inf"], ["scenario.flows_veh_h.N=inf", "finite"]),
    "seed_negative": (["seed=-1"], ["seed=-1", "[0, 2^63)"]),
    "seed_too_big": ([f"seed={2**63}"], [f"seed={2**63}", "[0, 2^63)"]),
    "search_seed": (["search.seed=-5"], ["search.seed=-5", "[0, 2^63)"]),
    "trajectory_every": (["scenario=ring", "output.trajectory_every=-1"],
                         ["output.trajectory_every=-1", "0 (off) or N >= 1", "output.trajectory_every=1"]),
    "timeseries_interval": (["scenario=ring", "output.timeseries_interval_s=0"],
                            ["output.timeseries_interval_s=0", "a positive number of seconds"]),
    "grid_points": (["search.grid_points=0"], ["search.grid_points=0", "an integer >= 1"]),
    "confirm_replications": (["search.confirm.replications=1"], ["search.confirm.replications=1", ">= 2"]),
    "intervention_misfit": (["intervention=signal_timing", "scenario=molecular"],
                            ["intervention='signal_timing'", "scenario=molecular", "drug_design", "traffic"]),
    "drug_on_traffic": (["intervention=drug_design", "scenario=junction"],
                        ["intervention='drug_design'", "scenario=junction", "signal_timing", "molecular"]),
}


@pytest.mark.parametrize("case", list(VALUE_CASES), ids=list(VALUE_CASES))
def test_config_value_refused_before_compute(case, capsys):
    overrides, want = VALUE_CASES[case]
    line = precheck_error(capsys, *overrides)
    for w in want:
        assert w in line, (w, line)


def test_empty_route_file_is_refused_naming_it(capsys, empty_routes):
    line = precheck_error(capsys, "scenario=sumo", f"scenario.net={TINY_NET}", f"scenario.routes={empty_routes}")
    assert "scenario.routes" in line and str(empty_routes) in line and "<vehicle>, <trip> or <flow>" in line
    # a net without any route file: no demand either, said before the twin is built
    line = precheck_error(capsys, "scenario=sumo", f"scenario.net={TINY_NET}")
    assert "scenario.routes" in line and "scenario.routes=ROUTES.rou.xml" in line


def test_valid_values_still_pass(capsys):
    from twins import cli

    cli.precheck(["scenario=ring", "output.trajectory_every=1", "output.timeseries_interval_s=1", f"seed={2**63 - 1}",
                  "intervention=drug_design", "scenario=molecular"])
    cli.precheck(["scenario=sumo", f"scenario.net={TINY_NET}", f"scenario.routes={TINY_NET.with_name('tiny.rou.xml')}"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("args,want", [
    (["seed=-1"], "seed=-1"),
    (["intervention=signal_timing", "scenario=molecular"], "scenario=molecular"),
], ids=["seed", "misfit"])
def test_cli_refuses_with_one_line_and_keeps_the_folder(args, want, existing):
    before = snapshot(existing)
    r = twins("run", *args, f"hydra.run.dir={existing / 'run'}")
    assert r.returncode == 2, r.stderr[-2000:]
    assert want in one_error_line(r.stderr)
    # refused before Hydra starts the job: not even an empty run folder
    assert snapshot(existing) == before and not (existing / "run").exists()


# --- 2. search settings: refused before the search starts --------------------------------------------------
SEARCH = ["scenario=junction", "intervention=signal_timing", "horizon_s=30", "replications=2", "search.budget=2",
          "search.batch=2", "progress=false", "output.figures=false"]


def _search_error(tmp_path, *overrides) -> tuple[str, Path]:
    from hydra import compose, initialize_config_dir

    from interventions.search_config import search_from_config
    from twins.cli import CONF_DIR
    from twins.core.errors import ConfigError

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=SEARCH + list(overrides))
    out = tmp_path / "search"
    with pytest.raises(ConfigError) as ex:
        search_from_config(cfg, out)
    return str(ex.value), out


@pytest.mark.parametrize("constraint,want", [
    ("{metric: delay_veh_hh, group_kind: approach, max: 0.1}",
     ["search.constraints[0].metric='delay_veh_hh'", "'approach' groups: delay_veh_h"]),
    ("{metric: delay_veh_h, group_kind: approachh, max: 0.1}",
     ["search.constraints[0].group_kind='approachh'", "origin", "approach"]),
    ("{metric: mean_delay, max: 1}", ["search.constraints[0].metric='mean_delay'", "mean_delay_s"]),
    ("{metric: delay_veh_h, max: 1}", ["search.constraints[0].metric='delay_veh_h'", "add group_kind (approach)"]),
], ids=["group_metric", "group_kind", "metric", "group_metric_without_kind"])
def test_search_constraint_on_unknown_target_refused(tmp_path, constraint, want):
    msg, out = _search_error(tmp_path, f"search.constraints=[{constraint}]")
    for w in want:
        assert w in msg, (w, msg)
    assert not out.exists()  # refused before anything was written


def test_search_objective_on_unknown_metric_refused(tmp_path):
    msg, _ = _search_error(tmp_path, "search.objectives=[{metric: delay, direction: minimize}]")
    assert "search.objectives[0].metric='delay'" in msg and "mean_delay_s" in msg


def test_search_resume_without_a_study_refused(tmp_path, existing):
    from twins.core.errors import ConfigError

    from interventions.search_config import check_resume

    before = snapshot(existing)
    s = OmegaConf.create({"resume": True, "study_name": "twins-search", "storage": None})
    with pytest.raises(ConfigError) as ex:
        check_resume(s, existing)
    msg = str(ex.value)
    assert msg.startswith("search.resume=True") and "study.db does not exist" in msg
    assert "without search.resume" in msg  # how to start a new one
    assert snapshot(existing) == before and not (existing / "study.db").exists()
    with pytest.raises(ConfigError, match="sqlite:///.*nowhere.db does not exist"):
        check_resume(OmegaConf.create({"resume": True, "storage": f"sqlite:///{tmp_path}/nowhere.db"}), existing)


def test_search_cli_unknown_group_kind(existing):
    before = snapshot(existing)
    r = twins("search", *SEARCH, "search.constraints=[{metric: delay_veh_h, group_kind: lane, max: 0.1}]",
              f"hydra.run.dir={existing / 'search'}")
    assert r.returncode == 2, r.stderr[-2000:]
    line = one_error_line(r.stderr)
    assert "search.constraints[0].group_kind='lane'" in line and "origin, approach" in line
    assert snapshot(existing) == before  # checked inside the Hydra job: only Hydra's .hydra/ and log are new
    assert not [p for p in (existing / "search").glob("*") if p.name not in (".hydra", "twins.log")]


@pytest.mark.parametrize("overrides", [
    ["scenario=junction", "horizon_s=120"],
    ["scenario=bus_corridor", "horizon_s=60"],
    ["scenario=molecular", "scenario.horizon=0.5", "scenario.box=30.0"],
], ids=["junction", "bus_corridor", "molecular"])
def test_declared_group_kinds_are_the_ones_a_run_reports(overrides):
    """The search's list of valid group kinds/metrics (outcome_targets) matches what a run reports."""
    from hydra import compose, initialize_config_dir

    from interventions.search_objectives import outcome_targets
    from twins.cli import CONF_DIR
    from twins.core import runner

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=[*overrides, "replications=1", "output.figures=false"])
    twin = runner.make_twin(cfg)
    res = twin.run(progress=False)
    metrics, groups = outcome_targets(twin)
    assert set(res.metrics) <= set(metrics)
    g = res.groups
    extra = twin.counterfactual_groups(res)
    reported = {}
    for frame in (g, extra):
        if frame is not None and len(frame):
            for kind, sub in frame.groupby("group_kind"):
                cols = [c for c in sub.columns if c not in ("world", "group_kind", "group") and sub[c].notna().any()]
                reported.setdefault(kind, set()).update(cols)
    assert set(reported) == set(groups)
    for kind, cols in reported.items():  # a metric with no data yet (no bus trip finished in 60 s) is all NaN
        assert cols <= set(groups[kind]) and cols, kind


# --- 3./4. the review: digest over every file a reader uses; verify; placeholder owner ----------------------
def _good_evidence() -> dict:
    spec = importlib.util.spec_from_file_location("_ethics_conftest", ROOT / "tests" / "ethics" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ev = mod.traffic_evidence()
    ev["provenance"]["owner"] = {"name": "Testville transport department", "role": "signal authority",
                                 "organisation": "Testville"}
    return ev


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real (tiny) counterfactual run folder: every file a reader uses, as the run writes them."""
    run = tmp_path_factory.mktemp("runs") / "junction"
    r = twins("run", "scenario=junction", "intervention=signal_timing", "intervention.cycle_s=60", "horizon_s=60",
              "replications=2", "progress=false", f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr[-3000:]
    return run


@pytest.fixture
def approved(tiny_run, tmp_path):
    """A copy of the tiny run whose gates ran on passing evidence, approved by another person."""
    import shutil

    from twins.ethics import review
    from twins.cli import CONF_DIR
    from hydra import compose, initialize_config_dir

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("review.*", "gates.json", "evidence"))
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=[
            "scenario=junction", "intervention=signal_timing", "intervention.cycle_s=60", "ethics=traffic",
            "ethics.author=alice", f"ethics.audit.log={tmp_path / 'audit.jsonl'}"])
    review.create(cfg, run, _good_evidence(), "run")
    review.approve(run, "Bob", "traffic safety officer")
    return run


def test_digest_covers_every_file_a_reader_uses(approved):
    from twins.ethics import review

    rec = json.loads((approved / "review.json").read_text())
    covered = set(rec["files"])
    for f in ("config.yaml", "metrics.json", "effects.json", "effects.parquet", "arms.json", "manifest.json",
              "worlds.parquet", "trips.parquet", "timeseries.parquet", "groups.parquet", "edges.parquet",
              "evidence/evidence.json", "figures/effects.png", "figures/arm1/timeseries.png"):
        assert f in covered, f
    assert not covered & {"review.json", "review.md", "gates.json", "twins.log"}
    assert not any(f.startswith(".hydra/") for f in covered)
    assert review.blockers(approved)[2] == []  # approve -> export allowed


@pytest.mark.parametrize("name", ["metrics.json", "effects.json", "worlds.parquet", "manifest.json",
                                  "figures/effects.png", "config.yaml"])
def test_an_edit_after_approval_blocks_export_naming_the_file(approved, name):
    from twins.ethics import export
    from twins.ethics.review import ReviewError

    p = approved / name
    original = p.read_bytes()
    p.write_bytes(original + (b" " if name.endswith((".json", ".yaml")) else b"\0"))
    with pytest.raises(ReviewError) as ex:
        export.export(approved)
    assert name in str(ex.value) and "changed since its gates ran" in str(ex.value)
    assert not (approved / "export").exists()
    p.write_bytes(original)  # restored: trusted again
    assert [f.name for f in export.export(approved)] == ["policy.json"]


def test_deleted_file_blocks_and_later_files_do_not(approved):
    from twins.ethics import export
    from twins.ethics.review import ReviewError

    # written after the review (a transfer's outputs, say): not covered, and no reason to refuse
    (approved / "transfer.json").write_text("{}\n")
    (approved / "figures" / "transfer.png").write_bytes(b"png")
    assert [f.name for f in export.export(approved)] == ["policy.json"]
    (approved / "trips.parquet").unlink()
    with pytest.raises(ReviewError, match="trips.parquet"):
        export.export(approved)


def test_export_cli_names_the_edited_file(approved):
    m = approved / "metrics.json"
    m.write_text(m.read_text().replace("mean", "mean ", 1))
    r = twins("export", approved)
    assert r.returncode == 1 and "export refused" in r.stderr and "metrics.json" in r.stderr
    assert "Traceback" not in r.stderr and not (approved / "export").exists()


def test_review_verify_on_a_missing_log(tmp_path):
    r = twins("review", "verify", tmp_path / "nowhere" / "audit.jsonl")
    assert r.returncode == 2
    line = one_error_line(r.stderr, "twins review: error: ")
    assert "MISSING" in line and "TAMPERED" not in r.stdout + r.stderr and "nowhere" in line
    assert not (tmp_path / "nowhere").exists()


def test_placeholder_owner_fails_the_provenance_gate():
    from hydra import compose, initialize_config_dir

    from twins.cli import CONF_DIR
    from twins.ethics import gates
    from twins.ethics.config import as_config

    for name in ("traffic", "drug"):
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            e = as_config(compose(config_name="config", overrides=[f"ethics={name}"]).ethics)
            real = as_config(compose(config_name="config", overrides=[
                f"ethics={name}", "ethics.objective.owner.name=Testville transport department",
                "ethics.objective.owner.organisation=Testville"]).ethics)
        g = gates.provenance({"provenance": OmegaConf.to_container(e.objective)}, e)
        assert g["status"] == "FAIL" and "placeholder" in g["reason"], g
        assert "ethics.objective.owner.name=" in g["reason"] and "Example" in g["reason"]
        assert gates.provenance({"provenance": OmegaConf.to_container(real.objective)}, real)["status"] == "PASS"


# --- 4. results: a table is a file of its own folder --------------------------------------------------------
def test_results_table_refuses_names_outside_the_folder(tiny_run, tmp_path):
    from twins import results

    other = tmp_path / "ring"
    other.mkdir()
    (other / "worlds.parquet").write_bytes((tiny_run / "worlds.parquet").read_bytes())
    run = results.load(tiny_run)
    for bad in (f"../{other.name}/worlds", str(other / "worlds"), "..", "sub/worlds"):
        with pytest.raises(ValueError, match="not a table of"):
            run.table(bad)
    assert len(run.table("worlds")) == 4  # 2 replications x 2 arms


# --- 5. figures a reader can use without the code -----------------------------------------------------------
def test_figures_say_what_they_show():
    import numpy as np
    import pandas as pd

    from twins import plots

    ts = pd.DataFrame({"time_s": np.repeat([60.0, 120.0], 3), "world": [0, 1, 2] * 2,
                       "vehicles_in_network": [3, 4, 5, 6, 7, 8], "mean_speed_mps": [9.0, 8, 7, 6, 5, 4]})
    fig = plots.timeseries(ts, ["vehicles_in_network", "mean_speed_mps"])
    assert fig._suptitle is not None and fig._suptitle.get_text()
    assert [a.get_ylabel() for a in fig.axes] == ["vehicles in network (veh)", "mean speed (m/s)"]
    assert fig.axes[-1].get_xlabel() == "time (min)"
    legend = " ".join(t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert "5–95%" in legend and "3 worlds" in legend  # what the shaded band is

    c = pd.DataFrame({"trial": [3, 3, 7, 7], "metric": ["mean_delay_s", "throughput_veh"] * 2,
                      "confirmed_effect": [-5.0, 2, -3, 1], "ci_low": [-7.0, 0, -5, -1], "ci_high": [-3.0, 4, -1, 3],
                      "search_effect": [-6.0, 2.5, -4, 1], "pareto": [True, True, False, False]})
    fig = plots.confirmed_effects(c)
    assert fig._suptitle.get_text()
    assert [a.get_xlabel() for a in fig.axes] == ["effect on mean delay (s)", "effect on throughput (veh)"]
    assert all(a.get_legend() is None for a in fig.axes) and len(fig.legends) == 1  # not over the data
    fig.canvas.draw()
    leg = fig.legends[0].get_window_extent()
    assert all(leg.y1 <= a.get_window_extent().y0 for a in fig.axes)  # below every panel
