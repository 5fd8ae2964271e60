"""What a finished search writes: its tables, ``best_policy.json`` and figures.

``candidates.parquet`` (every evaluation; ``invalid`` names why the intervention refused a plan),
``pareto.parquet``, ``confirmed.parquet``, ``confirmed_groups.parquet``, ``best_policy.json`` and
``figures/{convergence,pareto,confirmed}.png`` (a figure that fails is a warning, never a lost search);
``compute_per_policy``: the search's compute account and its energy per confirmed policy, for
``best_policy.json``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import pandas as pd

from .search_objectives import Objective

log = logging.getLogger("twins")


def compute_per_policy(evaluate, confirmed: pd.DataFrame) -> dict | None:
    """The search's compute account (every evaluation, confirmation included) and its energy per
    confirmed policy; None when ``evaluate`` keeps no account (``compute_account()``, e.g. TwinEvaluator)."""
    account = getattr(evaluate, "compute_account", None)
    if not callable(account):
        return None
    acc = account()
    n = int(confirmed["trial"].nunique()) if len(confirmed) else 0
    return {**acc, "confirmed_policies": n,
            "energy_per_confirmed_policy_j": round(acc["energy_total_j"] / n, 3) if n else None}


def write_tables(outdir: Path, candidates: pd.DataFrame, pareto: pd.DataFrame, confirmed: pd.DataFrame,
                 confirmed_groups: pd.DataFrame, best: dict | None) -> None:
    from twins.core import io

    candidates.to_parquet(outdir / "candidates.parquet", index=False)
    pareto.to_parquet(outdir / "pareto.parquet", index=False)
    confirmed.to_parquet(outdir / "confirmed.parquet", index=False)
    confirmed_groups.to_parquet(outdir / "confirmed_groups.parquet", index=False)
    io.write_json(outdir / "best_policy.json", best)


def write_figures(outdir: Path, candidates: pd.DataFrame, pareto: pd.DataFrame, confirmed: pd.DataFrame,
                  objectives: Sequence[Objective], label: str) -> tuple[list[str], list[str]]:
    """``figures/``; ``(written, errors)``: a figure that fails is a warning, never a lost search."""
    from twins import plots

    fig_dir = outdir / "figures"
    o = objectives[0]
    todo = [("convergence.png", lambda: plots.search_convergence(candidates, f"objective:{o.metric}",
                                                                 o.direction, title=label))]
    if len(objectives) >= 2:
        a, b = objectives[:2]
        todo.append(("pareto.png", lambda: plots.pareto_front(candidates, pareto, f"objective:{a.metric}",
                                                              f"objective:{b.metric}")))
    if len(confirmed):
        todo.append(("confirmed.png", lambda: plots.confirmed_effects(confirmed, [o.metric for o in objectives])))
    written, failed = [], []
    for name, draw in todo:
        try:
            fig_dir.mkdir(exist_ok=True)
            plots.save(draw(), fig_dir / name)
            written.append(name)
        except Exception as e:  # noqa: BLE001  (plotting or file errors: the tables are written already)
            failed.append(f"{name}: {type(e).__name__}: {e}")
            log.warning("figure %s not written (%s: %s); the search's tables are complete", name,
                        type(e).__name__, e)
    return written, failed


__all__ = ["compute_per_policy", "write_tables", "write_figures"]
