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


def test_origin_compare_pairs_the_same_trips_per_seed():
    """``--origins``: trips paired by planned departure and origin edge, seed by seed; only those that arrived in
    both count; per origin the mean delays and the twin's excess in all, averaged over the seeds, largest first."""
    def trips(rows):
        return pd.DataFrame(rows, columns=["depart_s", "origin", "time_loss_s", "arrived"])

    sumo = [{"_trips": trips([(0.0, "a", 10.0, True), (1.0, "a", 20.0, True), (2.0, "b", 5.0, True),
                              (3.0, "b", 7.0, False)])},
            {"_trips": trips([(0.0, "a", 12.0, True), (1.0, "a", 18.0, True), (2.0, "b", 5.0, True)])}]
    twin = [{"_trips": trips([(0.004, "a", 30.0, True), (1.0, "a", 20.0, False), (2.0, "b", 4.0, True),
                              (3.0, "b", 50.0, True)])},  # 1.0/a and 3.0/b arrived in one simulator only
            {"_trips": trips([(0.0, "a", 12.0, True), (1.0, "a", 38.0, True), (2.0, "b", 6.0, True)])}]
    d = bench_fidelity.origin_compare("x", "IDM", twin, sumo).set_index("origin")
    assert list(d.index) == ["a", "b"]  # the larger excess first
    assert d.loc["a", "trips"] == 1.5 and d.loc["b", "trips"] == 1.0
    assert d.loc["a", "twin_excess_s"] == (20.0 + 20.0) / 2  # seed 0: 30 - 10 on one trip; seed 1: 20 on the other
    assert d.loc["b", "twin_excess_s"] == 0.0 and d.loc["b", "sumo_delay_s"] == 5.0
