"""Structured configs (Hydra ConfigStore) and checks done before compute starts.

Every YAML in ``conf/`` extends one of these dataclasses, so Hydra rejects a
misspelled key or a wrong type while composing; :func:`validate_common`
rejects impossible values with the field, the value, and what is valid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from twins.calibration.config import CalibrateConfig, ObservedConfig

from .errors import ConfigError, check, suggest


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
    # refuse a run, search batch or chunk whose estimated memory is above this (GB), on the compute device and on
    # this machine (the results); null: memory_fraction of what is free (twins.compute.plan.check_memory)
    max_memory_gb: Optional[float] = None


@dataclass
class OutputConfig:
    figures: bool = True
    trips: bool = True
    timeseries_interval_s: float = 60.0
    trajectory_every: int = 0  # record running vehicles every N steps (time–space diagrams); 0: off
    overwrite: bool = False  # a run into a folder that holds files already: false refuses it; true clears it first


@dataclass
class ObjectiveConfig:
    metric: str = "mean_delay_s"
    direction: str = "minimize"  # minimize | maximize


@dataclass
class ConstraintConfig:
    metric: str = MISSING
    max: Optional[float] = None  # feasible when the mean effect <= max
    min: Optional[float] = None  # ... and >= min
    # approach | origin | mode | bus_line | expression: the limit holds for every such group (the kinds the
    # scenario's twin reports; checked before the search starts: interventions.search_objectives.check_targets)
    group_kind: Optional[str] = None
    group: Optional[str] = None  # ... or just this one
    # limits relative to the baseline's mean (of the network, or of each group): effect <= max_rel * |baseline|
    # (and >= min_rel * |baseline|); e.g. {metric: delay_veh_h, group_kind: approach, max_rel: 0.25}
    max_rel: Optional[float] = None
    min_rel: Optional[float] = None


@dataclass
class ConfirmConfig:
    top: int = 3
    replications: Optional[int] = None  # None: 2 × replications
    replication_offset: int = 10_000
    during_search: bool = True  # confirm the leader on held-out worlds as it changes (progress shows it)


@dataclass
class SearchConfig:
    budget: int = 32  # >= 1 (ranges checked by validate_search below)
    batch: Optional[int] = 8  # >= 1; null: planned from device memory (twins.compute.plan.search_batch)
    sampler: str = "tpe"  # tpe | cmaes | nsga2 | random | grid
    seed: Optional[int] = None  # in [0, 2^63); null: the run's seed
    objectives: List[ObjectiveConfig] = field(default_factory=lambda: [ObjectiveConfig()])
    constraints: List[ConstraintConfig] = field(default_factory=list)
    params: Optional[List[str]] = None
    grid_points: int = 5  # >= 1, values per parameter (sampler=grid)
    storage: Optional[str] = None
    study_name: str = "twins-search"
    resume: bool = False  # true: continue the stored study (refused when there is none: search.check_resume)
    # the scenario's own plan (every searched parameter at its baseline value) is the first trial, so the
    # search always has it as a candidate (skipped, with the reason, where it is not a point of the space)
    start_from_baseline: bool = True
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)


@dataclass
class TwinsConfig:
    seed: int = 0  # in [0, 2^63): keys the counter-based noise (int64)
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
    calibrate: Any = None  # conf/calibrate/ (python -m twins calibrate)
    observed: ObservedConfig = field(default_factory=ObservedConfig)  # the counts a calibration fits


@dataclass
class TransferConfig:
    """``python -m twins transfer RUN transfer.KEY=VALUE``: replay a run's plan in SUMO (interventions/transfer.py)."""

    seeds: int = 4  # SUMO runs per program and car-following model (--seed first_seed, first_seed + 1, ...)
    first_seed: int = 0
    car_following: List[str] = field(default_factory=lambda: ["IDM", "Krauss"])  # SUMO's --default.carfollowmodel
    jobs: Optional[int] = None  # SUMO processes at once; null: one per CPU core
    timeout_s: Optional[float] = None  # per SUMO run; null: none
    progress: bool = True  # a progress bar while SUMO runs
    # twin: each seed replays one of the twin's replications behind the prediction, with the departures the twin drew
    # for it; file: the route files as written; auto: twin when the twin draws its demand per replication, else file
    demand: str = "auto"


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
    cs.store(group="calibrate", name="calibrate_schema", node=CalibrateConfig)
    from twins.ethics.config import EthicsConfig

    cs.store(group="ethics", name="ethics_schema", node=EthicsConfig)
    import interventions  # noqa: F401  (fills the intervention registry)

    interventions.register_configs(cs)  # intervention/<name>_schema, none_schema included
    for kind, entry in SCENARIOS.items():
        cs.store(group="scenario", name=f"{kind}_schema", node=entry.schema)
    _registered = True


def validate_common(cfg) -> None:
    """Checks that apply to every twin, before any compute."""
    check_finite(cfg)  # first: inf/nan would break the arithmetic of the checks below
    check(cfg.dt_s > 0, "dt_s", cfg.dt_s, "a positive number of seconds, e.g. dt_s=0.5")
    check(cfg.horizon_s > 0, "horizon_s", cfg.horizon_s, "a positive number of seconds")
    n = cfg.horizon_s / cfg.dt_s
    check(abs(n - round(n)) < 1e-9 * max(1.0, n), "horizon_s", cfg.horizon_s,
          f"a whole multiple of dt_s={cfg.dt_s}",
          f"Try horizon_s={round(n) * cfg.dt_s:g}.")
    check(cfg.replications >= 1, "replications", cfg.replications, "an integer >= 1")
    validate_values(cfg)
    check(cfg.compute.dtype in ("float32", "float64"), "compute.dtype", cfg.compute.dtype,
          "float32 or float64")
    from twins.compute.plan import check_compute  # chunk size, backend, device: before any compute

    check_compute(cfg)
    if cfg.get("ethics") is not None:  # the review's settings, checked before compute is spent on the run
        from twins.ethics.config import validate

        validate(cfg.ethics)


# --- value checks that hold for every field of the composed config --------------------------------------
SEED_MAX = 2**63  # seeds are keys of the counter-based noise (int64): [0, 2^63)


def _leaves(node, prefix: str = ""):
    """``(dotted key, value)`` of every leaf of a config node (lists as ``key[i]``)."""
    from omegaconf import DictConfig, ListConfig

    if isinstance(node, (DictConfig, dict)):
        for k in node.keys():
            try:
                v = node[k]
            except Exception:  # noqa: BLE001  (an unresolvable interpolation: Hydra reports it itself)
                continue
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, (ListConfig, list, tuple)):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, node


def check_finite(cfg) -> None:
    """Every number in the config is finite."""
    for key, v in _leaves(cfg):
        # inf/nan would reach the kernels as "no limit" or overflow an integer cast deep inside a builder
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(key, v, "a finite number", "inf and nan are not values a twin can simulate; "
                              "for no limit use null where the setting allows it.")


def validate_values(cfg) -> None:
    """Non-finite numbers, seeds, output intervals, search settings, and whether the intervention fits the
    scenario: each refused with the field, the value and what is valid, before any compute."""
    check_finite(cfg)
    _check_seed("seed", cfg.get("seed"))
    validate_output_values(cfg)
    if cfg.get("search") is not None:
        validate_search(cfg.search)
    _check_fit(cfg)
    import scenarios

    scenarios.validate(cfg)


def _check_seed(key: str, seed) -> None:
    ok = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < SEED_MAX
    check(ok, key, seed, f"an integer in [0, 2^63) = [0, {SEED_MAX - 1}]",
          "Seeds key the counter-based noise as int64; e.g. seed=0.")


def validate_output_values(cfg) -> None:
    """The output intervals: 0 or a negative number is not "every step" (say output.trajectory_every=1)."""
    out = cfg.get("output")
    if out is None:
        return
    every = out.get("trajectory_every", 0)
    check(every is not None and every >= 0, "output.trajectory_every", every,
          "0 (off) or N >= 1 (every N steps)", "For every step: output.trajectory_every=1.")
    iv = out.get("timeseries_interval_s", 60.0)
    check(iv is not None and iv > 0, "output.timeseries_interval_s", iv,
          "a positive number of seconds (one row per interval)",
          f"For every step: output.timeseries_interval_s={cfg.get('dt_s', 1.0):g} (dt_s).")


def validate_search(s) -> None:
    """``search.*`` checks that need no twin (metrics and group kinds are checked against the scenario's twin
    by :func:`interventions.search_objectives.check_targets`; ``resume`` against the run folder by
    :func:`interventions.search_config.check_resume`)."""
    from interventions.search_objectives import DIRECTIONS
    from interventions.search_space import SAMPLERS

    check(s.get("budget") is not None and s.budget >= 1, "search.budget", s.get("budget"), "an integer >= 1")
    check(s.get("batch") is None or s.batch >= 1, "search.batch", s.get("batch"),
          "an integer >= 1, or null (planned from device memory)")
    check(s.get("sampler") in SAMPLERS, "search.sampler", s.get("sampler"), " | ".join(SAMPLERS),
          suggest(str(s.get("sampler")), SAMPLERS))
    check(s.get("grid_points") is not None and s.grid_points >= 1, "search.grid_points", s.get("grid_points"),
          "an integer >= 1 (values per parameter for search.sampler=grid)", "e.g. search.grid_points=5.")
    if s.get("seed") is not None:
        _check_seed("search.seed", s.seed)
    for i, o in enumerate(s.get("objectives") or []):
        check(o.get("direction") in DIRECTIONS, f"search.objectives[{i}].direction", o.get("direction"),
              "minimize or maximize", suggest(str(o.get("direction")), DIRECTIONS))
    for i, c in enumerate(s.get("constraints") or []):
        check(any(c.get(k) is not None for k in ("max", "min", "max_rel", "min_rel")), f"search.constraints[{i}]",
              dict(c), "a limit: {metric: ..., max: ...} and/or min, max_rel (share of the baseline), min_rel")
        if c.get("max") is not None and c.get("min") is not None:
            check(c.min <= c.max, f"search.constraints[{i}].min", c.min, f"<= max ({c.max:g})")
        if c.get("max_rel") is not None and c.get("min_rel") is not None:
            check(c.min_rel <= c.max_rel, f"search.constraints[{i}].min_rel", c.min_rel, f"<= max_rel ({c.max_rel:g})")
    conf = s.get("confirm") or {}
    check(conf.get("top", 3) is not None and conf.get("top", 3) >= 1, "search.confirm.top", conf.get("top"),
          "an integer >= 1")
    r = conf.get("replications")
    check(r is None or r >= 2, "search.confirm.replications", r, "an integer >= 2 (an interval needs two), or null")


def _check_fit(cfg) -> None:
    """The intervention must act on the scenario's twin (signal timing on a molecular box cannot)."""
    import interventions
    import scenarios

    scen, iv = cfg.get("scenario"), cfg.get("intervention")
    if scen is None or iv is None or scen.get("kind") not in scenarios.SCENARIOS:
        return
    interventions.check_fit(iv.get("name", "none"), scenarios.twin_of(scen.kind), str(scen.get("name") or scen.kind))
