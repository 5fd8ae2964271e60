"""Bad input and faults around a run (issue 19, part A): the size guard, run folders that are never mixed,
a lock against concurrent runs, the manifest before figures, interrupted searches, one sweep folder, the
console summary, and missing extras. Every refusal: exit code 2, one ``twins: error`` line that names the
setting and the fix, no traceback, and nothing already on disk lost or changed."""
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twins import cli
from twins.compute import plan
from twins.core import runner

from tests.compute.conftest import compose_cfg

RING = ["scenario=ring", "horizon_s=20", "replications=1", "output.figures=false", "progress=false"]


def twins(*args, cwd=None, timeout=240):
    """``python -m twins ...`` in a child that reports its own peak memory (KB) on its last stderr line."""
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print('maxrss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
            "sys.exit(r.returncode)")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    t = time.time()
    r = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "twins", *args], capture_output=True,
                       text=True, cwd=cwd, timeout=timeout, env=env)
    lines = r.stderr.strip().splitlines()
    r.maxrss_kb = int(lines[-1].split()[1]) if lines and lines[-1].startswith("maxrss_kb") else None
    r.stderr = "\n".join(lines[:-1])
    r.wall_s = time.time() - t
    return r


def refused(r, *expect):
    """Exit code 2 and exactly one ``twins: error`` line holding each of ``expect``; no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("twins: error:")]
    assert len(errors) == 1, r.stderr[-1500:]
    assert "Traceback" not in r.stderr + r.stdout
    for e in expect:
        assert e in errors[0], f"{e!r} not in {errors[0]!r}"
    return errors[0]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its content hash: what must not change on a refusal."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- the size guard -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, field", [
    (["scenario=ring", "replications=1000000000", "horizon_s=300"], "replications=1000000000"),
    (["scenario=junction", "scenario.flows_veh_h.N=1e9"], "scenario.flows_veh_h.N="),
    (["scenario=traffic", "scenario.rows=1000", "scenario.cols=1000"], "scenario.rows=1000"),
])
def test_size_guard_refuses_before_allocating(tmp_path, args, field):
    out = tmp_path / "run"
    r = twins("run", *args, f"hydra.run.dir={out}")
    msg = refused(r, field, "needs an estimated", "above the limit", "compute.max_memory_gb=")
    assert " TB " in msg  # these are terabytes, not a near miss
    assert not out.exists()  # refused before Hydra: no folder with only .hydra/ and an empty log
    assert r.maxrss_kb is not None and r.maxrss_kb < 1_000_000, r.maxrss_kb  # decided in under 1 GB
    assert r.wall_s < 60  # a few seconds (imports); generous for a loaded 2-core CI machine


def test_size_guard_override_and_chunks(tmp_path):
    """compute.max_memory_gb is the limit where set: a tiny one refuses a small run (naming it), at the config
    estimate and, for a chunk, at the probe's measurement."""
    cfg = compose_cfg(*RING, "compute.max_memory_gb=0.00001")
    with pytest.raises(plan.MemoryLimitError, match=r"above the limit of .*\(compute.max_memory_gb=1e-05\)"):
        runner.run(cfg, tmp_path / "a")
    assert not (tmp_path / "a" / "manifest.json").exists()
    with pytest.raises(cli.ConfigError, match=r"compute.max_memory_gb=-1(.0)? is invalid: expected a positive number"):
        runner.run(compose_cfg(*RING, "compute.max_memory_gb=-1"), tmp_path / "b")
    # the compute plan: one world measured above the limit is refused (not tried and swapped)
    job = plan.Job(compose_cfg(*RING, "replications=6", "compute.max_memory_gb=0.0000001"),
                   plan.WorldBatch.replications(0, 6))
    orig = plan.check_memory
    try:
        plan.check_memory = lambda *a, **k: None  # past the config estimate, to reach the probe
        with pytest.raises(plan.MemoryLimitError, match=r"one world of this run needs .* \(measured by the probe\)"):
            plan.make_plan(job)
    finally:
        plan.check_memory = orig


def test_size_guard_passes_every_shipped_scenario():
    """No legitimate run is refused: every conf/scenario default (with two arms), and the README's larger
    examples, stay far below even a small CI machine's memory (2 GB here)."""
    for p in sorted((Path(cli.CONF_DIR) / "scenario").glob("*.yaml")):
        if p.stem != "sumo":  # sized from its files by the probe
            cfg = compose_cfg(f"scenario={p.stem}", "compute.max_memory_gb=2")
            plan.check_memory(cfg, int(cfg.replications) * 2)
    for args in (["scenario=arterial", "replications=16", "horizon_s=1800"],
                 ["scenario=traffic", "intervention=signal_timing", "search.budget=512"]):
        cfg = compose_cfg(*args, "compute.max_memory_gb=2")
        plan.check_memory(cfg, int(cfg.replications) * 2)
        cli._check_memory(cfg, "search")


# --- run folders ----------------------------------------------------------------------------------------------
def test_run_folders_are_never_mixed(tmp_path):
    out = tmp_path / "run"
    r = twins("run", *RING, f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-1500:]
    # the console ends with the main metrics, their intervals, and the folder
    assert "95% CI [" in r.stdout and r.stdout.strip().splitlines()[-1] == f"run folder: {out}"
    before = snapshot(out)
    # a second run into the same folder: refused before Hydra touches it (its .hydra/ included)
    r = twins("run", "scenario=junction", "horizon_s=20", "replications=1", f"hydra.run.dir={out}")
    refused(r, "output.overwrite", str(out), "output.overwrite=true", "hydra.run.dir=")
    assert snapshot(out) == before
    (out / ".twins.lock").write_text("999999\n")  # a stale lock: its process was killed
    assert {k: v for k, v in snapshot(out).items() if k != ".twins.lock"} == before
    # overwrite clears the old run first (a stale lock does not block it)
    (out / "stale.txt").write_text("from another run")
    r = twins("run", "scenario=junction", "horizon_s=20", "replications=1", "output.figures=false",
              "output.overwrite=true", f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-1500:]
    assert not (out / "stale.txt").exists() and not (out / ".twins.lock").exists()
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] and man["scenario"] == "junction"


def test_a_concurrent_run_fails_at_once(tmp_path, capsys):
    """A live run holds the folder's lock: a second one is refused before Hydra starts (and, should both
    pass that check at once, when it claims the folder), naming the holder's pid."""
    from twins.core import io

    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with open(out / io.LOCK_NAME, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("4242\n")
        f.flush()
        with pytest.raises(SystemExit) as e:
            cli.precheck([*RING, "output.overwrite=true", f"hydra.run.dir={out}"])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.count("twins: error:") == 1 and "another twins run (pid 4242)" in err
        with pytest.raises(io.FolderInUse, match="pid 4242"):
            with io.RunFolder(out, overwrite=True):
                pass
    assert (out / "metrics.json").read_text() == "{}"  # overwrite=true did not touch a folder in use


def test_overwrite_never_clears_a_folder_that_is_not_a_run(tmp_path, capsys):
    """output.overwrite=true with a mistyped hydra.run.dir (a source tree, say): refused, nothing removed."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "important.py").write_text("x = 1\n")
    with pytest.raises(SystemExit) as e:
        cli.precheck([*RING, "output.overwrite=true", f"hydra.run.dir={src}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("twins: error:") == 1 and "not clearing it" in err and "hydra.run.dir=" in err
    assert (src / "important.py").read_text() == "x = 1\n"


def test_a_refused_job_leaves_no_folder(tmp_path):
    """A refusal after Hydra made the job folder (the second job of a sweep) removes that folder again."""
    sweep = tmp_path / "sweep"
    r = twins("run", "-m", *RING, "replications=1,1000000000", f"hydra.sweep.dir={sweep}")
    refused(r, "replications=1000000000", "compute.max_memory_gb=")
    assert (sweep / "0" / "manifest.json").exists()
    assert not (sweep / "1").exists()


def test_unwritable_folder_is_refused_before_hydra(tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == ro else real(p, mode, **k))
    with pytest.raises(SystemExit) as e:
        cli.precheck([*RING, f"hydra.run.dir={ro}/run"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("twins: error:") == 1 and "not writable" in err and "hydra.run.dir=" in err
    assert list(ro.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_run_folder_from_the_cli(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = twins("run", *RING, f"hydra.run.dir={ro}")
        refused(r, "not writable", "hydra.run.dir=")
    finally:
        ro.chmod(0o755)


# --- the manifest before figures, interrupted searches -------------------------------------------------------
def test_figure_failure_is_a_warning_not_a_lost_run(tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    (out / "figures").write_text("not a folder")  # figures/ unusable (as a read-only one is, for non-root)
    runner.run(compose_cfg(*RING[:3], "output.figures=true"), out)
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] is True and man["figures"] == [] and man["figure_errors"]
    assert (out / "worlds.parquet").exists() and (out / "metrics.json").exists()
    assert any("figure" in r.message and r.levelname == "WARNING" for r in caplog.records)


def test_interrupted_search_writes_an_incomplete_manifest(tmp_path, monkeypatch):
    from interventions import _evaluate
    from interventions.search_config import search_from_config

    calls = {"n": 0}
    real = _evaluate.TwinEvaluator.__call__

    def stop_on_second(self, params, replications):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, params, replications)

    monkeypatch.setattr(_evaluate.TwinEvaluator, "__call__", stop_on_second)
    cfg = compose_cfg("scenario=junction", "intervention=signal_timing", "horizon_s=60", "replications=1",
                      "search.budget=4", "search.batch=2", "search.confirm.during_search=false")
    with pytest.raises(KeyboardInterrupt):
        search_from_config(cfg, tmp_path)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["complete"] is False and man["task"] == "search" and "KeyboardInterrupt" in man["interrupted"]
    assert (tmp_path / "candidates.parquet").exists()


# --- a sweep across scenarios: one folder --------------------------------------------------------------------
def test_multirun_across_scenarios_writes_one_sweep_folder(tmp_path):
    r = twins("run", "-m", "scenario=ring,junction", "horizon_s=20", "replications=1", "output.figures=false",
              "progress=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-1500:]
    sweeps = [p for p in (tmp_path / "multirun").glob("*/*") if p.is_dir()]
    assert len(sweeps) == 1, sweeps
    sweep = sweeps[0]
    assert (sweep / "summary.parquet").exists() and (sweep / "summary.png").exists()
    for job, scen in (("0", "ring"), ("1", "junction")):
        assert json.loads((sweep / job / "manifest.json").read_text())["scenario"] == scen


# --- missing extras ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, expect", [
    (["compute=ray"], ['compute=\'ray\'', 'pip install -e ".[ray]"']),
    (["hydra/launcher=joblib", "-m"], ["hydra/launcher='joblib'", 'pip install -e ".[launchers]"']),
])
def test_missing_extra_names_it(args, expect, monkeypatch, capsys):
    """Ray or the joblib launcher not installed: one line naming the extra (the import is made to fail)."""
    real = plan.installed
    monkeypatch.setattr(plan, "installed",
                        lambda m: False if m in ("ray", "hydra_plugins.hydra_joblib_launcher") else real(m))
    with pytest.raises(SystemExit) as e:
        cli.precheck([*RING, *[a for a in args if a != "-m"]], multirun="-m" in args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("twins: error:") == 1 and "Traceback" not in err
    for x in expect:
        assert x in err, err
