"""Structured configs (Hydra ConfigStore) and checks done before compute starts.

Every YAML in ``conf/`` extends one of these dataclasses, so Hydra rejects a
misspelled key or a wrong type while composing; :func:`validate_common`
rejects impossible values with the field, the value, and what is valid.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from .errors import check


@dataclass
class ComputeConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N (auto, cuda: every visible GPU)
    dtype: str = "float32"  # float32 | float64
    max_worlds_per_chunk: Optional[int] = None  # null: as many as fit memory_fraction of free memory
    memory_fraction: float = 0.8  # share of the device's free memory a chunk may use
    backend: str = "local"  # local | ray (twins/compute/)
    address: str = "local"  # ray: local | auto | ray://host:port | host:port
    num_cpus: Optional[int] = None  # ray, address=local: CPUs of the started instance (null: all)
    workers: Optional[int] = None  # chunks run at once (null: every GPU / Ray worker)
    max_retries: int = 3  # ray: re-runs of a chunk whose worker died
    cpu_watts_per_core: float = 4.4  # energy estimate where RAPL is unreadable (EPYC 7763: 280 W / 64 cores)
    threads: Optional[int] = None  # torch intra-op CPU threads (null: torch's default, one per core)
    # traffic: fuse the per-vehicle rules (same numbers, faster). null: the compiled CPU step where a C++
    # compiler is found; true: that step (an error without a compiler), and torch.compile on CUDA; false: neither
    compile: Optional[bool] = None


@dataclass
class InterventionConfig:
    name: str = "none"


@dataclass
class OutputConfig:
    figures: bool = True
    trips: bool = True
    timeseries_interval_s: float = 60.0
    trajectory_every: int = 0  # record running vehicles every N steps (time–space diagrams); 0: off


@dataclass
class ObjectiveConfig:
    metric: str = "mean_delay_s"
    direction: str = "minimize"  # minimize | maximize


@dataclass
class ConstraintConfig:
    metric: str = MISSING
    max: Optional[float] = None  # feasible when the mean effect <= max
    min: Optional[float] = None  # ... and >= min
    group_kind: Optional[str] = None  # approach | origin | mode | cell ...: the limit holds for every such group
    group: Optional[str] = None  # ... or just this one


@dataclass
class ConfirmConfig:
    top: int = 3
    replications: Optional[int] = None  # None: 2 × replications
    replication_offset: int = 10_000
    during_search: bool = True  # confirm the leader on held-out worlds as it changes (progress shows it)


@dataclass
class SearchConfig:
    budget: int = 32
    batch: Optional[int] = 8  # null: planned from device memory (twins.compute.plan.search_batch)
    sampler: str = "tpe"  # tpe | cmaes | nsga2 | random | grid
    seed: Optional[int] = None
    objectives: List[ObjectiveConfig] = field(default_factory=lambda: [ObjectiveConfig()])
    constraints: List[ConstraintConfig] = field(default_factory=list)
    params: Optional[List[str]] = None
    grid_points: int = 5
    storage: Optional[str] = None
    study_name: str = "twins-search"
    resume: bool = False
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)


@dataclass
class TwinsConfig:
    seed: int = 0
    replications: int = 8
    horizon_s: float = 3600.0
    dt_s: float = 1.0
    progress: Optional[bool] = None  # None: a bar only on runs longer than a few seconds
    scenario: Any = MISSING
    intervention: Any = MISSING
    search: Any = None  # conf/search/ (python -m twins search)
    ethics: Any = None  # conf/ethics/: review gates, audit log, approvals (twins.ethics)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


_registered = False


def register_configs() -> None:
    """Put every schema in Hydra's ConfigStore (idempotent)."""
    global _registered
    if _registered:
        return
    import scenarios  # noqa: F401  (fills the scenario registry)
    from scenarios import SCENARIOS

    cs = ConfigStore.instance()
    cs.store(name="twins_config", node=TwinsConfig)
    cs.store(group="compute", name="compute_schema", node=ComputeConfig)
    cs.store(group="search", name="search_schema", node=SearchConfig)
    from twins.ethics.config import EthicsConfig

    cs.store(group="ethics", name="ethics_schema", node=EthicsConfig)
    import interventions  # noqa: F401  (fills the intervention registry)

    interventions.register_configs(cs)  # intervention/<name>_schema, none_schema included
    for kind, entry in SCENARIOS.items():
        cs.store(group="scenario", name=f"{kind}_schema", node=entry.schema)
    _registered = True


def validate_common(cfg) -> None:
    """Checks that apply to every twin, before any compute."""
    check(cfg.dt_s > 0, "dt_s", cfg.dt_s, "a positive number of seconds, e.g. dt_s=0.5")
    check(cfg.horizon_s > 0, "horizon_s", cfg.horizon_s, "a positive number of seconds")
    n = cfg.horizon_s / cfg.dt_s
    check(abs(n - round(n)) < 1e-9 * max(1.0, n), "horizon_s", cfg.horizon_s,
          f"a whole multiple of dt_s={cfg.dt_s}",
          f"Try horizon_s={round(n) * cfg.dt_s:g}.")
    check(cfg.replications >= 1, "replications", cfg.replications, "an integer >= 1")
    check(cfg.compute.dtype in ("float32", "float64"), "compute.dtype", cfg.compute.dtype,
          "float32 or float64")
    from twins.compute.plan import check_compute  # chunk size, backend, device: before any compute

    check_compute(cfg)
    if cfg.get("ethics") is not None:  # the review's settings, checked before compute is spent on the run
        from twins.ethics.config import validate

        validate(cfg.ethics)
