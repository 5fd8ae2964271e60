"""Sweep summaries: a Hydra callback that, at the end of a multirun, reads every job's folder
and writes ``summary.parquet`` (one row per job × metric) and ``summary.png`` into the sweep dir.

Configured in ``conf/config.yaml``::

    hydra:
      callbacks:
        sweep_summary:
          _target_: interventions.sweep.SweepSummary
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd

try:  # Hydra is a dependency of the CLI; the summary itself does not need it
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object

log = logging.getLogger("twins")

COLUMNS = ["job", "overrides", "metric", "baseline_mean", "treated_mean", "effect", "ci_low", "ci_high", "n",
           "unpaired_ci_low", "unpaired_ci_high", "width_ratio", "complete"]


def _overrides(job_dir: Path) -> list[str]:
    f = job_dir / ".hydra" / "overrides.yaml"
    if not f.exists():
        return []
    from omegaconf import OmegaConf

    return [str(x) for x in OmegaConf.load(f)]


def job_rows(job_dir: Path, job: int | str) -> list[dict]:
    """Rows of one run folder: from ``effects.parquet`` (a counterfactual) or ``metrics.json``."""
    ov = _overrides(job_dir)
    base = {"job": job, "overrides": " ".join(ov)}
    for o in ov:
        k, _, v = o.partition("=")
        base[f"override:{k.lstrip('+~')}"] = v
    manifest = job_dir / "manifest.json"
    base["complete"] = bool(json.loads(manifest.read_text()).get("complete", False)) if manifest.exists() else False
    rows = []
    eff = job_dir / "effects.parquet"
    if eff.exists():
        e = pd.read_parquet(eff)
        e = e[e["scope"] == "network"]
        for r in e.itertuples():
            rows.append({**base, "metric": r.metric, "arm": r.arm, "label": r.label,
                         **{c: getattr(r, c) for c in COLUMNS[3:12]}})
        return rows
    met = job_dir / "metrics.json"
    if met.exists():
        m = json.loads(met.read_text())
        for name, s in m.items():
            if not isinstance(s, dict) or "mean" not in s:
                continue
            rows.append({**base, "metric": name, "baseline_mean": s["mean"], "treated_mean": math.nan,
                         "effect": math.nan, "ci_low": s["ci_low"], "ci_high": s["ci_high"], "n": s["n"],
                         "unpaired_ci_low": math.nan, "unpaired_ci_high": math.nan, "width_ratio": math.nan})
    return rows


def summarize_sweep(sweep_dir: str | Path, figure: bool = True) -> pd.DataFrame | None:
    """Collect every job folder under ``sweep_dir`` into ``summary.parquet`` (+ ``summary.png``)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        log.warning("sweep summary: %s does not exist", sweep_dir)
        return None
    jobs = sorted((d for d in sweep_dir.iterdir() if d.is_dir() and (d / ".hydra").is_dir()),
                  key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
    rows = []
    for d in jobs:
        rows += job_rows(d, int(d.name) if d.name.isdigit() else d.name)
    if not rows:
        log.warning("sweep summary: no finished jobs in %s", sweep_dir)
        return None
    df = pd.DataFrame(rows)
    lead = [c for c in COLUMNS[:2]] + sorted(c for c in df.columns if c.startswith("override:"))
    df = df[lead + [c for c in df.columns if c not in lead]]
    df["job"] = df["job"].astype(str)
    df.to_parquet(sweep_dir / "summary.parquet", index=False)
    if figure:
        try:
            from twins import plots

            plots.save(plots.sweep(df), sweep_dir / "summary.png")
        except Exception as e:  # a figure must not lose the table
            log.warning("sweep summary figure failed: %s", e)
    log.info("sweep summary: %d jobs → %s", len(jobs), sweep_dir / "summary.parquet")
    return df


class SweepSummary(Callback):
    """Hydra callback: write the sweep summary when a multirun ends."""

    def __init__(self, figure: bool = True):
        self.figure = figure

    def on_multirun_end(self, config, **kwargs) -> None:
        try:
            summarize_sweep(str(config.hydra.sweep.dir), figure=self.figure)
        except Exception as e:  # never turn a finished sweep into a failure
            log.error("sweep summary failed: %s", e)
