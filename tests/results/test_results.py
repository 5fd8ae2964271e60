"""twins.results: run, sweep and search folders into pandas; clear errors for what is not one."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from twins import results
from twins.core.stats import mean_ci


def test_run_tables_and_metrics(ring_run):
    r = results.load(ring_run)
    assert r.kind == "run" and r.complete
    assert {"worlds", "trips", "timeseries", "detectors", "edges", "trajectories"} <= set(r.tables)
    assert r.manifest["scenario"] == "ring" and r.config["scenario"]["name"] == "ring"
    # metrics.json agrees with an independent summary of worlds.parquet
    for row in r.metrics.itertuples():
        if row.n >= 2:
            assert row.mean == pytest.approx(mean_ci(r.worlds[row.metric])["mean"])
    assert set(r.metrics["metric"]) == set(r.manifest and r.worlds.columns.drop(["world", "replication", "arm"]))
    assert r.trajectories["time_s"].max() == pytest.approx(240.0)
    assert r.gates is None and r.review is None and r.review_markdown is None  # not reviewed: no records
    assert any(p.name == "network_delay.png" for p in r.figures)
    assert r.arms["label"].tolist() == ["baseline"]


def test_missing_table_says_how_to_get_it(junction_sweep):
    job = results.load(junction_sweep / "0")
    with pytest.raises(results.MissingTableError, match="output.trajectory_every"):
        job.trajectories
    ring = results.load(junction_sweep / "0")
    assert ring.effects is not None  # a counterfactual job has effects


def test_sweep_stacks_jobs_with_swept_values(junction_sweep):
    s = results.load(junction_sweep)
    assert s.kind == "sweep" and len(s) == 2 and s.complete
    assert s.swept == ["intervention.cycle_s"]
    assert sorted(s.overrides["intervention.cycle_s"]) == [60, 90]  # parsed, not strings
    w = s.worlds
    assert list(w.columns[:2]) == ["job", "intervention.cycle_s"]
    assert len(w) == sum(len(j.worlds) for j in s.jobs)
    eff = s.effects
    net = eff[(eff["scope"] == "network") & (eff["metric"] == "mean_delay_s")].set_index("intervention.cycle_s")
    # the junction's own cycle is 60 s: that arm equals the baseline, effect exactly 0
    assert net.loc[60, "effect"] == 0.0 and net.loc[90, "effect"] != 0.0
    assert set(s.summary["job"].astype(str)) == {"0", "1"}
    assert set(s.metrics["job"]) == {0, 1}
    assert s.jobs[1].arms.loc[1, "cycle_s"] == 90
    reviewed = [i for i, j in enumerate(s.jobs) if j.gates is not None]  # jobs the ethics review wrote gates for
    if reviewed:
        assert list(s.gates.columns[:3]) == ["job", "intervention.cycle_s", "gate"]
        assert sorted(set(s.gates["job"])) == reviewed
    else:
        assert s.gates is None


def test_search_folder(junction_search):
    r = results.load(junction_search)
    assert r.kind == "search" and r.complete
    assert len(r.candidates) == 4 and {"objective:mean_delay_s", "objective:throughput_veh"} <= set(r.candidates)
    assert len(r.pareto) >= 1 and set(r.confirmed["trial"]) >= set(r.pareto["trial"])
    assert [o["metric"] for o in r.objectives] == ["mean_delay_s", "throughput_veh"]
    if r.best_policy is not None:
        assert "cycle_s" in r.best_policy["params"]
    study = r.study()
    assert len(study.trials) == 4


def test_errors_name_what_is_wrong(tmp_path, ring_run):
    with pytest.raises(FileNotFoundError, match="no such results folder"):
        results.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(results.NotAResultsFolderError, match="manifest.json.*candidates.parquet.*multirun.yaml"):
        results.load(tmp_path / "empty")
    with pytest.raises(results.NotAResultsFolderError, match="pass the folder"):
        results.load(ring_run / "manifest.json")
    # a parent of run folders points at them
    shutil.copytree(ring_run, tmp_path / "outputs" / "day" / "run1")
    with pytest.raises(results.NotAResultsFolderError, match="run1"):
        results.load(tmp_path / "outputs")


def _interrupt(folder):
    m = json.loads((folder / "manifest.json").read_text())
    m.update(complete=False, steps_done=100, steps=240)
    (folder / "manifest.json").write_text(json.dumps(m))


def test_incomplete_run_refused_unless_allowed(tmp_path, ring_run):
    run = tmp_path / "killed"
    shutil.copytree(ring_run, run)
    _interrupt(run)
    with pytest.raises(results.IncompleteRunError, match=r"step 100/240.*allow_incomplete=True"):
        results.load(run)
    with pytest.warns(results.IncompleteRunWarning, match="INCOMPLETE"):
        r = results.load(run, allow_incomplete=True)
    assert not r.complete and len(r.worlds) == 1
    # killed before writing anything: only the config
    (tmp_path / "early").mkdir()
    shutil.copy(ring_run / "config.yaml", tmp_path / "early" / "config.yaml")
    with pytest.raises(results.IncompleteRunError, match="no manifest.json"):
        results.load(tmp_path / "early")


def test_incomplete_sweep_and_search(tmp_path, junction_sweep, junction_search):
    sw = tmp_path / "sweep"
    shutil.copytree(junction_sweep, sw)
    _interrupt(sw / "1")
    with pytest.raises(results.IncompleteRunError, match=r"job\(s\) 1"):
        results.load(sw)
    with pytest.warns(results.IncompleteRunWarning):
        s = results.load(sw, allow_incomplete=True)
    assert s.overrides["complete"].tolist() == [True, False]
    se = tmp_path / "search"
    shutil.copytree(junction_search, se)
    _interrupt(se)  # the manifest has the last word
    with pytest.raises(results.IncompleteRunError, match="incomplete search"):
        results.load(se)
    for f in ("manifest.json", "best_policy.json", "pareto.parquet", "confirmed.parquet"):
        (se / f).unlink()  # killed mid-search before any manifest: finished means best_policy.json
    with pytest.raises(results.IncompleteRunError, match="search.resume=true"):
        results.load(se)
    with pytest.warns(results.IncompleteRunWarning):
        assert len(results.load(se, allow_incomplete=True).candidates) == 4


def test_review_records_when_present(tmp_path, drug_run):
    d = tmp_path / "reviewed"
    shutil.copytree(drug_run, d)
    gates = [{"gate": "provenance", "status": "PASS", "reason": "owner declared", "evidence": {}, "hard": False},
             {"gate": "safety.offtarget_ceiling", "status": "FAIL", "reason": "upper bound 0.4 > 0.3",
              "evidence": {"ci_high": 0.4}, "hard": True},
             {"gate": "approval", "status": "NEEDS_HUMAN", "reason": "no reviewer yet", "hard": False}]
    (d / "gates.json").write_text(json.dumps(gates))
    (d / "review.json").write_text(json.dumps({"status": "BLOCKED", "gates": gates}))
    (d / "review.md").write_text("# Ethics review\n")
    r = results.load(d)
    assert r.gates.columns[:5].tolist() == results.GATE_COLUMNS
    assert r.gates["status"].tolist() == ["PASS", "FAIL", "NEEDS_HUMAN"]
    assert r.gates["evidence"].iloc[2] is None or (isinstance(r.gates["evidence"].iloc[2], float)
                                                   and np.isnan(r.gates["evidence"].iloc[2]))
    assert r.review["status"] == "BLOCKED" and r.review_markdown.startswith("# Ethics review")


def test_molecular_counterfactual(drug_run):
    r = results.load(drug_run)
    assert r.manifest["intervention"] == "drug_design"
    assert r.arms.set_index("arm").loc[1, "dose"] == 300
    m = r.metrics
    assert set(m["arm"]) == {0, 1} and "target_occupancy_mean" in set(m["metric"])
    eff = r.effects
    occ = eff[(eff["scope"] == "network") & (eff["metric"] == "target_occupancy_mean")].iloc[0]
    w = r.worlds.pivot_table(index="replication", columns="arm", values="target_occupancy_mean")
    assert occ["effect"] == pytest.approx(float((w[1] - w[0]).mean()))
    with pytest.raises(results.MissingTableError, match="molecular runs have no trips"):
        r.trips
    assert isinstance(r.timeseries, pd.DataFrame) and "target_occupancy" in r.timeseries
