"""Hydra launchers: a 2-job sweep with hydra/launcher=joblib (jobs in parallel processes); the sweep
summary callback (interventions/sweep.py) still collects every job, and each job folder carries its
compute account."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")


@pytest.mark.slow  # ~50 s: two job processes import the stack
def test_joblib_launcher_runs_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    args = [sys.executable, "-m", "twins", "run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            "scenario=junction", "horizon_s=60", "replications=2", "intervention=signal_timing",
            "intervention.cycle_s=60,90", "output.figures=false", "progress=false", f"hydra.sweep.dir={sweep}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Joblib.Parallel" in r.stdout + r.stderr  # the joblib launcher ran the jobs
    summary = pd.read_parquet(sweep / "summary.parquet")
    assert sorted(summary["job"].unique()) == ["0", "1"]
    assert sorted(summary["override:intervention.cycle_s"].unique()) == ["60", "90"]
    assert summary["complete"].all()
    d = summary[summary["metric"] == "mean_delay_s"]
    assert len(d) == 2 and d["effect"].notna().all()
    for job in ("0", "1"):
        man = json.loads((sweep / job / "manifest.json").read_text())
        assert man["complete"] and man["accounting"]["energy_total_j"] > 0
