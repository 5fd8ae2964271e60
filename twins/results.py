"""Load a twins output folder into pandas: a run, a multirun sweep, or a search.

    from twins import results
    r = results.load("outputs/2026-11-27/23-31-36_ring")
    r.metrics          # one row per (arm and) metric: mean, ci_low, ci_high, n
    r.worlds           # one row per world (replication × arm), every metric
    r.trips, r.timeseries, r.detectors, r.edges, r.groups, r.trajectories, r.effects, r.arms
    r.manifest, r.config, r.accounting, r.gates, r.review

Tables are read lazily (on first access) from the folder's Parquet and JSON
files and cached. A table the folder does not hold raises
:class:`MissingTableError`, which says how to produce it (``trajectories``
needs ``output.trajectory_every``, ``effects`` an intervention, ...).
Records that later stages add to a folder — the ethics review's ``gates.json``
and ``review.json`` / ``review.md``, the compute plan and account in
``manifest.json`` — are ``None`` until they exist.

A multirun sweep (``python -m twins run -m ...``) loads as :class:`Sweep`: its
``jobs`` are run folders, ``summary`` is ``summary.parquet``, and every run
table (``sweep.worlds``, ``sweep.effects``, ...) is the jobs' tables stacked,
with a ``job`` column and one column per swept override
(``intervention.cycle_s`` holding 60, 90, ...); ``sweep.gates`` stacks the jobs'
ethics gates the same way. A search folder
(``python -m twins search``) loads as :class:`Search`: ``candidates``,
``pareto``, ``confirmed``, ``best_policy``.

**Incomplete folders are refused by default.** A run interrupted by Ctrl-C or
a crash keeps its partial tables and says ``complete: false`` in its
manifest; analysing those as if they were finished would bias every metric
(only the vehicles that arrived early are counted). ``load`` raises
:class:`IncompleteRunError` naming where the run stopped;
``load(path, allow_incomplete=True)`` reads the partial tables and still
warns (:class:`IncompleteRunWarning`).

Length: one reader per folder kind (run, multirun sweep, search) with their shared column conventions and
the messages for a folder that is not one; reading only, never simulating.
"""
from __future__ import annotations

import json
import math
import warnings
from functools import cached_property
from pathlib import Path

import pandas as pd

__all__ = ["load", "Run", "Sweep", "Search", "ResultsError", "NotAResultsFolderError", "IncompleteRunError",
           "MissingTableError", "IncompleteRunWarning", "GATE_COLUMNS"]

#: the columns of :attr:`Folder.gates` (one row per ethics gate)
GATE_COLUMNS = ["gate", "status", "reason", "evidence", "hard"]

#: run tables (``<name>.parquet``) and what to do when one is missing
RUN_TABLES = {
    "worlds": "every run writes it; the run probably crashed before its first results",
    "trips": "traffic runs write it (molecular runs have no trips)",
    "timeseries": "every twin writes it at the end of a run",
    "detectors": "traffic runs write it (per interval, world and edge)",
    "edges": "traffic runs write it (per world and edge, with geometry)",
    "groups": "twins with groups write it (traffic origins, molecular cells)",
    "trajectories": "run with output.trajectory_every=1 (record vehicles every N steps)",
    "effects": "run with an intervention, e.g. intervention=signal_timing intervention.cycle_s=90",
}
SEARCH_TABLES = {
    "candidates": "written after the search's first batch",
    "pareto": "written when the search finishes",
    "confirmed": "written when the search finishes (held-out confirmation)",
    "confirmed_groups": "written when the search finishes (per-group held-out effects)",
}


# --- errors --------------------------------------------------------------------------------------
class ResultsError(ValueError):
    """A folder that cannot be read as twins results (the message says why and what to do)."""


class NotAResultsFolderError(ResultsError):
    """The folder holds none of the files a twins run, sweep or search writes."""


class IncompleteRunError(ResultsError):
    """The folder's manifest says ``complete: false`` (an interrupted run or search)."""


class MissingTableError(LookupError):
    """The folder has no such table; the message says how to produce it."""

    def __str__(self) -> str:  # KeyError-style quoting would hide the hint
        return str(self.args[0]) if self.args else ""


def _check_table_name(name, folder) -> None:
    """A table is a file of this folder: a name with a path separator or ``..`` would read another run's."""
    import re

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) or ".." in name:
        raise ValueError(f"table name {name!r} is not a table of {folder.path}: expected a plain name such as "
                         f"'worlds' (no '/', '\\' or '..'). Tables here: {', '.join(folder.tables) or 'none'}. "
                         "To read another run, load its folder: twins.results.load(PATH).")


class IncompleteRunWarning(UserWarning):
    """Partial results loaded with ``allow_incomplete=True``."""


# --- helpers -------------------------------------------------------------------------------------
def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path} is not valid JSON ({e}); the file is damaged or still being written") from e


def _parse_value(text: str):
    """An override's value as YAML reads it: '60' -> 60, '[N,S]' -> ['N', 'S'], 'tpe' -> 'tpe'."""
    import yaml

    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def _metrics_frame(obj: dict) -> pd.DataFrame:
    """``metrics.json`` in any of its shapes as rows ``[arm, label, metric, mean, ci_low, ci_high, n]``.

    Shapes: ``{metric: {mean, ...}}`` (one arm); ``{arm<k>: {metric: {...}}}`` (several arms);
    ``{arm<k>: {label, values, metrics: {metric: {...}}}}`` (a counterfactual run).
    """
    rows = []

    def add(block: dict, arm, label):
        for m, s in block.items():
            if isinstance(s, dict) and "mean" in s:
                rows.append({"arm": arm, "label": label, "metric": m,
                             **{k: (math.nan if v is None else v) for k, v in s.items()}})

    for key, val in obj.items():
        if isinstance(val, dict) and "mean" in val:
            rows.append({"arm": 0, "label": "baseline", "metric": key,
                         **{k: (math.nan if v is None else v) for k, v in val.items()}})
        elif key.startswith("arm") and isinstance(val, dict):
            arm = int(key[3:]) if key[3:].isdigit() else key
            if isinstance(val.get("metrics"), dict):
                add(val["metrics"], arm, val.get("label", key))
            else:
                add(val, arm, "baseline" if arm == 0 else key)
    cols = ["arm", "label", "metric", "mean", "ci_low", "ci_high", "n"]
    df = pd.DataFrame(rows)
    return df[cols + [c for c in df.columns if c not in cols]] if len(df) else pd.DataFrame(columns=cols)


def _gates_frame(obj) -> pd.DataFrame:
    """``gates.json``: a list of gates (or ``{"gates": [...]}``) as one row per gate."""
    items = obj.get("gates", []) if isinstance(obj, dict) else obj
    if not isinstance(items, list):
        raise ResultsError("gates.json must hold a list of {gate, status, reason, evidence, hard}")
    df = pd.DataFrame(items)
    for c in GATE_COLUMNS:
        if c not in df:
            df[c] = None
    return df[GATE_COLUMNS + [c for c in df.columns if c not in GATE_COLUMNS]]


def _is_run(d: Path) -> bool:
    return any((d / f).exists() for f in ("manifest.json", "metrics.json", "worlds.parquet"))


def _is_search(d: Path) -> bool:
    return any((d / f).exists() for f in ("candidates.parquet", "study.db", "best_policy.json"))


def _job_dirs(d: Path) -> list[Path]:
    """Hydra job sub-folders of a sweep folder, in job order."""
    jobs = [c for c in d.iterdir() if c.is_dir() and ((c / ".hydra").is_dir() or _is_run(c) or _is_search(c))]
    return sorted(jobs, key=lambda c: (not c.name.isdigit(), int(c.name) if c.name.isdigit() else 0, c.name))


def _nearby(d: Path, limit: int = 3) -> list[Path]:
    """Twins folders below ``d`` (newest first): what the user may have meant."""
    found = []
    for marker in ("manifest.json", "candidates.parquet", "multirun.yaml"):
        for f in d.glob(f"*/{marker}"):
            found.append(f.parent)
        for f in d.glob(f"*/*/{marker}"):
            found.append(f.parent)
    found = set(found)
    found = [p for p in found if p.parent not in found]  # a sweep, not each of its jobs
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)[:limit]


# --- folders -------------------------------------------------------------------------------------
class Folder:
    """What every twins output folder has: a path, a config, a manifest, review records."""

    kind = "folder"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._tables: dict[str, pd.DataFrame] = {}

    def __repr__(self) -> str:
        bits = [f"{type(self).__name__}({str(self.path)!r}"]
        m = self.manifest or {}
        for k in ("scenario", "intervention"):
            if k in m:
                bits.append(f"{k}={m[k]!r}")
        bits.append(f"complete={self.complete}")
        return ", ".join(bits) + ")"

    # -- files
    def _file(self, name: str) -> Path | None:
        p = self.path / name
        return p if p.exists() else None

    def _table(self, name: str, hints: dict) -> pd.DataFrame:
        if name not in self._tables:
            _check_table_name(name, self)
            p = self._file(f"{name}.parquet")
            if p is None:
                raise MissingTableError(f"{self.path} has no {name}.parquet: {hints.get(name, 'not written')}. "
                                        f"Tables here: {', '.join(self.tables) or 'none'}.")
            self._tables[name] = pd.read_parquet(p)
        return self._tables[name]

    @property
    def tables(self) -> list[str]:
        """The Parquet tables this folder holds."""
        return sorted(p.stem for p in self.path.glob("*.parquet"))

    def has(self, name: str) -> bool:
        """Whether the folder holds table (``<name>.parquet``) or record (``<name>.json``) ``name``."""
        return (self.path / f"{name}.parquet").exists() or (self.path / f"{name}.json").exists()

    @cached_property
    def manifest(self) -> dict | None:
        """``manifest.json``: seed, versions, device, git revision, wall time, ``complete`` (None if absent)."""
        p = self._file("manifest.json")
        return _read_json(p) if p else None

    @cached_property
    def config(self) -> dict | None:
        """The resolved config (``config.yaml``) as a plain dict."""
        p = self._file("config.yaml")
        if p is None:
            return None
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.load(p), resolve=False)

    @property
    def complete(self) -> bool:
        return bool((self.manifest or {}).get("complete", False))

    @property
    def compute(self) -> dict | None:
        """How the worlds were split across devices (``manifest.json`` ``compute``), when recorded."""
        c = (self.manifest or {}).get("compute")
        return c if isinstance(c, dict) else None

    @property
    def accounting(self) -> dict | None:
        """The compute account (``manifest.json`` ``accounting``): wall time, device-seconds, energy
        (estimates are labelled as such), when recorded."""
        a = (self.manifest or {}).get("accounting")
        return a if isinstance(a, dict) else None

    @cached_property
    def gates(self) -> pd.DataFrame | None:
        """The ethics gates' decisions (``gates.json``): gate, status (PASS | FAIL | NEEDS_HUMAN), reason,
        evidence, hard — or None when the folder has not been reviewed."""
        p = self._file("gates.json")
        return _gates_frame(_read_json(p)) if p else None

    @cached_property
    def review(self) -> dict | None:
        """The review record (``review.json``): evidence, gate results, human decisions; None if absent."""
        p = self._file("review.json")
        return _read_json(p) if p else None

    @cached_property
    def review_markdown(self) -> str | None:
        """``review.md``, the human-readable review record (None if absent)."""
        p = self._file("review.md")
        return p.read_text() if p else None

    @property
    def figures(self) -> list[Path]:
        """The PNG figures the CLI wrote into ``figures/`` (and arm sub-folders)."""
        return sorted((self.path / "figures").rglob("*.png")) if (self.path / "figures").is_dir() else []


class Run(Folder):
    """One run folder (``python -m twins run``)."""

    kind = "run"

    @property
    def worlds(self) -> pd.DataFrame:
        return self._table("worlds", RUN_TABLES)

    @property
    def trips(self) -> pd.DataFrame:
        return self._table("trips", RUN_TABLES)

    @property
    def timeseries(self) -> pd.DataFrame:
        return self._table("timeseries", RUN_TABLES)

    @property
    def detectors(self) -> pd.DataFrame:
        return self._table("detectors", RUN_TABLES)

    @property
    def edges(self) -> pd.DataFrame:
        return self._table("edges", RUN_TABLES)

    @property
    def groups(self) -> pd.DataFrame:
        return self._table("groups", RUN_TABLES)

    @property
    def trajectories(self) -> pd.DataFrame:
        return self._table("trajectories", RUN_TABLES)

    @property
    def effects(self) -> pd.DataFrame:
        """Paired effects per treated arm × (network | group) × metric, with paired and unpaired 95% CIs."""
        return self._table("effects", RUN_TABLES)

    def table(self, name: str) -> pd.DataFrame:
        """Any ``<name>.parquet`` of the folder (a table added by a newer twin, say)."""
        return self._table(name, RUN_TABLES)

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """``metrics.json`` as rows: arm, label, metric, mean, ci_low, ci_high, n."""
        p = self._file("metrics.json")
        if p is None:
            raise MissingTableError(f"{self.path} has no metrics.json: {RUN_TABLES['worlds']}.")
        return _metrics_frame(_read_json(p))

    @cached_property
    def arms(self) -> pd.DataFrame:
        """``arms.json``: one row per arm (0 is the baseline) with its label, world count and parameters."""
        p = self._file("arms.json")
        if p is None:
            return pd.DataFrame([{"arm": 0, "label": "baseline", "worlds": len(self.worlds)}])
        rows = [{"arm": a["arm"], "label": a["label"], "worlds": a.get("worlds"), **(a.get("values") or {})}
                for a in _read_json(p)]
        return pd.DataFrame(rows)


class Search(Folder):
    """A search folder (``python -m twins search``)."""

    kind = "search"

    @property
    def complete(self) -> bool:
        # a search's last act is best_policy.json; its manifest (when it writes one) has the last word
        if self.manifest is not None and "complete" in self.manifest:
            return bool(self.manifest["complete"])
        return self._file("best_policy.json") is not None and self._file("confirmed.parquet") is not None

    @property
    def candidates(self) -> pd.DataFrame:
        """Every evaluation: trial, batch, state, ``param:*``, ``effect:*``, ``objective:*``, feasible."""
        return self._table("candidates", SEARCH_TABLES)

    @property
    def pareto(self) -> pd.DataFrame:
        return self._table("pareto", SEARCH_TABLES)

    @property
    def confirmed(self) -> pd.DataFrame:
        """Held-out confirmation: per trial × metric the search estimate, the confirmed effect, its CI, the gap."""
        return self._table("confirmed", SEARCH_TABLES)

    def table(self, name: str) -> pd.DataFrame:
        return self._table(name, SEARCH_TABLES)

    @cached_property
    def best_policy(self) -> dict | None:
        """``best_policy.json``: the chosen parameters and their confirmed effects; None when no policy passed
        the confirmation (the file holds ``null``). Raises :class:`MissingTableError` when the file is absent."""
        p = self._file("best_policy.json")
        if p is None:
            raise MissingTableError(f"{self.path} has no best_policy.json: {SEARCH_TABLES['confirmed']}.")
        return _read_json(p)

    @cached_property
    def objectives(self) -> list[dict]:
        """The search's objectives ``[{metric, direction}]`` (from best_policy.json or the config)."""
        best = self._file("best_policy.json") and self.best_policy
        if best and best.get("objectives"):
            return list(best["objectives"])
        objs = ((self.config or {}).get("search") or {}).get("objectives") or []
        return [{"metric": o["metric"], "direction": o.get("direction", "minimize")} for o in objs]

    def study(self):
        """The Optuna study (``study.db``), for Optuna's own visualizations."""
        import optuna

        p = self._file("study.db")
        if p is None:
            raise MissingTableError(f"{self.path} has no study.db (the search used another search.storage)")
        name = ((self.config or {}).get("search") or {}).get("study_name") or "twins-search"
        return optuna.load_study(study_name=name, storage=f"sqlite:///{p.resolve()}")


class Sweep(Folder):
    """A multirun sweep folder (``python -m twins run -m ...``): numbered job folders plus a summary."""

    kind = "sweep"

    def __init__(self, path: Path, allow_incomplete: bool = False):
        super().__init__(path)
        self.jobs: list[Run | Search] = []
        for d in _job_dirs(self.path):
            if _is_run(d) or _is_search(d):
                self.jobs.append(_open(d, allow_incomplete=True, quiet=True))
            else:  # a job killed before it wrote anything
                self.jobs.append(Run(d))
        self._allow = allow_incomplete

    def __repr__(self) -> str:
        return f"Sweep({str(self.path)!r}, jobs={len(self.jobs)}, swept={self.swept}, complete={self.complete})"

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> Run | Search:
        return self.jobs[i]

    @property
    def complete(self) -> bool:
        return bool(self.jobs) and all(j.complete for j in self.jobs)

    @cached_property
    def overrides(self) -> pd.DataFrame:
        """One row per job: ``job``, one column per override (value parsed), ``complete``, ``path``."""
        rows = []
        for j in self.jobs:
            f = j.path / ".hydra" / "overrides.yaml"
            ov = []
            if f.exists():
                from omegaconf import OmegaConf

                ov = [str(x) for x in OmegaConf.load(f)]
            r = {"job": int(j.path.name) if j.path.name.isdigit() else j.path.name}
            for o in ov:
                k, _, v = o.partition("=")
                r[k.lstrip("+~")] = _parse_value(v)
            r.update(complete=j.complete, path=str(j.path))
            rows.append(r)
        return pd.DataFrame(rows)

    @property
    def swept(self) -> list[str]:
        """The overrides whose value differs between jobs (the sweep's axes)."""
        ov = self.overrides
        return [c for c in ov.columns if c not in ("job", "complete", "path")
                and ov[c].astype(str).nunique() > 1]

    @cached_property
    def summary(self) -> pd.DataFrame:
        """``summary.parquet`` (one row per job × metric: effect with paired CI, or the mean); rebuilt from
        the job folders when the sweep ended before its summary was written."""
        p = self._file("summary.parquet")
        if p is not None:
            return pd.read_parquet(p)
        from interventions.sweep import job_rows

        rows = [r for j in self.jobs for r in job_rows(j.path, j.path.name)]
        return pd.DataFrame(rows)

    def table(self, name: str) -> pd.DataFrame:
        """Every job's ``name`` table stacked, with ``job`` and the swept overrides as leading columns."""
        key = f"_stack_{name}"
        if key not in self._tables:
            ov = self.overrides.set_index("job")
            lead = self.swept
            parts = []
            for j, job in zip(ov.index, self.jobs):
                if name == "metrics":
                    df = job.metrics
                elif job.has(name):
                    df = job.table(name)
                else:
                    continue
                df = df.copy()
                for c in reversed(lead):
                    df.insert(0, c, ov.loc[j, c])
                df.insert(0, "job", j)
                parts.append(df)
            if not parts:
                raise MissingTableError(f"no job of {self.path} has {name}.parquet: "
                                        f"{RUN_TABLES.get(name, SEARCH_TABLES.get(name, 'not written'))}.")
            self._tables[key] = pd.concat(parts, ignore_index=True)
        return self._tables[key]

    @cached_property
    def gates(self) -> pd.DataFrame | None:
        """Every reviewed job's gates, stacked (job, swept overrides, gate, status, ...); None if none was."""
        ov = self.overrides.set_index("job")
        parts = []
        for j, job in zip(ov.index, self.jobs):
            if job.gates is not None:
                g = job.gates.copy()
                for c in reversed(self.swept):
                    g.insert(0, c, ov.loc[j, c])
                g.insert(0, "job", j)
                parts.append(g)
        return pd.concat(parts, ignore_index=True) if parts else None

    worlds = property(lambda self: self.table("worlds"), doc="Every job's worlds, stacked (job, swept overrides).")
    metrics = property(lambda self: self.table("metrics"), doc="Every job's metrics, stacked.")
    effects = property(lambda self: self.table("effects"), doc="Every job's effects, stacked.")
    groups = property(lambda self: self.table("groups"), doc="Every job's groups, stacked.")
    trips = property(lambda self: self.table("trips"), doc="Every job's trips, stacked.")
    timeseries = property(lambda self: self.table("timeseries"), doc="Every job's time series, stacked.")
    detectors = property(lambda self: self.table("detectors"), doc="Every job's detector readings, stacked.")
    edges = property(lambda self: self.table("edges"), doc="Every job's edge table, stacked.")


# --- entry point ---------------------------------------------------------------------------------
def _open(d: Path, allow_incomplete: bool, quiet: bool = False):
    folder = Search(d) if _is_search(d) else Run(d)
    if not folder.complete:
        m = folder.manifest
        if m is None:
            where = ("no manifest.json: the run was killed before it wrote its results" if folder.kind == "run"
                     else "no best_policy.json: the search stopped before it finished (resume it with "
                          f"search.resume=true hydra.run.dir={d})")
        else:
            steps = f" at step {m['steps_done']}/{m['steps']}" if "steps_done" in m and "steps" in m else ""
            where = f"manifest.json says complete=false: it was interrupted{steps}"
        if not allow_incomplete:
            part = "of the horizon and would bias every metric" if folder.kind == "run" else \
                "of the budget, without held-out confirmation"
            raise IncompleteRunError(f"{d} is an incomplete {folder.kind} ({where}). Its tables cover only part "
                                     f"{part}. Load it anyway with twins.results.load(path, "
                                     "allow_incomplete=True), or rerun it.")
        if not quiet:
            warnings.warn(f"{d}: INCOMPLETE {folder.kind} ({where}); its tables are partial.",
                          IncompleteRunWarning, stacklevel=3)
    return folder


def load(path, allow_incomplete: bool = False) -> Run | Sweep | Search:
    """Open a twins output folder: a run, a multirun sweep, or a search.

    Raises ``FileNotFoundError`` when ``path`` does not exist, :class:`NotAResultsFolderError` when it
    holds none of the files twins writes (naming what is missing), and :class:`IncompleteRunError` for an
    interrupted run, search or sweep job unless ``allow_incomplete=True`` (then it warns).
    """
    d = Path(path).expanduser()
    if not d.exists():
        raise FileNotFoundError(f"no such results folder: {d}. A run prints its folder on its last line "
                                "('wrote ...'); runs go to outputs/<date>/<time>_<scenario>/, sweeps to "
                                "multirun/<date>/<time>_<scenario>/.")
    if d.is_file():
        raise NotAResultsFolderError(f"{d} is a file; pass the folder that holds it ({d.parent}).")
    if _is_run(d) or _is_search(d):
        return _open(d, allow_incomplete)
    if (d / "multirun.yaml").exists() or (d / "summary.parquet").exists() or any(
            j.name.isdigit() and (j / ".hydra").is_dir() for j in _job_dirs(d)):
        sweep = Sweep(d, allow_incomplete)
        if not sweep.jobs:
            raise NotAResultsFolderError(f"{d} is a sweep folder with no job folders (0/, 1/, ...) yet.")
        bad = [j for j in sweep.jobs if not j.complete]
        if bad:
            names = ", ".join(j.path.name for j in bad)
            if not allow_incomplete:
                raise IncompleteRunError(f"{d}: sweep job(s) {names} are incomplete (interrupted, or still "
                                         "running). Load the sweep anyway with twins.results.load(path, "
                                         "allow_incomplete=True), or rerun those jobs.")
            warnings.warn(f"{d}: sweep job(s) {names} are INCOMPLETE; their tables are partial.",
                          IncompleteRunWarning, stacklevel=2)
        return sweep
    if (d / "config.yaml").exists() or (d / ".hydra").is_dir():
        return _open(d, allow_incomplete)  # a run killed before it wrote anything: incomplete
    hint = ""
    near = _nearby(d)
    if near:
        hint = " Twins folders below it (newest first): " + ", ".join(str(p) for p in near) + "."
    raise NotAResultsFolderError(
        f"{d} is not a twins results folder: it has no manifest.json, metrics.json or worlds.parquet (a run), "
        "no candidates.parquet, study.db or best_policy.json (a search), and no multirun.yaml or numbered job "
        f"folders (a sweep).{hint}")
