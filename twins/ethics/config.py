"""The ethics config (``conf/ethics/``): schema, impact tier, required controls, hashes, author.

The schema is a structured config (Hydra ConfigStore ``ethics/ethics_schema``), so a
misspelled gate or threshold is refused before any compute. Tier rules are plain
data here so a reviewer can read exactly why a run landed in tier III.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from twins.core.errors import check, suggest

TIERS = ("I", "II", "III", "IV")
REVERSIBILITY = {"reversible": 0, "costly": 1, "irreversible": 2}
DOMAINS = {"research": 0, "mobility": 1, "road_safety": 2, "health": 2}
DIRECTIONS = ("minimize", "maximize")


@dataclass
class PersonConfig:
    name: str = ""
    role: str = ""
    organisation: str = ""


@dataclass
class ObjectiveConfig:
    """Who defined "optimal", whom they asked, and why. Hashed into the review record."""

    owner: PersonConfig = field(default_factory=PersonConfig)
    stakeholders: List[str] = field(default_factory=list)
    rationale: str = ""
    date: str = ""  # ISO date the objective was agreed
    weights: Dict[str, float] = field(default_factory=dict)  # metric -> weight; {}: the search objectives, equal


@dataclass
class ImpactConfig:
    """The impact questionnaire; :func:`impact_tier` turns it into a tier I–IV."""

    reversibility: str = "reversible"  # reversible | costly | irreversible
    people_affected: int = 0
    duration_days: float = 30.0
    domain: str = "research"  # research | mobility | road_safety | health
    vulnerable_groups: List[str] = field(default_factory=list)


@dataclass
class TierControls:
    approvers: int = 1  # distinct approvers, none of them the author
    held_out_replications: int = 8  # replications of the held-out evidence run
    signature: bool = False  # approvals must carry an SSH signature from allowed_signers
    # external validity (scenarios from SUMO files): SUMO seeds per program and car-following model, and the
    # smallest ratio realized (SUMO) / predicted (twin) effect on the objective; null: the gate is not applied
    transfer_seeds: int = 4
    transfer_min_ratio: Optional[float] = 0.8


@dataclass
class ControlsConfig:
    I: TierControls = field(default_factory=lambda: TierControls(1, 8, False, 2))  # noqa: E741
    II: TierControls = field(default_factory=lambda: TierControls(1, 16, False))
    III: TierControls = field(default_factory=lambda: TierControls(2, 32, True))
    IV: TierControls = field(default_factory=lambda: TierControls(2, 64, True))


@dataclass
class EvidenceConfig:
    replications: Optional[int] = None  # null: the tier's held_out_replications
    replication_offset: int = 20_000  # fresh ids: never used by a run, a search or its confirmation


@dataclass
class CredibilityConfig:
    metric: Optional[str] = None  # null: the first search objective
    direction: Optional[str] = None  # null: that objective's direction
    min_effect: float = 0.0  # the smallest improvement that matters, in the metric's units
    max_gap: Optional[float] = None  # |estimate the policy was chosen on − held-out estimate|; null: no bound


@dataclass
class ReproducibilityConfig:
    replications: int = 2  # held-out replications rerun (policy and baseline arms) and run as a null arm


@dataclass
class TrafficSafetyConfig:
    max_worst_approach_p95_delay_s: Optional[float] = 120.0  # per entry approach, unfavourable CI end
    # where the baseline (the scenario's own plan) already breaks that bound at an approach, the plan is judged
    # against the baseline there: the upper 95% bound of its paired change in that approach's 95th-percentile
    # delay must be <= this (s); null: the absolute bound only, whatever the baseline does
    worst_approach_tolerance_s: Optional[float] = 10.0
    crossing_width_m: float = 14.0  # pedestrian crossing length (4 lanes of 3.5 m)
    walking_speed_mps: float = 1.2  # design walking speed (HCM: 1.0–1.2 m/s)
    walk_s: float = 4.0  # WALK interval before clearance (MUTCD minimum 4 s)
    # phases that serve a pedestrian crossing the network file does not show: {program or junction id:
    # [phase indices] | all}; SUMO crossings are found from the network (signal_timing.crossing_phases)
    pedestrian_phases: Dict[str, Any] = field(default_factory=dict)
    stuck_after_s: float = 300.0  # a vehicle waiting/in the network this long counts as stuck (SUMO teleport time)
    max_stuck_vehicles: int = 0  # in any world of the policy arm


@dataclass
class DrugSafetyConfig:
    max_offtarget_occupancy: Optional[float] = 0.3  # ceiling on offtarget_occupancy_max (upper CI end)
    min_selectivity_ratio: Optional[float] = 2.0  # target / off-target occupancy (lower CI end)
    therapeutic_window: Optional[List[float]] = None  # target_occupancy_mean CI inside [lo, hi]; null: skip


@dataclass
class SafetyConfig:
    traffic: TrafficSafetyConfig = field(default_factory=TrafficSafetyConfig)
    drug: DrugSafetyConfig = field(default_factory=DrugSafetyConfig)


@dataclass
class EquityRule:
    """No group of ``group_kind`` may be worse than baseline on ``metric`` by more than ``max`` (units of the
    metric) / ``max_rel`` (share of the group's baseline), judged on the unfavourable end of its interval."""

    group_kind: str = "origin"
    metric: str = "mean_delay_s"
    direction: str = "minimize"  # minimize: higher is worse
    max: Optional[float] = None
    max_rel: Optional[float] = None
    required: bool = True  # false: skip the rule when the scenario has no such groups (e.g. no bus lines)


@dataclass
class ValidityConfig:
    validated_range: Dict[str, Any] = field(default_factory=dict)  # param -> [low, high], narrower than bounds
    stress_key: Optional[str] = "scenario.demand_scale"  # config key scaled by each factor; null: skip
    stress_factors: List[float] = field(default_factory=lambda: [0.8, 1.2])
    stress_replications: int = 4
    # external validity: the plan replayed in SUMO under each of these car-following models (scenarios from SUMO
    # files; seeds and threshold per tier: controls.<tier>.transfer_seeds / transfer_min_ratio)
    transfer_car_following: List[str] = field(default_factory=lambda: ["IDM", "Krauss"])


@dataclass
class AuditConfig:
    log: Optional[str] = None  # null: outputs/audit.jsonl under the working directory


@dataclass
class SigningConfig:
    allowed_signers: Optional[str] = None  # ssh-keygen allowed-signers file (principal = reviewer name)
    namespace: str = "twins-review"


@dataclass
class EthicsConfig:
    name: str = "default"
    enabled: bool = True  # false: no evidence is gathered; every gate says NEEDS_HUMAN and export is refused
    author: Optional[str] = None  # who ran the experiment; null: the OS user at run time
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    impact: ImpactConfig = field(default_factory=ImpactConfig)
    controls: ControlsConfig = field(default_factory=ControlsConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    credibility: CredibilityConfig = field(default_factory=CredibilityConfig)
    reproducibility: ReproducibilityConfig = field(default_factory=ReproducibilityConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    equity: List[EquityRule] = field(default_factory=list)
    validity: ValidityConfig = field(default_factory=ValidityConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)


def as_config(cfg) -> DictConfig:
    """The ethics node merged over the schema defaults (a dict, DictConfig or None)."""
    base = OmegaConf.structured(EthicsConfig)
    if cfg is None:
        return base
    return OmegaConf.merge(base, cfg)


def validate(e) -> None:
    i = e.impact
    check(i.reversibility in REVERSIBILITY, "ethics.impact.reversibility", i.reversibility,
          " | ".join(REVERSIBILITY), suggest(i.reversibility, REVERSIBILITY))
    check(i.domain in DOMAINS, "ethics.impact.domain", i.domain, " | ".join(DOMAINS), suggest(i.domain, DOMAINS))
    check(i.people_affected >= 0, "ethics.impact.people_affected", i.people_affected, "an integer >= 0")
    check(i.duration_days >= 0, "ethics.impact.duration_days", i.duration_days, ">= 0 days")
    for t in TIERS:
        c = e.controls[t]
        check(c.approvers >= 1, f"ethics.controls.{t}.approvers", c.approvers, "an integer >= 1")
        check(c.held_out_replications >= 2, f"ethics.controls.{t}.held_out_replications",
              c.held_out_replications, "an integer >= 2 (an interval needs two)")
        check(c.transfer_seeds >= 2, f"ethics.controls.{t}.transfer_seeds", c.transfer_seeds,
              "an integer >= 2 (a paired interval over SUMO seeds needs two)")
        check(c.transfer_min_ratio is None or c.transfer_min_ratio >= 0, f"ethics.controls.{t}.transfer_min_ratio",
              c.transfer_min_ratio, "a ratio >= 0 (realized / predicted effect), or null to skip the gate")
    c = e.credibility
    # a typo must not silently flip the direction the gates judge the policy on
    check(c.direction in (None, *DIRECTIONS), "ethics.credibility.direction", c.direction,
          "minimize, maximize or null (the first search objective's direction)", suggest(c.direction, DIRECTIONS))
    check(c.min_effect >= 0, "ethics.credibility.min_effect", c.min_effect,
          "a number >= 0 (the smallest improvement that matters, in the metric's units)")
    check(c.max_gap is None or c.max_gap >= 0, "ethics.credibility.max_gap", c.max_gap, "a number >= 0 or null")
    for k, r in enumerate(e.equity):
        check(r.direction in DIRECTIONS, f"ethics.equity[{k}].direction", r.direction,
              "minimize or maximize", suggest(r.direction, DIRECTIONS))
        check(r.max is not None or r.max_rel is not None, f"ethics.equity[{k}]", OmegaConf.to_container(r),
              "a rule with max and/or max_rel")
    for name, rng in e.validity.validated_range.items():
        check(len(rng) == 2 and rng[0] <= rng[1], f"ethics.validity.validated_range.{name}", list(rng),
              "[low, high] with low <= high")
    check(e.reproducibility.replications >= 1, "ethics.reproducibility.replications",
          e.reproducibility.replications, "an integer >= 1")
    check(e.validity.stress_replications >= 2, "ethics.validity.stress_replications",
          e.validity.stress_replications, "an integer >= 2")
    if e.validity.stress_key is not None:  # no stress runs would leave the stress gate nothing to judge
        f = list(e.validity.stress_factors)
        check(len(f) >= 1 and all(x > 0 for x in f), "ethics.validity.stress_factors", f,
              "a list of one or more factors > 0, e.g. [0.8, 1.2] (or ethics.validity.stress_key=null to skip "
              "the stress runs, which leaves the validity.stress gate NEEDS_HUMAN)")
    cf = list(e.validity.transfer_car_following)
    check(len(cf) >= 1, "ethics.validity.transfer_car_following", cf, "a list of SUMO car-following models, e.g. "
          "[IDM, Krauss]")
    w = e.safety.drug.therapeutic_window
    if w is not None:
        check(len(w) == 2 and w[0] <= w[1], "ethics.safety.drug.therapeutic_window", list(w), "[low, high]")


# --- impact tier ---------------------------------------------------------------------------------
def impact_tier(impact) -> dict:
    """Tier I–IV from the questionnaire: points for irreversibility (0–2), people affected (0: < 1,000;
    1: < 100,000; 2: more), duration (0: <= 30 days; 1: <= 1 year; 2: longer), domain (research 0,
    mobility 1, road safety / health 2) and 1 if vulnerable groups are affected. 0–1 points: I, 2–3: II,
    4–5: III, 6+: IV. An irreversible change in health or road safety is at least III."""
    pts = {
        "reversibility": REVERSIBILITY[impact.reversibility],
        "people_affected": 0 if impact.people_affected < 1_000 else 1 if impact.people_affected < 100_000 else 2,
        "duration": 0 if impact.duration_days <= 30 else 1 if impact.duration_days <= 365 else 2,
        "domain": DOMAINS[impact.domain],
        "vulnerable_groups": 1 if len(impact.vulnerable_groups) else 0,
    }
    score = sum(pts.values())
    tier = 0 if score <= 1 else 1 if score <= 3 else 2 if score <= 5 else 3
    floor = ""
    if impact.reversibility == "irreversible" and DOMAINS[impact.domain] == 2 and tier < 2:
        tier, floor = 2, "irreversible change in a safety-critical domain: at least tier III"
    return {"tier": TIERS[tier], "score": score, "points": pts, "floor": floor}


def controls_for(e, tier: str) -> dict:
    c = e.controls[tier]
    return {"approvers": int(c.approvers), "held_out_replications": int(c.held_out_replications),
            "signature": bool(c.signature)}


# --- hashes and identity -------------------------------------------------------------------------
def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, allow_nan=True).encode()


def sha256(obj) -> str:
    return hashlib.sha256(obj if isinstance(obj, bytes) else canonical(obj)).hexdigest()


def config_hash(cfg) -> str:
    """SHA-256 of the resolved run config (the ``hydra`` node left out: it holds paths and times)."""
    d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    d.pop("hydra", None)
    return sha256(d)


def objective_spec(cfg) -> dict:
    """What "optimal" means for this run: the search objectives, constraints and weights."""
    s = cfg.get("search") or {}
    objs = [{"metric": str(o["metric"]), "direction": str(o.get("direction", "minimize"))}
            for o in (s.get("objectives") or [])]
    cons = [{k: v for k, v in OmegaConf.to_container(c).items()} if isinstance(c, DictConfig) else dict(c)
            for c in (s.get("constraints") or [])]
    e = cfg.get("ethics") or {}
    weights = dict((e.get("objective") or {}).get("weights") or {})
    if not weights and objs:
        weights = {o["metric"]: 1.0 for o in objs}
    cred = e.get("credibility") or {}
    judged = {"metric": cred.get("metric") or (objs[0]["metric"] if objs else None),
              "direction": cred.get("direction") or (objs[0]["direction"] if objs else "minimize")}
    return {"objectives": objs, "constraints": cons, "weights": {k: float(v) for k, v in weights.items()},
            "judged_on": judged}


def author_of(e) -> str:
    """The run's author: ``ethics.author`` if set, else the OS user running it."""
    if e.get("author"):
        return str(e.author)
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no user database
        return os.environ.get("USER", "unknown")


def same_person(a: str, b: str) -> bool:
    return " ".join(str(a).split()).casefold() == " ".join(str(b).split()).casefold()
