"""The evidence digest: which files of a run folder the review covers, their hashes, and the digest over them and
the evidence record (``evidence/evidence.json``). An approval is bound to this digest; any later edit of a covered
file changes it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .config import sha256

# The evidence digest covers every file a reader of the run uses, as it is when the gates run (the run or
# search has written everything by then, manifest.json included): the top-level tables (*.parquet), JSON
# records (metrics, effects, arms, manifest, best_policy, ...) and config.yaml, and everything under
# evidence/ and figures/. Not covered: the review's own files (rewritten by approve/reject/show), Hydra's
# .hydra/ and the log, export/, Optuna's study.db, and files added after the gates ran (e.g. a later
# transfer's outputs): a reader can trust exactly the files the audit log lists, so an edit or deletion of
# one of them blocks export, naming it.
REVIEW_FILES = frozenset({"review.json", "review.md", "gates.json"})
COVERED_DIRS = ("evidence", "figures")


def covered_files(run: Path) -> list[str]:
    """The run files the evidence digest covers (paths relative to ``run``)."""
    names = [p.name for p in sorted(run.iterdir()) if p.is_file() and p.name not in REVIEW_FILES
             and (p.suffix in (".parquet", ".json") or p.name == "config.yaml")]
    for d in COVERED_DIRS:
        if (run / d).is_dir():
            names += sorted(p.relative_to(run).as_posix() for p in (run / d).rglob("*") if p.is_file())
    return names


def file_hashes(run: Path, names=None) -> dict:
    """sha256 of each covered file (``names``: those the audit log lists; None: :func:`covered_files`);
    None for a listed file that is gone."""
    out = {}
    for n in (covered_files(run) if names is None else names):
        try:
            out[n] = hashlib.sha256((run / n).read_bytes()).hexdigest()
        except OSError:
            out[n] = None
    return out


def evidence_digest(ev: dict, files: dict) -> str:
    """``ev`` as read back from ``evidence.json`` (:func:`read_evidence`), and the run files' hashes."""
    return sha256({"evidence": ev, "files": files})


def read_evidence(run: Path, names=None) -> tuple[dict | None, dict, str | None]:
    """``(evidence, file hashes, digest)`` from the files on disk (``names``: the files to hash, as the audit
    log lists them; None: every covered file); evidence and digest are None when ``evidence/evidence.json``
    is missing or unreadable."""
    files = file_hashes(run, names)
    try:
        ev = json.loads((run / "evidence" / "evidence.json").read_text())
    except (OSError, ValueError):
        return None, files, None
    return ev, files, evidence_digest(ev, files)


def file_sha256(path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    except OSError:
        return None
