"""Run folders: what every output folder holds, and how it is written.

A run folder has ``config.yaml`` (resolved), ``manifest.json`` (seed, versions,
device, dtype, git revision, wall time, complete flag), ``metrics.json``
(each metric: mean over replications with a 95% CI and n), one Parquet file
per table (``worlds``, ``trips``, ``timeseries``, ...) and ``figures/``.

One run per folder (:class:`RunFolder`): a folder holding another run's files is refused unless
``output.overwrite=true``, and a lock keeps a second live run out.
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
import torch
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


def describe(device: torch.device) -> str:
    """A device in words, as run folders record it: ``cuda:0 (NVIDIA H200)``, ``cpu (x86_64, 2 threads)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def manifest(cfg, device, dtype, started: float, complete: bool, **extra) -> dict:
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


# --- the run folder: one run per folder, one process at a time ------------------------------------------------
#: what Hydra writes into a folder before a run's code starts (its config record, the job log, a sweep's
#: record) and this module's lock: a folder holding only these is empty
LOCK_NAME = ".twins.lock"
HYDRA_ENTRIES = (".hydra", "multirun.yaml", LOCK_NAME)


def foreign_entries(folder: str | Path) -> list[Path]:
    """The entries of ``folder`` that are not Hydra's own (``.hydra/``, ``*.log``, ``multirun.yaml``) nor the
    lock: what a previous run left. Empty when the folder does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.name not in HYDRA_ENTRIES and not (p.suffix == ".log" and p.is_file()))


def lock_holder(folder: str | Path) -> int | None:
    """The pid of the live process that holds ``folder``'s lock, or None (no lock, or a stale one left by a
    killed process: the kernel drops an flock with its holder)."""
    import fcntl
    import os

    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return -1
    finally:
        os.close(fd)
    return None


#: files only a twins run, search or sweep writes: a folder holding none of them is not cleared
RUN_MARKERS = ("manifest.json", "config.yaml", "metrics.json", "candidates.parquet", "study.db", "summary.parquet")


def is_run_folder(folder: str | Path) -> bool:
    """Whether ``folder`` looks like a run, search or sweep folder (so that output.overwrite may clear it)."""
    folder = Path(folder)
    if any((folder / m).exists() for m in RUN_MARKERS):
        return True
    subs = [p for p in folder.iterdir() if p.is_dir() and p.name != ".hydra"] if folder.is_dir() else []
    return bool(subs) and all(any((p / m).exists() for m in (*RUN_MARKERS, ".hydra")) for p in subs)


def clear_folder(folder: str | Path) -> list[str]:
    """Remove what a previous run left in ``folder`` (:func:`foreign_entries`); returns their names. Refused
    (:class:`~twins.core.errors.ConfigError`) for a folder that is not a run folder: a mistyped
    ``hydra.run.dir=.`` must not empty a source tree."""
    import shutil

    from .errors import ConfigError

    if foreign_entries(folder) and not is_run_folder(folder):
        raise ConfigError("output.overwrite", True, "a run, search or sweep folder to clear",
                          f"{folder} holds files but none a twins run writes ({', '.join(RUN_MARKERS[:3])}, ...): "
                          "not clearing it. Choose another folder (hydra.run.dir=...).")
    gone = []
    for p in foreign_entries(folder):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
        gone.append(p.name)
    return gone


class FolderInUse(Exception):
    """Another live process writes into the folder."""


class RunFolder:
    """Claim ``folder`` for one run: an exclusive lock (a second run into it fails at once), and a refusal
    when the folder holds another run's files, unless ``overwrite`` (cleared first) or ``reuse`` (a resumed
    search continues its own folder). On a refusal raised inside (a :class:`~twins.core.errors.ConfigError`)
    a folder left with only Hydra's files is removed, so a refused config leaves no folder behind."""

    def __init__(self, folder: str | Path, overwrite: bool = False, reuse: bool = False, field: str = "hydra.run.dir"):
        self.folder, self.overwrite, self.reuse, self.field = Path(folder), bool(overwrite), bool(reuse), field
        self._fd = None

    def __enter__(self) -> "RunFolder":
        import fcntl
        import os

        from .errors import ConfigError

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = lock_holder(self.folder)
            raise FolderInUse(f"{self.field}={str(self.folder)!r}: another twins run (pid {holder}) is writing "
                              "into this folder. Wait for it to finish, or choose another folder "
                              f"({self.field}=...).") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        left = foreign_entries(self.folder)
        if left and not self.reuse:
            if self.overwrite:
                log_names = clear_folder(self.folder)
                import logging

                logging.getLogger("twins").info("output.overwrite=true: cleared %s (%s)", self.folder,
                                                ", ".join(log_names))
            else:
                self._release()
                names = ", ".join(p.name for p in left[:5]) + (", ..." if len(left) > 5 else "")
                raise ConfigError("output.overwrite", False,
                                  f"true to clear {self.folder} first",
                                  f"The folder holds another run's files ({names}); runs are never mixed. "
                                  f"Choose a new folder ({self.field}=...) or add output.overwrite=true.")
        return self

    def _release(self) -> None:
        import fcntl
        import os

        if self._fd is None:
            return
        try:
            (self.folder / LOCK_NAME).unlink(missing_ok=True)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __exit__(self, exc_type, exc, tb) -> None:
        from .errors import ConfigError

        self._release()
        if exc_type is not None and issubclass(exc_type, ConfigError):
            remove_if_hollow(self.folder)


def remove_if_hollow(folder: str | Path) -> bool:
    """Remove ``folder`` when it holds only Hydra's own files (a refused run's leftovers); True if removed."""
    import shutil

    folder = Path(folder)
    if not folder.is_dir() or foreign_entries(folder) or lock_holder(folder) is not None:
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True
