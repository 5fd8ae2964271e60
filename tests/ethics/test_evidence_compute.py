"""The ethics evidence batches run through the compute plan, like the run: chunked at
compute.max_worlds_per_chunk they give the same evidence, bit for bit, as in one chunk, and their chunks and
energy are counted in the run folder's compute account (manifest.json)."""
import json

import pandas as pd
import pytest
from twins.core import io, runner
from twins.ethics import evidence

from .conftest import compose_cfg

# held-out 4 replications × 2 arms = 8 worlds; reproducibility 2 × 3 arms = 6; stress 2 factors × 2 × 2 = 4 each
SMALL = ["scenario=junction", "scenario.signals.cycle_s=120", "horizon_s=300", "replications=2", "ethics=traffic",
         "intervention=signal_timing", "intervention.cycle_s=60", "ethics.author=alice",
         "ethics.evidence.replications=4", "ethics.controls.II.held_out_replications=4",
         "ethics.validity.stress_replications=2", "output.figures=false", "progress=false"]
TABLES = ("worlds", "effects", "groups", "trips")


def _cfg(tmp_path, *more):
    cfg = compose_cfg(*SMALL, *more)
    cfg.ethics.audit.log = str(tmp_path / "audit.jsonl")
    return cfg


def test_chunked_evidence_equals_one_chunk_and_is_in_the_run_account(tmp_path):
    # the run folder (run, review, evidence) with every batch in chunks of at most 2 worlds
    run = tmp_path / "run"
    runner.run(_cfg(tmp_path, "compute.max_worlds_per_chunk=2"), run)
    chunked = json.loads((run / "evidence" / "evidence.json").read_text())
    # the reference: the same evidence gathered with no chunk cap (each batch in one chunk)
    ref_dir = tmp_path / "ref"
    ref = evidence.gather(_cfg(tmp_path), ref_dir, {"cycle_s": 60.0},
                          estimate=chunked["credibility"]["estimate"])
    io.write_json(ref_dir / "evidence.json", ref)  # as review.create writes it (NaN as null)
    ref = json.loads((ref_dir / "evidence.json").read_text())
    for k in ("held_out", "credibility", "network", "groups", "levels", "baseline_levels", "traffic",
              "reproducibility", "stress", "policy", "params"):
        assert chunked[k] == ref[k], k
    for t in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(run / "evidence" / f"{t}.parquet"),
                                      pd.read_parquet(ref_dir / "evidence" / f"{t}.parquet"), check_exact=True, obj=t)
    # not vacuous: the held-out effect is real and the replications differ
    assert chunked["credibility"]["held_out"]["n"] == 4 and chunked["credibility"]["held_out"]["effect"] != 0
    w = pd.read_parquet(run / "evidence" / "worlds.parquet")
    assert len(w) == 8 and w["mean_delay_s"].nunique() > 4
    assert chunked["reproducibility"]["rerun"]["identical"] and chunked["reproducibility"]["null"]["identical"]

    # every evidence batch was chunked at 2 worlds, and is counted in the run's compute account
    man = json.loads((run / "manifest.json").read_text())
    plans = man["compute"]["ethics_evidence"]
    assert [p["worlds"] for p in plans] == [8, 6, 4, 4]
    assert [p["chunks"] for p in plans] == [4, 3, 2, 2] and all(p["chunk_size"] == 2 for p in plans)
    assert {p["chunk_size_limited_by"] for p in plans} == {"compute.max_worlds_per_chunk"}
    acc = man["accounting"]
    own, ev = acc["parts"]["run"], acc["parts"]["ethics_evidence"]
    assert own["chunks"] == 2 and ev["chunks"] == 11 and acc["chunks"] == 13  # the run: 4 worlds in 2 chunks
    assert acc["device_seconds"]["cpu"] == pytest.approx(own["device_seconds"]["cpu"] + ev["device_seconds"]["cpu"],
                                                          abs=2e-3)
    assert ev["device_seconds"]["cpu"] > 0 and ev["wall_time_s"] > 0
    assert acc["wall_time_s"] == pytest.approx(own["wall_time_s"] + ev["wall_time_s"], abs=2e-3)
    assert acc["energy_total_j"] == pytest.approx(own["energy_total_j"] + ev["energy_total_j"], abs=2e-3)
    assert acc["energy"]["cpu"]["method"] == ev["energy"]["cpu"]["method"]



# --- folding the evidence account into the manifest -----------------------------------------------------
def _batches(cpu_s: float, chunks: int = 2):
    """Evidence batches whose meter holds ``chunks`` chunks of ``cpu_s`` CPU seconds each, run elsewhere."""
    from omegaconf import OmegaConf
    from twins.compute.accounting import Usage

    b = evidence.Batches(OmegaConf.create({"compute": {"cpu_watts_per_core": 5.0}}))
    for _ in range(chunks):
        b.meter.add(Usage(device="cpu", wall_s=cpu_s, cpu_s=cpu_s, pid=-1, host="a-worker"))
    b.plans.append({"batch": "ethics: held-out evidence", "worlds": 4, "chunks": chunks})
    return b


@pytest.mark.parametrize("own", [None, {"wall_time_s": 3.0, "device_seconds": {"cpu": 6.0}, "chunks": 1,
                                        "energy": {"cpu": {"joules": 30.0, "method": "estimate", "estimate": True,
                                                           "note": "run"}}}])
def test_a_second_review_replaces_the_evidence_account_never_adds_it_twice(tmp_path, own):
    """With or without the task's own account in the manifest, reviewing twice leaves the task's account plus
    the latest evidence's, once."""
    io.write_json(tmp_path / "manifest.json", {"task": "run", **({"accounting": own} if own else {})})
    evidence.add_to_manifest(tmp_path, _batches(1.0))
    second = _batches(2.0, chunks=3)
    evidence.add_to_manifest(tmp_path, second)
    acc = json.loads((tmp_path / "manifest.json").read_text())["accounting"]
    ev = second.meter.summary()
    assert acc["parts"]["ethics_evidence"] == ev and ev["device_seconds"]["cpu"] == 6.0 and ev["chunks"] == 3
    if own is None:
        assert "run" not in acc["parts"] and acc["chunks"] == 3
        assert acc["device_seconds"]["cpu"] == 6.0 and acc["energy_total_j"] == ev["energy_total_j"]
    else:
        assert acc["parts"]["run"] == own and acc["chunks"] == 4
        assert acc["device_seconds"]["cpu"] == 12.0 and acc["energy_total_j"] == pytest.approx(
            30.0 + ev["energy_total_j"], abs=1e-3)


def test_an_unreadable_manifest_is_said(tmp_path, caplog):
    (tmp_path / "manifest.json").write_text("{not json")
    with caplog.at_level("WARNING", logger="twins"):
        evidence.add_to_manifest(tmp_path, _batches(1.0))
    assert "could not read" in caplog.text and "manifest.json" in caplog.text
    assert (tmp_path / "manifest.json").read_text() == "{not json"  # left as it was


@pytest.mark.parametrize("outcome", ["evidence", "error"])
def test_a_failing_account_neither_fails_the_evidence_nor_hides_its_error(tmp_path, monkeypatch, caplog, outcome):
    def fake_gather(cfg, outdir, policy, batches, **kw):
        batches.plans.append({"batch": "ethics: held-out evidence"})
        if outcome == "error":
            raise ValueError("the evidence run failed")
        return {"kind": "traffic"}

    def broken(outdir, batches):
        raise PermissionError("read-only folder")

    from omegaconf import OmegaConf

    monkeypatch.setattr(evidence, "_gather", fake_gather)
    monkeypatch.setattr(evidence, "add_to_manifest", broken)
    cfg = OmegaConf.create({"compute": {}})
    with caplog.at_level("WARNING", logger="twins"):
        if outcome == "error":
            with pytest.raises(ValueError, match="the evidence run failed"):
                evidence.gather(cfg, tmp_path, {})
        else:
            assert evidence.gather(cfg, tmp_path, {}) == {"kind": "traffic"}
    assert "PermissionError: read-only folder" in caplog.text
