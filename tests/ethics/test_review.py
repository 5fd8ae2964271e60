"""Approvals, signatures and guarded export on a review record built from crafted evidence (no simulation)."""
import getpass
import hashlib
import json

import pytest
from omegaconf import OmegaConf

from twins.ethics import export, review
from twins.ethics.review import ReviewError

from .conftest import keygen, needs_ssh


@pytest.fixture
def make_run(tmp_path, traffic_cfg, good):
    """``make_run(evidence=..., **ethics overrides)`` -> a run folder whose gates ran on the evidence."""
    def go(evidence=None, name="run", **ethics):
        cfg = OmegaConf.create(OmegaConf.to_container(traffic_cfg))
        cfg.ethics.author = "alice"
        cfg.ethics.audit.log = str(tmp_path / "audit.jsonl")
        for k, v in ethics.items():
            OmegaConf.update(cfg.ethics, k.replace("__", "."), v)
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        review.create(cfg, run, evidence or good, "run")
        return run

    return go


def status(run):
    return json.loads((run / "review.json").read_text())["status"]


def test_record_files_and_shapes(make_run):
    run = make_run()
    g = json.loads((run / "gates.json").read_text())
    assert all(set(x) == {"gate", "status", "reason", "evidence", "hard"} for x in g)
    assert {x["status"] for x in g} <= {"PASS", "FAIL", "NEEDS_HUMAN"}
    rec = json.loads((run / "review.json").read_text())
    for key in ("objective", "tier", "controls", "gates", "decisions", "author", "config_hash", "git_revision",
                "seeds", "evidence_digest", "audit"):
        assert key in rec
    assert len(rec["objective"]["hash"]) == 64 and rec["author"] == "alice"
    assert rec["status"] == "awaiting approval"
    md = (run / "review.md").read_text()
    assert "Objective and who defined it" in md and "| approval | **NEEDS_HUMAN**" in md


def test_author_cannot_approve_own_run(make_run):
    run = make_run()
    with pytest.raises(ReviewError, match="author cannot approve their own run"):
        review.approve(run, " Alice ", "engineer")
    review.approve(run, "Bob", "traffic safety officer")
    assert status(run) == "cleared"
    with pytest.raises(ReviewError, match="already approved"):
        review.approve(run, "bob", "traffic safety officer")


def test_author_account_needs_a_signature(make_run):
    run = make_run(author=getpass.getuser())
    with pytest.raises(ReviewError, match="logged in as the run's author"):
        review.approve(run, "Bob", "traffic safety officer")


def test_failed_gates_cannot_be_approved_and_block_export(make_run, good):
    good["traffic"]["stuck"].update(max=7, per_world=[7, 0, 0, 0])
    run = make_run(good)
    assert status(run) == "blocked"
    with pytest.raises(ReviewError, match="safety.gridlock"):
        review.approve(run, "Bob", "traffic safety officer")
    with pytest.raises(ReviewError, match="safety.gridlock FAIL"):
        export.export(run)
    assert not (run / "export").exists()


def test_export_without_approval_fails_clearly_and_writes_nothing(make_run):
    run = make_run()
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(ReviewError) as err:
        export.export(run, "json")
    assert "approval NEEDS_HUMAN" in str(err.value) and "review approve" in str(err.value)
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written, no temp folder left


def test_export_after_approval(make_run):
    run = make_run()
    review.approve(run, "Bob", "traffic safety officer")
    out = export.export(run, "json")
    pol = json.loads(out[0].read_text())
    assert pol["recommendation"] is True and "RECOMMENDATION" in pol["label"]
    assert pol["policy"] == {"cycle_s": 60.0} and pol["review"]["status"] == "cleared"


def test_rejected_run_cannot_be_approved_or_exported(make_run):
    run = make_run()
    review.reject(run, "the evidence covers weekdays only", "Carol", "planner")
    assert status(run) == "rejected"
    with pytest.raises(ReviewError, match="rejected"):
        review.approve(run, "Bob", "traffic safety officer")
    with pytest.raises(ReviewError, match="weekdays only"):
        export.export(run)


def test_an_edited_record_does_not_fool_export(make_run, good):
    good["traffic"]["pedestrian"]["min_green_s"] = 8.0  # FAIL
    run = make_run(good)
    rec = json.loads((run / "review.json").read_text())
    for g in rec["evidence_gates"]:
        g["status"] = "PASS"
    rec["decisions"].append({"decision": "approve", "reviewer": "Bob", "role": "x", "valid": True,
                             "time": "2026-01-01"})
    (run / "review.json").write_text(json.dumps(rec))
    with pytest.raises(ReviewError) as err:
        export.export(run)
    msg = str(err.value)
    assert "review.json was edited: gates not as recorded in the audit log" in msg and "safety.pedestrian_green FAIL" in msg
    assert "approval NEEDS_HUMAN" in msg


def test_changed_evidence_after_approval_blocks_export(make_run):
    run = make_run()
    review.approve(run, "Bob", "traffic safety officer")
    p = run / "evidence" / "evidence.json"
    p.write_text(p.read_text().replace('"cycle_s": 60.0', '"cycle_s": 61.0', 1))
    with pytest.raises(ReviewError, match="changed since its gates ran"):
        export.export(run)


def test_tampered_log_blocks_export(make_run):
    run = make_run()
    review.approve(run, "Bob", "traffic safety officer")
    log = run.parent / "audit.jsonl"
    ls = log.read_text().splitlines()
    log.write_text(ls[1] + "\n")  # the gates entry deleted
    with pytest.raises(ReviewError, match="audit"):
        export.export(run)


# --- signatures (tiers III-IV) -----------------------------------------------------------------------
@pytest.fixture
def keys(tmp_path):
    bob = keygen(tmp_path / "bob_key", "bob")
    mallory = keygen(tmp_path / "mallory_key", "mallory")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text("Bob " + (tmp_path / "bob_key.pub").read_text().split(" ", 2)[0] + " "
                       + (tmp_path / "bob_key.pub").read_text().split(" ", 2)[1] + "\n")
    return bob, mallory, allowed


def tier3(good):
    good["tier"] = {"tier": "III", "score": 4, "points": {}, "floor": ""}
    good["controls"] = {"approvers": 1, "held_out_replications": 4, "signature": True}
    return good


@needs_ssh
def test_unsigned_approval_is_refused_at_tier_three(make_run, good, keys):
    run = make_run(tier3(good), signing__allowed_signers=str(keys[2]))
    with pytest.raises(ReviewError, match="tier III requires a signed approval"):
        review.approve(run, "Bob", "traffic safety officer")


@needs_ssh
def test_key_not_in_allowed_signers_is_refused(make_run, good, keys):
    bob, mallory, allowed = keys
    run = make_run(tier3(good), signing__allowed_signers=str(allowed))
    with pytest.raises(ReviewError, match="signature not accepted"):
        review.approve(run, "Bob", "traffic safety officer", key=mallory)  # Bob's name, Mallory's key
    with pytest.raises(ReviewError, match="signature not accepted"):
        review.approve(run, "Mallory", "traffic safety officer", key=mallory)
    assert status(run) == "awaiting approval"
    review.approve(run, "Bob", "traffic safety officer", key=bob)
    assert status(run) == "cleared"
    assert export.export(run)[0].exists()
    # a key revoked from allowed-signers: the approval no longer counts
    allowed.write_text("")
    with pytest.raises(ReviewError, match="no longer verifies"):
        export.export(run, out=run / "again")
    assert not (run / "again").exists()


def test_bad_input_is_a_clear_error(tmp_path):
    import subprocess
    import sys

    with pytest.raises(ReviewError, match="no review.json"):
        review.approve(tmp_path, "Bob", "engineer")
    with pytest.raises(ReviewError, match="no such run folder"):
        export.export(tmp_path / "nope")
    r = subprocess.run([sys.executable, "-m", "twins", "run", "ethics.impact.domain=roads",
                        f"hydra.run.dir={tmp_path}/bad"], capture_output=True, text=True, timeout=240)
    assert r.returncode == 2 and "ethics.impact.domain='roads'" in r.stderr and "road_safety" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_run_without_evidence_cannot_be_approved(make_run):
    run = make_run({"kind": "traffic", "source": "run", "policy": {"cycle_s": 60.0}, "disabled": True},
                   enabled=False)
    assert [g["gate"] for g in json.loads((run / "gates.json").read_text())] == ["ethics", "approval", "audit"]
    with pytest.raises(ReviewError, match="no ethics evidence to approve"):
        review.approve(run, "Bob", "engineer")
    with pytest.raises(ReviewError, match="ethics NEEDS_HUMAN"):
        export.export(run)
    assert "no ethics review" in review.show(run)


def test_a_crash_while_gathering_evidence_keeps_the_run_and_blocks_export(tmp_path, monkeypatch, traffic_cfg):
    from twins import ethics
    from twins.ethics import evidence

    def boom(*a, **k):
        raise RuntimeError("out of memory in the evidence run")

    monkeypatch.setattr(evidence, "gather", boom)
    cfg = OmegaConf.create(OmegaConf.to_container(traffic_cfg))
    cfg.ethics.audit.log = str(tmp_path / "audit.jsonl")
    (tmp_path / "run").mkdir()
    rec = ethics.review_run(cfg, tmp_path / "run")
    assert rec["gates"][0]["gate"] == "ethics" and "out of memory" in rec["gates"][0]["reason"]
    with pytest.raises(ReviewError, match="out of memory"):
        export.export(tmp_path / "run")


@pytest.mark.parametrize("outcome", ["none_feasible", "none_beats_the_baseline"])
def test_a_search_that_recommends_no_plan_is_recorded_and_exports_nothing(tmp_path, traffic_cfg, outcome):
    """No feasible candidate, or none better than the baseline on held-out replications: the review still writes
    its record and audit entry, saying the baseline stays; approve and export refuse in one clear line and write
    nothing."""
    from types import SimpleNamespace

    from twins import ethics

    cfg = OmegaConf.create(OmegaConf.to_container(traffic_cfg))
    cfg.ethics.author = "alice"
    cfg.ethics.audit.log = str(tmp_path / "audit.jsonl")
    run = tmp_path / "search"
    run.mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    why = "no candidate was feasible while searching (8 evaluated): every one broke mean_delay_s[origin]"
    res = SimpleNamespace(best=None, pareto=None, summary={"evaluated": 8, "invalid": 0, "recommendation": "baseline",
                                                           "reason": why})
    if outcome == "none_beats_the_baseline":  # best_policy.json as the search writes it then
        why = "no candidate beats the baseline on held-out replications: the best (trial 3) changes mean_delay_s +1.8"
        res.best = {"trial": 3, "params": {"cycle_s": 90.0}, "recommendation": "baseline", "recommended_params": {},
                    "reason": why, "best_candidate": {"trial": 3, "effect": 1.8}}
        res.summary.update(reason=why)
    rec = ethics.review_search(cfg, run, res)
    assert rec is not None and rec["status"] == "blocked" and rec["policy"] is None
    gates = json.loads((run / "gates.json").read_text())
    assert [g["gate"] for g in gates] == ["recommendation", "approval", "audit"]
    assert gates[0]["status"] == "FAIL" and why in gates[0]["reason"] and "baseline" in gates[0]["reason"]
    log = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [x["action"] for x in log] == ["gates"] and log[0]["decision"]["gates"]["recommendation"] == "FAIL"
    shown = review.show(run)
    assert "no plan" in shown and why in shown
    with pytest.raises(ReviewError, match="nothing to approve"):
        review.approve(run, "Bob", "engineer")
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(ReviewError) as err:
        export.export(run, "sumo")
    assert str(err.value).startswith("export refused — nothing to export: the search recommends no plan")
    assert "\n" not in str(err.value) and sorted(p.name for p in run.rglob("*")) == before


# --- review.json is a readable copy: editing it unlocks nothing --------------------------------------
def edit_record(run, **changes):
    rec = json.loads((run / "review.json").read_text())
    for k, v in changes.items():
        rec[k] = v(rec) if callable(v) else v
    (run / "review.json").write_text(json.dumps(rec))


def test_edited_controls_do_not_lower_the_tier_requirements(make_run, good):
    good["tier"] = {"tier": "III", "score": 4, "points": {}, "floor": ""}
    good["controls"] = {"approvers": 2, "held_out_replications": 4, "signature": True}
    run = make_run(good)
    edit_record(run, controls={"approvers": 1, "held_out_replications": 4, "signature": False})
    with pytest.raises(ReviewError, match="review.json was edited: controls not as recorded"):
        review.approve(run, "Bob", "traffic safety officer")
    review.show(run)  # rewrites review.json from the log: the tier's controls are back
    assert json.loads((run / "review.json").read_text())["controls"]["signature"] is True
    with pytest.raises(ReviewError, match="tier III requires a signed approval"):
        review.approve(run, "Bob", "traffic safety officer")
    with pytest.raises(ReviewError, match="0 of 2 approver"):
        export.export(run)


def test_edited_author_does_not_let_the_author_approve(make_run):
    run = make_run()
    edit_record(run, author="zed")
    with pytest.raises(ReviewError, match="review.json was edited: author not as recorded"):
        review.approve(run, "alice", "engineer")
    review.show(run)
    with pytest.raises(ReviewError, match="author cannot approve their own run"):
        review.approve(run, "alice", "engineer")
    with pytest.raises(ReviewError, match="approval NEEDS_HUMAN"):
        export.export(run)


def test_a_rejection_cannot_be_hidden_by_editing_the_record(make_run):
    run = make_run()
    review.approve(run, "Bob", "traffic safety officer")
    review.reject(run, "the evidence covers weekdays only", "Carol", "planner")
    edit_record(run, audit=lambda r: {**r["audit"], "entries": [a for a in r["audit"]["entries"]
                                                                 if a["action"] != "reject"]},
                decisions=lambda r: [d for d in r["decisions"] if d["decision"] != "reject"],
                status="cleared")
    with pytest.raises(ReviewError, match="weekdays only"):
        export.export(run)
    assert "rejected" in review.show(run)


def test_a_rerun_in_the_same_folder_needs_a_new_approval(make_run, good):
    run = make_run()
    review.approve(run, "Bob", "traffic safety officer")
    cfg = OmegaConf.load(run / "config.yaml")
    good["policy"] = good["params"]["values"] = {"cycle_s": 70.0}
    review.create(cfg, run, good, "run")  # the same folder, new evidence: the log's earlier approval is not for it
    _, rec, reasons = review.trusted(run)
    assert not reasons and rec["status"] == "awaiting approval" and rec["decisions"] == []


def test_the_exported_policy_is_the_evidence_not_the_record(make_run):
    run = make_run()
    review.approve(run, "Bob", "traffic safety officer")
    edit_record(run, policy={"cycle_s": 24.0})
    with pytest.raises(ReviewError, match="review.json was edited: policy not as recorded"):
        export.export(run)
    review.show(run)
    pol = json.loads(export.export(run)[0].read_text())
    assert pol["policy"] == {"cycle_s": 60.0}


def test_evidence_and_record_edited_together_are_caught_by_the_logged_digest(make_run):
    run = make_run()
    review.approve(run, "Bob", "traffic safety officer")
    p = run / "evidence" / "evidence.json"
    p.write_text(p.read_text().replace('"cycle_s": 60.0', '"cycle_s": 24.0'))
    # a consistent forgery of the record: its file hashes and policy match the new evidence
    forged = hashlib.sha256(p.read_bytes()).hexdigest()
    edit_record(run, files=lambda r: {**r["files"], "evidence/evidence.json": forged}, policy={"cycle_s": 24.0})
    with pytest.raises(ReviewError, match=r"changed since its gates ran \(evidence/evidence.json\)"):
        export.export(run)


@needs_ssh
def test_keys_added_to_allowed_signers_after_the_gates_do_not_count(make_run, good, keys):
    bob, mallory, allowed = keys
    run = make_run(tier3(good), signing__allowed_signers=str(allowed))
    # Mallory lists her own key under Bob's name after the run
    pub = (mallory.parent / "mallory_key.pub").read_text().split(" ")
    with allowed.open("a") as f:
        f.write(f"Bob {pub[0]} {pub[1]}\n")
    with pytest.raises(ReviewError, match="allowed-signers file .* changed"):
        review.approve(run, "Bob", "traffic safety officer", key=mallory)
    with pytest.raises(ReviewError, match="changed"):
        export.export(run)


def test_records_are_strict_json_with_numbers(make_run, good):
    """NaN/inf become null and numpy scalars plain numbers (twins.core.io.write_json), in every record file."""
    import math

    import numpy as np

    good["network"][0].update(n=np.int64(4), ci_low=-math.inf, effect=np.float32(-7.0))
    good["stress"]["nominal"] = np.float64(-7.0)
    run = make_run(good)

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in a record file"))

    ev = strict((run / "evidence" / "evidence.json").read_text())
    assert ev["network"][0]["n"] == 4 and ev["network"][0]["ci_low"] is None and ev["network"][0]["effect"] == -7.0
    rec = strict((run / "review.json").read_text())
    assert rec["effects"]["network"][0]["n"] == 4
    strict((run / "gates.json").read_text())
    review.approve(run, "Bob", "traffic safety officer")  # the digest of what was written still verifies
    assert strict(export.export(run)[0].read_text())["held_out_effects"]["network"][0]["n"] == 4
