"""How a review record reads: ``review.md`` (Markdown, written next to ``review.json``) and the console text of
``python -m twins review show``. Reads the record; decides nothing."""
from __future__ import annotations

import json
import math

def _num(x, fmt="{:+.4g}") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def markdown(record: dict) -> str:
    p = record["objective"]["provenance"] or {}
    owner = p.get("owner") or {}
    spec = record["objective"].get("spec") or {}
    t = record.get("tier") or {}
    c = record.get("controls") or {}
    L = [f"# Ethics review: {record.get('scenario')} / {record.get('label')}", "",
         f"**Status: {record['status'].upper()}** — run `{record['run']}` ({record['source']}), author "
         f"{record['author']}, git {record['git_revision']}, config hash `{record['config_hash'][:16]}`", "",
         "This is a recommendation produced in a sandbox, not an instruction to act.", "",
         "## Objective and who defined it", "",
         f"- owner: {owner.get('name') or '(not declared)'} — {owner.get('role') or '?'}, "
         f"{owner.get('organisation') or '?'}",
         f"- stakeholders consulted: {', '.join(p.get('stakeholders') or []) or '(none declared)'}",
         f"- rationale: {p.get('rationale') or '(none)'}",
         f"- agreed on: {p.get('date') or '(no date)'}",
         "- objectives: " + (", ".join(f"{o['direction']} {o['metric']} (weight "
                                       f"{spec.get('weights', {}).get(o['metric'], 1):g})"
                                       for o in spec.get("objectives", [])) or "(none)"),
         "- constraints: " + (", ".join(json.dumps(x) for x in spec.get("constraints", [])) or "(none)"),
         f"- gates judge the policy on: {(spec.get('judged_on') or {}).get('direction', '')} "
         f"{(spec.get('judged_on') or {}).get('metric', '')}",
         f"- objective hash: `{record['objective'].get('hash')}`", "",
         "## Impact tier and required controls", "",
         f"Tier **{t.get('tier')}** (score {t.get('score')}: "
         + ", ".join(f"{k} {v}" for k, v in (t.get('points') or {}).items()) + ")"
         + (f"; {t['floor']}" if t.get("floor") else "") + ".",
         f"Required: {c.get('approvers')} approver(s) other than the author, {c.get('held_out_replications')} held-out "
         f"replications, signature {'required' if c.get('signature') else 'not required'}.", "",
         "## Policy", "", "```", json.dumps(record.get("policy"), indent=2), "```", "",
         "## Trade-offs (held-out effects, policy − baseline, 95% paired interval)", "",
         "| metric | baseline | policy | effect | 95% CI | n |", "| --- | --- | --- | --- | --- | --- |"]
    for r in (record["effects"].get("network") or []):
        L.append(f"| {r['metric']} | {_num(r.get('baseline_mean'), '{:.4g}')} | "
                 f"{_num(r.get('treated_mean'), '{:.4g}')} "
                 f"| {_num(r.get('effect'))} | [{_num(r.get('ci_low'))}, {_num(r.get('ci_high'))}] | {r.get('n')} |")
    front = (record.get("search") or {}).get("pareto") or []
    if front:
        cols = list(front[0])
        L += ["", f"Pareto front of the search ({len(front)} point(s); search estimates, and confirmed on held-out "
              f"replications; the recommended policy is trial {record['search'].get('trial')}):", "",
              "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
        for r in front:
            L.append("| " + " | ".join(_num(r[c], "{:.4g}") if isinstance(r[c], float) else str(r[c])
                                       for c in cols) + " |")
    groups = record["effects"].get("groups") or []
    if groups:
        L += ["", "## Per-group effects", "", "| group | metric | baseline | effect | 95% CI |",
              "| --- | --- | --- | --- | --- |"]
        for r in groups:
            L.append(f"| {r['group_kind']}: {r['group']} | {r['metric']} | {_num(r.get('baseline_mean'), '{:.4g}')} | "
                     f"{_num(r.get('effect'))} | [{_num(r.get('ci_low'))}, {_num(r.get('ci_high'))}] |")
    L += ["", "## Gates", "", "| gate | status | hard | reason |", "| --- | --- | --- | --- |"]
    for g in record["gates"]:
        L.append(f"| {g['gate']} | **{g['status']}** | {'yes' if g['hard'] else ''} | "
                 f"{str(g['reason']).replace('|', '/')} |")
    L += ["", "## Decisions", ""]
    if not record["decisions"]:
        L.append("(none yet)")
    for d in record["decisions"]:
        L.append(f"- {d['time']}: **{d['decision']}** by {d['reviewer']} ({d.get('role') or '-'}; OS user "
                 f"{d.get('os_user')})" + (" — signed" if d.get("signed") else "")
                 + (f" — reason: {d['reason']}" if d.get("reason") else ""))
    L += ["", "## Audit", "", f"Log `{record['audit']['log']}`; this run's entries: "
          + ", ".join(f"seq {a['seq']} ({a['action']}, `{a['hash'][:12]}`)" for a in record["audit"]["entries"]),
          f"Evidence digest `{record['evidence_digest']}`.", ""]
    return "\n".join(L)


def text(record: dict) -> str:
    """The terminal summary of ``review show``."""
    p = record["objective"]["provenance"] or {}
    owner = p.get("owner") or {}
    t = record.get("tier") or {}
    L = [f"run      {record['run']}", f"status   {record['status']}",
         f"policy   {record.get('label')}",
         f"owner    {owner.get('name') or '(not declared)'} ({owner.get('role') or '?'}, "
         f"{owner.get('organisation') or '?'}); author {record['author']}",
         f"tier     {t.get('tier')} — needs {(record.get('controls') or {}).get('approvers', 1)} approver(s)"
         + (", signed" if (record.get("controls") or {}).get("signature") else ""), "", "held-out effects (policy − baseline):"]
    for r in (record["effects"].get("network") or []):
        L.append(f"  {r['metric']:<32} {_num(r.get('effect')):>10}  "
                 f"[{_num(r.get('ci_low'))}, {_num(r.get('ci_high'))}]")
    groups = record["effects"].get("groups") or []
    if groups:
        L.append(f"per-group effects: {len(groups)} rows (see review.md)")
    L += ["", "gates:"]
    for g in record["gates"]:
        L.append(f"  {g['status']:<11} {g['gate']:<28} {g['reason']}")
    if record["decisions"]:
        L += ["", "decisions:"] + [f"  {d['time']} {d['decision']} by {d['reviewer']} ({d.get('role') or '-'})"
                                   + (" [signed]" if d.get("signed") else "") for d in record["decisions"]]
    return "\n".join(L)
