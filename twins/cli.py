"""Hydra entry points for the subcommands, and a pre-check that turns config mistakes
into one clear message (the field, the value, what is valid) before Hydra starts a job."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from twins.compute.device import set_threads
from twins.core.config import register_configs
from twins.core.errors import ConfigError, NumericalError, suggest

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
log = logging.getLogger("twins")

register_configs()


def _fail(msg: str) -> None:
    print(f"twins: error: {msg}", file=sys.stderr)
    sys.exit(2)


def precheck(overrides: list[str]) -> None:
    """Compose the config the way Hydra will (first value of each sweep) and validate it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from twins.core.config import validate_common

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        _fail(str(e))
    simple = []
    for o in parsed:
        if o.is_hydra_override():
            continue
        if o.is_sweep_override():
            first = next(iter(o.sweep_string_iterator()))
            simple.append(f"{o.get_key_element()}={first}")
        else:
            simple.append(o.input_line)
    base = None
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            # group choices only first: the valid keys to suggest when a setting is misspelled
            try:
                base = compose(config_name="config", overrides=[s for s in simple if "." not in s.split("=")[0]])
            except (HydraException, OmegaConfBaseException):
                base = None
            cfg = compose(config_name="config", overrides=simple)
    except (HydraException, OmegaConfBaseException) as e:
        _fail(_explain(e, base))
    try:
        validate_common(cfg)
    except ConfigError as e:
        _fail(str(e))


def _explain(e: Exception, base) -> str:
    """Add the valid keys (and a close match) to Hydra's 'not in struct' message."""
    import re

    msg = str(e).strip()
    cause = e.__cause__ or e
    key = getattr(cause, "full_key", None)
    m = re.search(r"Could not override '([^']+)'", msg)
    if m and ("not in struct" in str(cause) or "not in struct" in msg or key is None):
        key = m.group(1)
    if key and ("not in struct" in str(cause) or m):
        parent, _, leaf = key.rpartition(".")
        try:
            from hydra import compose, initialize_config_dir

            if base is None:
                with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
                    base = compose(config_name="config")
            node = OmegaConf.select(base, parent) if parent else base
            keys = list(node.keys()) if node is not None else []
        except Exception:  # pragma: no cover
            keys = []
        return (f"{key}: no such setting. " + (suggest(leaf, keys) if keys else "")).strip()
    m = re.search(r"Could not find '([\w/]+)/([^']+)'", msg)
    if m:
        group, name = m.groups()
        options = [p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml")]
        return f"{group}={name}: no such {group}. {suggest(name, options)}"
    lines = [ln for ln in msg.splitlines() if ln.strip()]
    return " ".join(lines[:4]) if lines else repr(e)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base=None)
def run_main(cfg: DictConfig) -> float | None:
    """``python -m twins run``: simulate, write the run folder, return the objective (for sweepers)."""
    from hydra.core.hydra_config import HydraConfig

    from twins.core import runner

    outdir = HydraConfig.get().runtime.output_dir
    try:
        set_threads(cfg.compute.get("threads"))
        summary = runner.run(cfg, outdir)
    except ConfigError as e:
        _fail(str(e))
    except NumericalError as e:
        _fail(f"{e} The results recorded before are in {outdir} (manifest: complete = false).")
    # the objective a Hydra sweeper optimizes: the first search objective's metric, of the
    # treated arm when the run has an intervention
    objectives = cfg.get("search", {}).get("objectives") or []
    if not objectives:
        return None
    metric = objectives[0].metric
    node = summary[f"arm{len(summary) - 1}"]["metrics"] if "arm0" in summary else summary
    value = (node.get(metric) or {}).get("mean")
    return None if value is None else float(value)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base=None)
def search_main(cfg: DictConfig) -> float | None:
    """``python -m twins search``: search the intervention's parameters, confirm on held-out replications,
    write the run folder; returns the winner's confirmed effect on the first objective."""
    from hydra.core.hydra_config import HydraConfig

    from interventions.search import search_from_config
    from twins import ethics

    outdir = HydraConfig.get().runtime.output_dir
    try:
        set_threads(cfg.compute.get("threads"))
        # the hard ethics gates enter the search as constraints; all gates re-check the confirmed winner
        cfg = ethics.with_search_constraints(cfg)
        res = search_from_config(cfg, outdir)
        ethics.review_search(cfg, outdir, res)
    except ConfigError as e:
        _fail(str(e))
    except NumericalError as e:
        _fail(f"{e} The evaluations finished before are in {outdir}.")
    if res.best:
        m = cfg.search.objectives[0].metric
        return res.best["confirmed"].get(m, {}).get("effect")
    return None
