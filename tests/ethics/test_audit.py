"""The audit log: one edited, deleted, reordered or inserted line is detected and named."""
import json
import os
import subprocess
import sys

import pytest

from twins.ethics import audit


@pytest.fixture
def log(tmp_path):
    p = tmp_path / "audit.jsonl"
    for k in range(6):
        audit.append(p, {"action": "gates" if k % 2 == 0 else "approve", "run": f"/runs/{k // 2}",
                         "config_hash": "c" * 64, "git_revision": "abc", "seeds": {"seed": k},
                         "evidence_digest": "d" * 64, "decision": {"k": k}})
    return p


def lines(p):
    return p.read_text().splitlines()


def write(p, ls):
    p.write_text("\n".join(ls) + "\n")


def test_intact_log_verifies(log):
    v = audit.verify(log)
    assert v.ok and v.entries == 6, v.problems
    e = [json.loads(x) for x in lines(log)]
    assert [x["seq"] for x in e] == [1, 2, 3, 4, 5, 6]
    assert e[0]["prev"] == audit.GENESIS and all(b["prev"] == a["hash"] for a, b in zip(e, e[1:]))
    for key in ("config_hash", "git_revision", "seeds", "evidence_digest", "decision"):
        assert key in e[0]


def test_edited_line_is_named(log):
    ls = lines(log)
    e = json.loads(ls[2])
    e["decision"] = {"k": 99}
    ls[2] = json.dumps(e, sort_keys=True)
    write(log, ls)
    v = audit.verify(log)
    assert not v.ok and v.problems == ["line 3: edited (seq 3: its content does not match its hash)"]


def test_edited_line_with_recomputed_hash_is_named(log):
    ls = lines(log)
    e = json.loads(ls[3])
    e["decision"] = {"decision": "approve", "reviewer": "mallory"}
    e["hash"] = audit.entry_hash(e)
    ls[3] = json.dumps(e, sort_keys=True)
    write(log, ls)
    v = audit.verify(log)
    assert len(v.problems) == 1 and v.problems[0].startswith("line 4: edited"), v.problems


def test_deleted_line_is_named(log):
    ls = lines(log)
    write(log, ls[:2] + ls[3:])
    v = audit.verify(log)
    assert v.problems == ["line 3: 1 entry deleted before it (seq 3 missing)"]


def test_reordered_lines_are_named(log):
    ls = lines(log)
    ls[2], ls[3] = ls[3], ls[2]
    write(log, ls)
    v = audit.verify(log)
    assert len(v.problems) == 1 and v.problems[0].startswith("lines 3 and 4: reordered"), v.problems


@pytest.mark.parametrize("prev_of", ["real", "forged"])
def test_inserted_line_is_named(log, prev_of):
    ls = lines(log)
    fake = {"seq": 3, "time": "2026-01-01T00:00:00", "action": "approve", "run": "/runs/1",
            "decision": {"decision": "approve", "reviewer": "mallory"},
            "prev": json.loads(ls[1])["hash"] if prev_of == "real" else "f" * 64}
    fake["hash"] = audit.entry_hash(fake)  # a well-formed entry: only the chain gives it away
    write(log, ls[:2] + [json.dumps(fake, sort_keys=True)] + ls[2:])
    v = audit.verify(log)
    assert v.problems == ["line 3: inserted (seq 3 is not part of the hash chain)"], v.problems


def test_concurrent_appends_keep_the_chain(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    p = tmp_path / "a.jsonl"
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda k: audit.append(p, {"action": "gates", "k": k}), range(20)))
    v = audit.verify(p)
    assert v.ok and v.entries == 20


def test_review_verify_command_names_the_line(log):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, "-m", "twins", "review", "verify", str(log)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0 and "chain intact" in r.stdout
    ls = lines(log)
    write(log, ls[:4] + ls[5:])
    r = subprocess.run([sys.executable, "-m", "twins", "review", "verify", str(log)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 1 and "line 5: 1 entry deleted before it (seq 5 missing)" in r.stdout


def test_deleted_line_with_recomputed_later_hashes_is_named(log):
    """Delete line 3 and relink the lines after it (their prev and hash recomputed): the chain is whole, but
    seq jumps from 2 to 4."""
    ls = lines(log)
    out, prev = ls[:2], json.loads(ls[1])["hash"]
    for ln in ls[3:]:
        e = json.loads(ln)
        e["prev"] = prev
        e["hash"] = prev = audit.entry_hash(e)
        out.append(json.dumps(e, sort_keys=True))
    write(log, out)
    v = audit.verify(log)
    assert len(v.problems) == 1 and v.problems[0].startswith("line 3: 1 entry deleted before it (seq 3 missing"), \
        v.problems
