"""Review records: ``gates.json``, ``review.json``, ``review.md`` in a run folder, and the human decisions.

The audit log is the source of truth; ``review.json`` is the readable copy. Every action
(``gates``, ``approve``, ``reject``) appends one audit entry holding the run's config hash, git
revision, seeds, the evidence digest and the decision; the ``gates`` entry also holds what the
approval depends on (author, tier, controls, allowed-signers file and its hash, the run files'
hashes). ``review.json`` keeps the hashes of its entries (anchors) so a run can tell when its
entries were cut from the end of the log.

:func:`trusted` (used by approve, reject, show and export) rebuilds the record from the log and
from ``evidence/evidence.json`` after recomputing the evidence digest from the files on disk:
nothing it decides on is read from the editable ``review.json``.

``gates.json`` is a list of ``{gate, status, reason, evidence, hard}``; ``review.json`` holds the
objective provenance (with the objective's hash), tier, required controls, gates, decisions, audit
anchors and the status (``blocked`` | ``awaiting approval`` | ``rejected`` | ``cleared``).

What the evidence digest covers is :mod:`.digest`; how a record reads (``review.md``, the console) is
:mod:`.render`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import OmegaConf

from . import audit, gates, render, signing
from .digest import file_sha256, read_evidence
from .config import as_config, author_of, canonical, config_hash, same_person

# the signing settings the gates entry fixes for the run
SIGNING = ("allowed_signers", "allowed_signers_sha256", "namespace")
class ReviewError(Exception):
    """A refused review action, with what to do instead."""


def write_json(path: Path, obj) -> None:
    """:func:`twins.core.io.write_json` (NaN as null, numpy scalars as numbers), imported on first use so the
    review commands start without loading torch."""
    from twins.core import io

    io.write_json(path, obj)


def _content(ev: dict) -> dict:
    """The record's fields taken from the evidence: what is recommended, and on what grounds."""
    prov = ev.get("provenance") or {}
    return {"scenario": ev.get("scenario"), "intervention": ev.get("intervention"), "policy": ev.get("policy"),
            "label": ev.get("label"),
            "objective": {"provenance": {k: v for k, v in prov.items() if k not in ("objective", "objective_hash")},
                          "spec": prov.get("objective"), "hash": prov.get("objective_hash")},
            "tier": ev.get("tier"), "controls": ev.get("controls"), "credibility": ev.get("credibility"),
            "effects": {"network": ev.get("network"), "groups": ev.get("groups")}, "search": ev.get("search")}


# --- creating the record (called from the run / search task) -----------------------------------------
def create(cfg, outdir, ev: dict, source: str) -> dict:
    """Evaluate the gates on ``ev``, append the ``gates`` audit entry and write the record files."""
    from twins.core import io

    run = Path(outdir).resolve()
    e = as_config(cfg.get("ethics"))
    (run / "evidence").mkdir(parents=True, exist_ok=True)
    write_json(run / "evidence" / "evidence.json", ev)
    ev, files, digest = read_evidence(run)  # the gates judge exactly what was written and digested
    results = gates.evaluate(ev, e)
    log = audit.log_path(e)
    signers = str(Path(e.signing.allowed_signers).expanduser().resolve()) if e.signing.allowed_signers else None
    record = {
        "run": str(run),
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "author": author_of(e),
        **_content(ev),
        "config_hash": config_hash(cfg),
        "git_revision": io.git_revision(),
        "seeds": {"seed": int(cfg.seed), "held_out": ev.get("held_out"),
                  **({"search": [0, int(cfg.replications)]} if source == "search" else
                     {"run": [0, int(cfg.replications)]})},
        "impact": OmegaConf.to_container(e.impact, resolve=True),
        "ethics": {"name": str(e.name), "allowed_signers": signers, "allowed_signers_sha256": file_sha256(signers),
                   "namespace": str(e.signing.namespace), "log": str(log)},
        "evidence_digest": digest,
        "files": files,
        "evidence_gates": results,
        "decisions": [],
        "audit": {"log": str(log), "entries": []},
    }
    # what the approval and export depend on, beyond the evidence digest: logged, so review.json cannot change it
    trust = {**{k: record[k] for k in ("source", "author", "tier", "controls", "files")},
             **{k: record["ethics"][k] for k in SIGNING}}
    entry = audit.append(log, {**_entry(record, "gates", {"gates": {g["gate"]: g["status"] for g in results}}),
                               "review": trust})
    record["audit"]["entries"].append({"seq": entry["seq"], "hash": entry["hash"], "action": "gates"})
    save(run, refresh(record))
    return record


def _entry(record: dict, action: str, decision: dict) -> dict:
    return {"action": action, "run": record["run"], "config_hash": record["config_hash"],
            "git_revision": record["git_revision"], "seeds": record["seeds"],
            "evidence_digest": record["evidence_digest"], "decision": decision}


# --- loading, refreshing, saving ----------------------------------------------------------------------
def load(run) -> tuple[Path, dict]:
    run = Path(run).resolve()
    p = run / "review.json"
    if not run.is_dir():
        raise ReviewError(f"{run}: no such run folder")
    if not p.exists():
        raise ReviewError(f"{run} has no review.json: gates run with an intervention (python -m twins run ... "
                          "intervention=NAME) or a search (python -m twins search ...); this folder has neither")
    try:
        record = json.loads(p.read_text())
        anchors = record["audit"]["entries"]
        str(record["audit"]["log"])
        if not all(isinstance(a["hash"], str) and isinstance(a["seq"], int) and a["action"] for a in anchors):
            raise TypeError
    except (ValueError, KeyError, TypeError) as err:
        raise ReviewError(f"{p} is damaged ({type(err).__name__}: {err}): it needs audit.log and audit.entries "
                          "[{seq, hash, action}]; rerun the experiment") from None
    return run, record


def log_entries(log, run_id: str) -> list[dict]:
    """Every entry of run ``run_id`` (its resolved folder) in the audit log, in log order: chosen by the
    log's own ``run`` field, so an entry dropped from ``review.json`` still counts."""
    path = Path(log)
    out = []
    if path.exists():
        for ln in path.read_text(encoding="utf-8").splitlines():
            try:
                e = json.loads(ln)
            except ValueError:
                continue
            if isinstance(e, dict) and e.get("run") == run_id:
                out.append(e)
    return out


def audit_problems(record: dict) -> list[str]:
    path = record["audit"]["log"]
    v = audit.verify(path)
    return v.problems + audit.check_anchors(path, record["audit"]["entries"])


def refresh(record: dict) -> dict:
    """Recompute the approval and audit gates and the status from the decisions and the log."""
    problems = audit_problems(record)
    all_gates = list(record["evidence_gates"]) + [
        gates.approval(record["decisions"], record["controls"] or {}, record["author"]),
        gates.audit(problems, record["audit"]["log"])]
    record["gates"] = all_gates
    failed = [g["gate"] for g in all_gates if g["status"] == gates.FAIL]
    pending = [g["gate"] for g in all_gates if g["status"] == gates.NEEDS_HUMAN]
    if any(d.get("decision") == "reject" for d in record["decisions"]):
        record["status"] = "rejected"
    elif failed:
        record["status"] = "blocked"
    elif pending:
        record["status"] = "awaiting approval" if pending == ["approval"] else "needs human judgement"
    else:
        record["status"] = "cleared"
    return record


def save(run: Path, record: dict) -> None:
    write_json(run / "gates.json", record["gates"])
    write_json(run / "review.json", record)
    (run / "review.md").write_text(render.markdown(record))


# --- human decisions ---------------------------------------------------------------------------------
def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover
        return "unknown"


def approval_payload(record: dict, reviewer: str, role: str, when: str) -> bytes:
    return canonical({"run": record["run"], "evidence_digest": record["evidence_digest"],
                      "config_hash": record["config_hash"], "reviewer": reviewer, "role": role,
                      "decision": "approve", "time": when})


def approve(run, reviewer: str, role: str, key: str | None = None) -> dict:
    reviewer, role = " ".join(str(reviewer).split()), " ".join(str(role or "").split())
    if not reviewer:
        raise ReviewError("--reviewer: a name is required")
    if not role:
        raise ReviewError("--role: the reviewer's role is required (e.g. 'traffic safety officer')")
    run, record, problems = trusted(run)  # decide on what the audit log says, not on review.json
    if problems:
        raise ReviewError("cannot approve: " + "; ".join(problems))
    if same_person(reviewer, record["author"]):
        raise ReviewError(f"{reviewer!r} is the author of this run: the author cannot approve their own run. "
                          "Ask another person to review it")
    if record["status"] == "rejected":
        raise ReviewError("this run was rejected; a rejected run cannot be approved (rerun it)")
    if any(g["gate"] == "ethics" for g in record["evidence_gates"]):
        raise ReviewError("this run has no ethics evidence to approve (see its 'ethics' gate). Rerun it with "
                          "ethics=traffic or ethics=drug")
    failed = [g for g in record["gates"] if g["status"] == gates.FAIL and g["gate"] != "approval"]
    if failed:
        raise ReviewError("gates failed, there is nothing to approve: " + "; ".join(
            f"{g['gate']}: {g['reason']}" for g in failed))
    if any(d.get("decision") == "approve" and same_person(d["reviewer"], reviewer) for d in record["decisions"]):
        raise ReviewError(f"{reviewer!r} has already approved this run; approvals must come from different people")
    controls = record["controls"] or {}
    if controls.get("signature") and not key:
        raise ReviewError(f"tier {record['tier']['tier']} requires a signed approval: add --sign "
                          "PATH/TO/PRIVATE_KEY (a key listed for you in the allowed-signers file)")
    if not key and same_person(_os_user(), record["author"]):
        raise ReviewError(f"you are logged in as the run's author {record['author']!r}: an approval from the "
                          "author's account must be signed (--sign KEY) with the reviewer's own key")
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    decision = {"decision": "approve", "reviewer": reviewer, "role": role, "os_user": _os_user(), "time": when,
                "signed": bool(key), "valid": True}
    if key:
        payload = approval_payload(record, reviewer, role, when)
        try:
            sig = signing.sign(payload, key, record["ethics"]["namespace"])
        except signing.SignatureError as err:
            raise ReviewError(str(err)) from None
        ok, why = signing.verify(payload, sig, reviewer, record["ethics"]["allowed_signers"],
                                 record["ethics"]["namespace"])
        if not ok:
            raise ReviewError(f"approval refused: {why}. The key must be listed for principal {reviewer!r} in "
                              "the allowed-signers file named by ethics.signing.allowed_signers")
        decision.update(signature=sig, verified=why)
    return _decide(run, record, "approve", decision)


def reject(run, reason: str, reviewer: str | None = None, role: str | None = None) -> dict:
    run, record, _ = trusted(run)  # a rejection is always recorded, even on a damaged record
    if not str(reason or "").strip():
        raise ReviewError("--reason: say why the run is rejected")
    decision = {"decision": "reject", "reviewer": reviewer or _os_user(), "role": role or "",
                "os_user": _os_user(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reason": reason}
    return _decide(run, record, "reject", decision)


def _decide(run: Path, record: dict, action: str, decision: dict) -> dict:
    entry = audit.append(record["audit"]["log"], _entry(record, action, decision))
    record["audit"]["entries"].append({"seq": entry["seq"], "hash": entry["hash"], "action": action})
    record["decisions"].append(decision)
    save(run, refresh(record))
    return record


# --- the trusted view: from the audit log ------------------------------------------------------------
def trusted(run) -> tuple[Path, dict, list[str]]:
    """The record rebuilt from the audit log and the digest-checked evidence (``review.json`` supplies only
    display text and its anchors), and the integrity problems found on the way (broken log, changed run
    files, edited record, changed allowed-signers file, signature that no longer verifies)."""
    run, shown = load(run)
    record = {**json.loads(json.dumps(shown)), "run": str(run)}
    log = shown["audit"]["log"]
    reasons = []
    problems = audit_problems(shown)
    if problems:
        reasons.append("the audit log is not intact: " + "; ".join(problems[:3])
                       + f". Check it with: python -m twins review verify {log}")
    entries = log_entries(log, record["run"])  # by run id: an entry dropped from review.json still counts
    last = max((k for k, x in enumerate(entries) if x.get("action") == "gates"), default=None)
    if last is None:
        reasons.append(f"no gates entry for run {record['run']} in the audit log {log} (a moved run folder, or a "
                       "damaged log): rerun the experiment")
        return run, refresh(record), reasons
    g = entries[last]
    reasons += _from_log(run, record, shown, g)
    reasons += _decisions(record, g, entries[last + 1:])
    anchors = {a["hash"]: a for a in shown["audit"]["entries"]}  # keep the record's own: a missing one is reported
    for x in entries[last:]:
        anchors.setdefault(x["hash"], {"seq": x["seq"], "hash": x["hash"], "action": x["action"]})
    record["audit"] = {**record["audit"], "entries": sorted(anchors.values(), key=lambda a: a["seq"])}
    refresh(record)
    return run, record, reasons


def _from_log(run: Path, record: dict, shown: dict, g: dict) -> list[str]:
    """Overwrite ``record`` with what the gates entry ``g`` logged and what the evidence whose digest it logged
    says; the reasons not to trust the run."""
    reasons = []
    t = g.get("review")
    if not isinstance(t, dict):
        reasons.append("this run's gates entry was logged by an older twins, without the review's controls: "
                       "rerun the experiment")
        t = {}
    logged = t.get("files") if isinstance(t.get("files"), dict) else None
    # the files the gates entry hashed, and only those: a file added later (transfer output) is not trusted,
    # and does not block the ones that were
    ev, files, digest = read_evidence(run, list(logged) if logged is not None else None)
    if digest is None or digest != g.get("evidence_digest"):
        logged = logged or {}
        changed = sorted(k for k in set(files) | set(logged) if files.get(k) != logged.get(k))
        reasons.append(f"the run folder changed since its gates ran ({', '.join(changed) or 'evidence'}): the "
                       "evidence no longer matches the digest in the audit log; rerun the experiment")
    else:
        record.update(_content(ev))
    record.update({k: g.get(k) for k in ("config_hash", "git_revision", "seeds", "evidence_digest")},
                  **{k: t[k] for k in ("source", "author", "tier", "controls", "files") if k in t})
    record["ethics"] = {**(shown.get("ethics") or {}), **{k: t[k] for k in SIGNING if k in t}}
    logged_gates = (g.get("decision") or {}).get("gates") or {}
    mine = {x["gate"]: x for x in shown.get("evidence_gates") or [] if isinstance(x, dict) and "gate" in x}
    record["evidence_gates"] = [
        {**mine[name], "status": status} if mine.get(name, {}).get("status") == status else
        gates.result(name, status, f"{status} in the audit log (review.json was edited)")
        for name, status in logged_gates.items()]
    edited = [k for k in ("run", "author", "tier", "controls", "config_hash", "evidence_digest", "policy",
                          "label", "scenario", "intervention", "effects", "credibility")
              if shown.get(k) != record.get(k)]
    edited += [f"ethics.{k}" for k in SIGNING if (shown.get("ethics") or {}).get(k) != record["ethics"].get(k)]
    if {k: x.get("status") for k, x in mine.items()} != logged_gates:
        edited.append("gates")
    if edited:
        reasons.append(f"review.json was edited: {', '.join(edited)} not as recorded in the audit log and the "
                       "evidence (the recorded values are used; `review show` rewrites review.json from them)")
    return reasons


def _decisions(record: dict, g: dict, later: list[dict]) -> list[str]:
    """``record['decisions']`` from the run's entries logged after its gates entry ``g``: every rejection, and
    the approvals of the same evidence with their signatures re-verified; the reasons not to trust them."""
    reasons = []
    ctrl = record["controls"] or {}
    signers, ns = record["ethics"].get("allowed_signers"), record["ethics"].get("namespace")
    later = [x for x in later if x.get("action") == "reject" or (
        x.get("action") == "approve" and x.get("evidence_digest") == g.get("evidence_digest"))]
    if (ctrl.get("signature") or any(x["decision"].get("signed") for x in later)) and signers \
            and file_sha256(signers) != record["ethics"].get("allowed_signers_sha256"):
        reasons.append(f"the allowed-signers file {signers} changed (or is gone) since the gates ran: only the "
                       "keys listed when a run's gates ran count for it; restore the file or rerun the experiment")
    decisions = []
    for x in later:
        d = dict(x["decision"])
        if d.get("decision") == "approve" and d.get("signed"):
            ok, why = signing.verify(approval_payload(record, d["reviewer"], d["role"], d["time"]),
                                     d.get("signature", ""), d["reviewer"], signers, ns)
            d["valid"] = ok
            if not ok:
                reasons.append(f"the signature of {d['reviewer']}'s approval no longer verifies: {why}")
        elif d.get("decision") == "approve":
            d["valid"] = not ctrl.get("signature")
        decisions.append(d)
    record["decisions"] = decisions
    return reasons


def blockers(run) -> tuple[Path, dict, list[str]]:
    """Every reason the run may not leave the sandbox: integrity problems, then each gate that did not pass."""
    run, record, reasons = trusted(run)
    reasons += [f"{g['gate']} {g['status']}: {g['reason']}" for g in record["gates"] if g["status"] != gates.PASS]
    return run, record, reasons


# --- text ---------------------------------------------------------------------------------------------
def show(run) -> str:
    run, record, _ = trusted(run)
    save(run, record)
    return render.text(record) + f"\n\nwrote {run / 'review.md'}"
