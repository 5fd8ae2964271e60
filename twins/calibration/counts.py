"""Observed counts: ``COUNTS.csv`` (``edge,begin_s,end_s,count``) and optional turn counts
(``from_edge,to_edge,begin_s,end_s,count``), read and checked against the network and the time window.

A count is the number of vehicles that *entered* the edge in ``[begin_s, end_s)`` by moving onto it from
upstream, as SUMO's edgeData ``entered`` (vehicles that depart on an edge are SUMO's ``departed``, not
``entered``); a turn count is the number that entered ``to_edge`` coming from ``from_edge``. Bad input is
refused with the file, the line and the reason (:class:`twins.core.errors.ConfigError`), before anything runs.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd

from twins.core.errors import ConfigError, suggest

EDGE_COLUMNS = ("edge", "begin_s", "end_s", "count")
TURN_COLUMNS = ("from_edge", "to_edge", "begin_s", "end_s", "count")


def _err(path: Path, line: int, field: str, value, valid: str, hint: str = "") -> ConfigError:
    return ConfigError(f"{path.name}:{line} {field}", value, valid, (f"{hint} " if hint else "") + f"(file {path})")


def _num(path: Path, line: int, row: dict, key: str) -> float:
    raw = (row.get(key) or "").strip()
    try:
        v = float(raw)
    except ValueError:
        raise _err(path, line, key, raw, "a number") from None
    if not math.isfinite(v):
        raise _err(path, line, key, raw, "a finite number")
    return v


def _edge(path: Path, line: int, key: str, name: str, edges) -> str:
    if name not in edges:
        raise _err(path, line, key, name, "an edge of the scenario's network",
                   f"Unknown edge. {suggest(name, edges) if len(edges) <= 40 else _close(name, edges)}")
    return name


def _close(name: str, edges) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(edges), n=3)
    return f"Did you mean {' or '.join(repr(c) for c in close)}?" if close else f"The network has {len(edges)} edges."


def read_counts(path, network, *, begin: float | None = None, end: float | None = None,
                turns: bool = False) -> pd.DataFrame:
    """The counts of ``path`` as a table ``kind, edge, from_edge, begin_s, end_s, count, line``.

    ``turns``: the file holds turn counts (``from_edge,to_edge,...``; ``to_edge`` must follow ``from_edge``
    through a connection). Refused (ConfigError naming the line): a missing column, an unknown edge, a count
    that is negative or not a whole number, ``end_s <= begin_s``, an interval outside ``[begin, end]`` (the
    scenario's window), a duplicate or two overlapping intervals of the same edge (or turn)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("observed.counts" if not turns else "observed.turn_counts", str(path),
                          "a CSV file of counts", f"No file at {path.resolve()}.")
    cols = TURN_COLUMNS if turns else EDGE_COLUMNS
    edges = network.edges
    links = {(c.from_edge, c.to_edge) for c in network.connections}
    rows = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in cols if c not in header]
        if missing:
            raise _err(path, 1, "header", ",".join(header), "the columns " + ",".join(cols),
                       f"Missing: {', '.join(missing)}.")
        reader.fieldnames = header
        for row in reader:
            line = reader.line_num
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue  # a blank line
            b, e, n = (_num(path, line, row, k) for k in ("begin_s", "end_s", "count"))
            if n < 0:
                raise _err(path, line, "count", n, "a count >= 0 (vehicles)")
            if n != int(n):
                raise _err(path, line, "count", n, "a whole number of vehicles")
            if e <= b:
                raise _err(path, line, "end_s", e, f"a time after begin_s={b:g}")
            if begin is not None and b < begin - 1e-9:
                raise _err(path, line, "begin_s", b, f"a time within the scenario's window [{begin:g}, "
                           f"{end if end is not None else math.inf:g}] s")
            if end is not None and e > end + 1e-9:
                raise _err(path, line, "end_s", e, f"a time within the scenario's window [{begin or 0:g}, {end:g}] s")
            if turns:
                f = _edge(path, line, "from_edge", (row.get("from_edge") or "").strip(), edges)
                t = _edge(path, line, "to_edge", (row.get("to_edge") or "").strip(), edges)
                if (f, t) not in links:
                    raise _err(path, line, "to_edge", t, f"an edge that follows from_edge={f!r} through a connection")
                rows.append(("turn", t, f, b, e, int(n), line))
            else:
                rows.append(("edge", _edge(path, line, "edge", (row.get("edge") or "").strip(), edges), "", b, e,
                             int(n), line))
    if not rows:
        raise _err(path, 1, "rows", 0, "at least one count")
    df = pd.DataFrame(rows, columns=["kind", "edge", "from_edge", "begin_s", "end_s", "count", "line"])
    for (_, edge, frm), g in df.groupby(["kind", "edge", "from_edge"], sort=False):
        g = g.sort_values(["begin_s", "end_s"])
        prev = None
        for r in g.itertuples():
            if prev is not None and r.begin_s < prev.end_s - 1e-9:
                what = f"{frm}->{edge}" if frm else edge
                raise _err(path, int(r.line), "begin_s", r.begin_s,
                           f"intervals of {what!r} that do not overlap",
                           f"[{r.begin_s:g}, {r.end_s:g}) overlaps [{prev.begin_s:g}, {prev.end_s:g}) on line "
                           f"{int(prev.line)}.")
            prev = r
    return df.reset_index(drop=True)


def read_observed(observed, network, *, begin: float, end: float | None) -> pd.DataFrame:
    """Edge counts (``observed.counts``) and turn counts (``observed.turn_counts``) in one table."""
    from twins.core.errors import check

    counts = str(observed.get("counts", "") or "")
    turns = str(observed.get("turn_counts", "") or "")
    check(bool(counts or turns), "observed.counts", counts, "a CSV of counts (edge,begin_s,end_s,count)",
          "Example: python -m twins calibrate scenario=sumo scenario.sumocfg=my.sumocfg observed.counts=counts.csv")
    parts = []
    if counts:
        parts.append(read_counts(_abs(counts), network, begin=begin, end=end))
    if turns:
        parts.append(read_counts(_abs(turns), network, begin=begin, end=end, turns=True))
    return pd.concat(parts, ignore_index=True)


def _abs(p: str) -> str:
    from scenarios.sumo import abs_path as resolve

    return resolve(p)
