"""The audit log: append-only JSON lines, each entry chained to the previous one by its hash.

Every entry holds ``seq`` (1, 2, ...), ``prev`` (the previous entry's ``hash``; ``GENESIS``
for the first) and ``hash`` = SHA-256 of the entry's canonical JSON without ``hash``. Editing
an entry breaks its own hash; deleting, inserting or reordering entries breaks the ``prev``
links or the ``seq`` order (``seq`` must go up by one along the chain, so a deletion is found even when
the hashes after it were recomputed), and :func:`verify` names the line. (Cutting entries off the
*end* leaves a valid shorter chain; a run's ``review.json`` keeps the hashes of its own
entries, and :func:`check_anchors` finds them missing.)
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import sha256

GENESIS = "0" * 64


def default_log() -> Path:
    """``$TWINS_AUDIT_LOG`` if set (one log for a lab's runs; the test suite points it at a temp file),
    else ``outputs/audit.jsonl`` under the working directory, beside Hydra's run folders."""
    env = os.environ.get("TWINS_AUDIT_LOG")
    return Path(env) if env else Path.cwd() / "outputs" / "audit.jsonl"


def log_path(e) -> Path:
    """The log named by the ethics config (``audit.log``), as an absolute path."""
    p = (e.get("audit") or {}).get("log") if e is not None else None
    return (Path(p).expanduser() if p else default_log()).resolve()


def entry_hash(entry: dict) -> str:
    return sha256({k: v for k, v in entry.items() if k != "hash"})


def _last(path: Path) -> dict | None:
    last = None
    if path.exists():
        with path.open("r", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    last = line
    return json.loads(last) if last else None


def append(path, record: dict) -> dict:
    """Append ``record`` (action, run, config hash, git revision, seeds, evidence digest, decision) as the
    next entry of the chain; returns the entry as written. A file lock keeps concurrent runs in order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            last = _last(path)
            entry = {"seq": (int(last["seq"]) + 1) if last else 1,
                     "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     **record,
                     "prev": last["hash"] if last else GENESIS}
            entry["hash"] = entry_hash(entry)
            f.seek(0, 2)
            f.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    return entry


@dataclass
class Verification:
    path: Path
    entries: int = 0
    problems: list[str] = field(default_factory=list)
    missing: bool = False  # no file at path: nothing to verify, which is not the same as a tampered log

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.missing:
            return (f"audit log {self.path}: MISSING (no such file). A log is created by the first run with an "
                    "intervention (its folder's review.json names it); pass that path: "
                    "python -m twins review verify PATH")
        if self.ok:
            return f"audit log {self.path}: OK, {self.entries} entries, chain intact"
        return f"audit log {self.path}: TAMPERED ({len(self.problems)} problem(s))\n" + "\n".join(
            f"  - {p}" for p in self.problems)


def verify(path) -> Verification:
    """Check every entry's hash and rebuild the chain from its ``prev`` links; name each line that was
    edited, deleted, inserted or reordered."""
    path = Path(path)
    v = Verification(path)
    if not path.exists():
        v.problems.append(f"{path}: no such audit log")
        v.missing = True
        return v
    entries: dict[int, dict] = {}
    for i, ln in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not ln.strip():
            v.problems.append(f"line {i}: blank line inserted")
            continue
        try:
            e = json.loads(ln)
            if not (isinstance(e, dict) and {"hash", "prev", "seq"} <= set(e)) or type(e["seq"]) is not int:
                raise ValueError
        except ValueError:
            v.problems.append(f"line {i}: edited (not a valid audit entry)")
            continue
        entries[i] = e
        if entry_hash(e) != e["hash"]:
            v.problems.append(f"line {i}: edited (seq {e['seq']}: its content does not match its hash)")
    v.entries = len(entries)
    by_hash = {e["hash"]: i for i, e in entries.items()}
    children: dict[str, list[int]] = {}
    for i, e in entries.items():
        children.setdefault(e["prev"], []).append(i)

    depth_memo: dict[int, int] = {}

    def depth(i: int) -> int:  # longest chain that continues from line i
        if i not in depth_memo:
            depth_memo[i] = 0  # guards against a cycle made by hand
            kids = children.get(entries[i]["hash"], [])
            depth_memo[i] = 1 + max((depth(k) for k in kids if k != i), default=0)
        return depth_memo[i]

    order: list[int] = []
    used: set[int] = set()
    cur = GENESIS
    while True:
        cands = [c for c in children.get(cur, []) if c not in used]
        if cands:
            cands.sort(key=lambda c: (-depth(c), c))
            if len(cands) > 1 and depth(cands[0]) == depth(cands[1]):
                after = f"line {by_hash[cur]}" if cur in by_hash else "the start of the log"
                v.problems.append(f"lines {cands[0]} and {cands[1]} both claim to follow {after}: one of them was "
                                  "inserted")
            nxt = cands[0]
            # a link whose seq skips: entries were deleted and the hashes after them recomputed
            last_seq, seq = (entries[order[-1]]["seq"] if order else 0), entries[nxt]["seq"]
            if seq > last_seq + 1:
                gap = ", ".join(map(str, range(last_seq + 1, seq)))
                v.problems.append(f"line {nxt}: {seq - last_seq - 1} entr{'y' if seq - last_seq == 2 else 'ies'} "
                                  f"deleted before it (seq {gap} missing; the hashes after the gap were recomputed)")
            elif seq != last_seq + 1:
                v.problems.append(f"line {nxt}: edited (seq {seq} follows seq {last_seq} in the chain; expected "
                                  f"seq {last_seq + 1})")
        else:
            # the chain breaks: resume at an entry whose predecessor is not in the log
            rest = sorted((i for i in entries if i not in used and entries[i]["prev"] not in by_hash
                           and entries[i]["prev"] != GENESIS), key=lambda i: (entries[i]["seq"], i))
            last_seq = entries[order[-1]]["seq"] if order else 0
            rest = [i for i in rest if entries[i]["seq"] > last_seq]
            if not rest:
                break
            nxt = rest[0]
            gap = list(range(last_seq + 1, int(entries[nxt]["seq"])))
            if gap:
                v.problems.append(f"line {nxt}: {len(gap)} entr{'y' if len(gap) == 1 else 'ies'} deleted before "
                                  f"it (seq {', '.join(map(str, gap))} missing)")
            elif order:
                v.problems.append(f"line {order[-1]}: edited (seq {entries[order[-1]]['seq']}: its hash was "
                                  f"recomputed; line {nxt} still links to the original)")
        order.append(nxt)
        used.add(nxt)
        cur = entries[nxt]["hash"]
    for i in sorted(set(entries) - used):
        v.problems.append(f"line {i}: inserted (seq {entries[i]['seq']} is not part of the hash chain)")
    for a, b in zip(order, order[1:]):
        if b < a:
            v.problems.append(f"lines {b} and {a}: reordered (seq {entries[a]['seq']} at line {a} must come "
                              f"before seq {entries[b]['seq']} at line {b})")
    return v


def check_anchors(path, anchors: list[dict]) -> list[str]:
    """``anchors``: ``{seq, hash}`` of entries a run recorded; the ones not in the log as recorded."""
    path = Path(path)
    present = {}
    if path.exists():
        for ln in path.read_text(encoding="utf-8").splitlines():
            try:
                e = json.loads(ln)
                present[e.get("hash")] = e.get("seq")
            except ValueError:
                continue
    return [f"entry seq {a['seq']} ({a['action']}) recorded by the run is missing from {path}"
            for a in anchors if a["hash"] not in present]
