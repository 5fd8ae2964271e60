"""bench_fidelity's ``--compare``: each mark's ratio before and now, with the marks that changed and the failing
marks counted (the check of a rule change against the commit before it, run side by side)."""
from __future__ import annotations

import sys

import pandas as pd

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_fidelity  # noqa: E402


def _summary(rows):
    cols = ["scenario", "model"] + [f"{k}_{x}" for k, _ in bench_fidelity.METRICS for x in ("ratio", "pass")]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_compare_pairs_marks_and_counts_failures():
    before = _summary([("a", "IDM", 1.02, True, 1.12, False, 1.0, True),
                       ("b", "Krauss", 0.90, True, 0.80, False, 0.99, True),
                       ("gone", "IDM", 1.0, True, 1.0, True, 1.0, True)])
    now = _summary([("a", "IDM", 1.01, True, 1.05, True, 1.0, True),
                    ("b", "Krauss", 0.88, True, 0.78, False, 0.95, False)])
    d = bench_fidelity.compare(before, now)
    assert list(zip(d["scenario"], d["model"])) == [("a", "IDM"), ("b", "Krauss")]  # only marks in both runs
    assert d.loc[0, "mean_delay_s_ratio_before"] == 1.12 and d.loc[0, "mean_delay_s_ratio_now"] == 1.05
    text = bench_fidelity.compare_table(d)
    assert "failing marks: 2 before, 2 now" in text
    a_line = next(line for line in text.splitlines() if line.startswith("a "))
    assert "1.12 FAIL ->  1.05   ok *" in a_line  # the delay mark that changed is flagged
    b_line = next(line for line in text.splitlines() if line.startswith("b "))
    assert b_line.count("*") == 1 and "0.95 FAIL *" in b_line  # throughput fell out of its ±3 %
