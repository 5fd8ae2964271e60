"""Schemas of ``python -m twins calibrate`` (Hydra structured configs): ``observed`` (the counts) and
``calibrate`` (the method and its budget; ``conf/calibrate/default.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class ObservedConfig:
    counts: str = ""  # CSV edge,begin_s,end_s,count: vehicles entering the edge (SUMO edgeData 'entered')
    turn_counts: str = ""  # CSV from_edge,to_edge,begin_s,end_s,count (optional)


@dataclass
class CalibrateConfig:
    method: str = "em"  # em (Poisson ML by EM) | ls (weighted least squares with a ridge toward the prior)
    iterations: int = 4  # outer iterations (at most): run the demand in the twin, measure the assignment, refit
    tolerance: float = 0.01  # stop once an iteration's mean GEH is not this share below the best one before
    replications: Optional[int] = None  # worlds per iteration (one batch); null: the run's replications
    ensemble: int = 16  # bootstrap members (the uncertainty), run as worlds of one batch; 0: none
    interval_s: Optional[float] = None  # demand intervals; null: the counts' (shortest) interval
    regularization: float = 0.1  # ls: weight of the ridge toward the prior
    em_iterations: int = 100  # em: EM updates per fit (from the prior: fewer keep it closer to the prior)
    sumo_seeds: List[int] = field(default_factory=list)  # check calibrated.sumocfg in SUMO on these seeds
    progress: Optional[bool] = None  # a bar per twin run; null: as the top-level progress setting
