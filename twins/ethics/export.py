"""Guarded export: a run's policy leaves the sandbox only when every gate passed and the approval is valid.

The decision is rebuilt from the audit log (:func:`twins.ethics.review.blockers`), never from the
editable ``review.json``. On refusal nothing is written. ``json`` writes ``policy.json`` (the
recommendation, its held-out effects and the review record); ``sumo`` adds a SUMO additional file
of ``<tlLogic>`` programs for the recommended signal plan.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .review import ReviewError, blockers, write_json

FORMATS = ("json", "sumo")
LABEL = ("RECOMMENDATION from a digital-twin sandbox, cleared by its ethics review; not an instruction. "
         "Check it against the real site before acting.")


def export(run, fmt: str = "json", out: str | Path | None = None) -> list[Path]:
    if fmt not in FORMATS:
        raise ReviewError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    run, record, reasons = blockers(run)
    none = [g for g in record["gates"] if g["gate"] == "recommendation" and g["status"] != "PASS"]
    if none:  # a search that recommends no plan: one line, whatever else is pending
        integrity = [r for r in reasons if not r.startswith(tuple(g["gate"] + " " for g in record["gates"]))]
        raise ReviewError("export refused — " + "; ".join(integrity + [f"nothing to export: {none[0]['reason']}"]))
    if reasons:
        raise ReviewError("export refused — " + (f"{len(reasons)} reason(s):\n  - " if len(reasons) > 1 else "")
                          + "\n  - ".join(reasons))
    target = Path(out) if out else run / "export"
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=run))
    try:
        written = [_policy_json(record, tmp / "policy.json")]
        if fmt == "sumo":
            written.append(_tllogic(run, record, tmp / "recommended.tll.xml"))
        target.mkdir(parents=True, exist_ok=True)
        final = []
        for p in written:
            dest = target / p.name
            shutil.move(str(p), dest)
            final.append(dest)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _policy_json(record: dict, path: Path) -> Path:
    write_json(path, {"recommendation": True, "label": LABEL, "scenario": record["scenario"],
                      "intervention": record["intervention"], "policy": record["policy"],
                      "held_out_effects": record["effects"], "review": record})
    return path


def _tllogic(run: Path, record: dict, path: Path) -> Path:
    """The recommended plan's signal programs: the scenario's programs with the policy's phase durations and
    offsets (from the intervention itself, applied to a one-world twin of the run's config)."""
    from omegaconf import OmegaConf

    from interventions.transfer import NoSignalPlan, signal_plan  # shared with python -m twins transfer
    from twins.traffic.sumo import write_tllogic

    cfg = OmegaConf.load(run / "config.yaml")
    try:
        progs = signal_plan(cfg, dict(record["policy"] or {}), program_id="twins-recommended")
    except NoSignalPlan as e:
        if "no signal programs" in str(e):
            raise ReviewError("--format sumo needs a traffic scenario with signal programs; use --format json") \
                from None
        raise ReviewError(f"{e}, so there is no tlLogic to export; use --format json") from None
    write_tllogic(progs, path, program_id="twins-recommended")
    approvers = ", ".join(f"{d['reviewer']} ({d['role']})" for d in record["decisions"] if d["decision"] == "approve")
    body = (f"{LABEL} Run {record['run']}; policy {record['label']}; review status {record['status']}; approved by "
            f"{approvers}; evidence digest {record['evidence_digest']}; the full review record is in policy.json")
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.insert(1, "<!-- " + body.replace("--", "- -") + " -->")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
