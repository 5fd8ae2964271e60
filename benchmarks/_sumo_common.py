"""Helpers shared by the SUMO side-by-side benchmarks (``bench_sumo.py``, ``bench_fidelity.py``).

Not a benchmark itself (the leading underscore). Everything here is plain
bookkeeping: where the RESCO scenarios live, how a scenario is loaded into the
twin without the import warnings, and the machine line printed above every table.
"""
from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESCO = ["cologne1", "cologne3", "cologne8", "ingolstadt1", "ingolstadt7", "ingolstadt21"]
DEFAULT_RESCO = ROOT.parent / "shared" / "data" / "resco"


COMPILE = {"null": None, "true": True, "false": False}  # --compile's choices -> the twin's compute.compile


def add_compile_option(ap) -> None:
    """``--compile null|true|false`` on an argparse parser (its value: ``COMPILE[args.compile]``)."""
    ap.add_argument("--compile", choices=list(COMPILE), default="null",
                    help="the twin's compute.compile (null: the compiled step where a C++ compiler is found)")


def load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def pct(a: float, b: float) -> str:
    return f"{(a - b) / b * 100:+6.1f}%" if b and not math.isnan(b) else "   n/a"


def cpu_name() -> str:
    """``lscpu``'s model name (else what ``platform`` knows)."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                   if line.startswith("Model name"))
    except Exception:  # noqa: BLE001
        pass
    return cpu


def sumo_version(exe: str) -> str:
    """First line of ``sumo --version`` (e.g. ``Eclipse SUMO sumo Version 1.28.0``)."""
    return subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def resco_cfg(resco: Path, name: str) -> Path:
    """``resco/NAME/NAME.sumocfg`` (may not exist; callers say so)."""
    return Path(resco) / name / f"{name}.sumocfg"


def load_resco(cfg: Path):
    """The twin's import (:func:`twins.traffic.sumo.load_sumocfg`) of a RESCO scenario, import warnings
    silenced (they are about elements the twin does not model; ``python -m twins run`` shows them)."""
    from twins.traffic import sumo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sumo.SumoImportWarning)
        return sumo.load_sumocfg(cfg)
