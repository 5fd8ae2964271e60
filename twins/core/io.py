"""Run folders: what every output folder holds, and how it is written.

A run folder has ``config.yaml`` (resolved), ``manifest.json`` (seed, versions,
device, dtype, git revision, wall time, complete flag), ``metrics.json``
(each metric: mean over replications with a 95% CI and n), one Parquet file
per table (``worlds``, ``trips``, ``timeseries``, ...) and ``figures/``.
"""
from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from .stats import mean_ci
from .twin import RunResult

PACKAGES = ("twins", "torch", "mesa", "numpy", "pandas", "pyarrow", "hydra-core", "omegaconf", "networkx",
            "optuna", "scipy", "matplotlib")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def git_revision() -> str:
    """The git revision of the twins source tree, with ``-dirty`` when it has uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def manifest(cfg, device, dtype, started: float, complete: bool, **extra) -> dict:
    from twins.compute.device import describe

    return {
        "seed": int(cfg.seed),
        "replications": int(cfg.replications),
        "scenario": str(cfg.scenario.get("name", cfg.scenario.get("kind"))),
        "intervention": str(cfg.intervention.get("name", "none")),
        "device": describe(device),
        "dtype": str(dtype).replace("torch.", ""),
        "git_revision": git_revision(),
        "versions": versions(),
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_time_s": round(time.time() - started, 3),
        "complete": bool(complete),
        **extra,
    }


def summarize(worlds: pd.DataFrame, metrics: list[str]) -> dict:
    """Mean over replications with a 95% t-interval, per metric (and per arm when there are several)."""
    def block(df):
        out = {}
        for m in metrics:
            s = mean_ci(df[m].to_numpy(dtype=float))
            out[m] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in s.items()}
        return out

    if "arm" in worlds and worlds["arm"].nunique() > 1:
        return {f"arm{int(a)}": block(g) for a, g in worlds.groupby("arm")}
    return block(worlds)


def _key(k):
    k = k.item() if isinstance(k, np.generic) else k
    return k if k is None or isinstance(k, (str, int, float, bool)) else str(k)


def jsonable(obj):
    """``obj`` with NaN/inf as None and numpy scalars as Python numbers (in dicts, lists and tuples), so the
    JSON written is strict (no ``NaN``) and a number stays a number."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {_key(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(jsonable(obj), indent=2, default=str, allow_nan=False) + "\n")


def write_tables(outdir: Path, result: RunResult, skip: tuple[str, ...] = ()) -> None:
    result.worlds.to_parquet(outdir / "worlds.parquet", index=False)
    if result.groups is not None:
        result.groups.to_parquet(outdir / "groups.parquet", index=False)
    for name, df in result.tables.items():
        if name in skip or df is None:
            continue
        df.to_parquet(outdir / f"{name}.parquet", index=False)


def write_config(outdir: Path, cfg) -> None:
    (outdir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
