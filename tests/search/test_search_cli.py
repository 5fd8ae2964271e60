"""``python -m twins search`` end to end (tiny), and ``run`` unaffected by the search config group."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd

TINY = ["scenario=arterial", "intervention=signal_timing", "horizon_s=120", "replications=2",
        "search.budget=4", "search.batch=2", "search.sampler=random", "search.confirm.top=1", "progress=false"]


def twins(*args, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "twins", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_search_command_writes_its_folder_and_resumes(tmp_path):
    out = tmp_path / "s"
    r = twins("search", *TINY, f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    cand = pd.read_parquet(out / "candidates.parquet")
    assert len(cand) == 4 and set(cand["batch"]) == {0, 1}
    best = json.loads((out / "best_policy.json").read_text())
    assert set(best["params"]) == {"cycle_s", "green_split", "offset_s", "offset_step_s"}
    assert "mean_delay_s" in best["confirmed"]
    assert (out / "figures" / "convergence.png").exists() and (out / "study.db").exists()
    # the same folder again without resume: refused with a clear message
    r = twins("search", *TINY, f"hydra.run.dir={out}")
    assert r.returncode != 0 and "search.resume" in r.stderr
    # resume with a larger budget: only the new evaluations run
    r = twins("search", *[a for a in TINY if not a.startswith("search.budget")], "search.budget=6",
              "search.resume=true", f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    cand2 = pd.read_parquet(out / "candidates.parquet")
    assert len(cand2) == 6 and cand2["trial"].is_unique
    pd.testing.assert_frame_equal(cand2[cand2["trial"] < 4].reset_index(drop=True)[cand.columns], cand,
                                  check_dtype=False)


def test_bad_sampler_is_a_clear_error(tmp_path):
    r = twins("search", *TINY, "search.sampler=tpx", f"hydra.run.dir={tmp_path / 'x'}")
    assert r.returncode == 2 and "search.sampler" in r.stderr and "tpe" in r.stderr


def test_run_still_works_with_the_search_group(tmp_path):
    r = twins("run", "scenario=ring", "horizon_s=60", "replications=1", f"hydra.run.dir={tmp_path / 'r'}")
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = (tmp_path / "r" / "config.yaml").read_text()
    assert "search:" in cfg
