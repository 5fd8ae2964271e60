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


def _fail(msg: str, code: int = 2) -> None:
    print(f"twins: error: {' '.join(str(msg).split())}", file=sys.stderr)  # one line
    sys.exit(code)


def _unwritable(outdir, e: OSError) -> str:
    return (f"hydra.run.dir={str(outdir)!r}: cannot write {e.filename or outdir} ({e.strerror}). Choose a writable "
            "folder with hydra.run.dir=... or make it writable.")


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def print_summary(cfg, summary: dict, outdir) -> None:
    """The end of a run on the console: the main metrics with their 95% intervals (per arm), the paired effects
    of an intervention, and the folder."""
    import json

    metrics = _main_metrics(cfg, summary)
    lines = []
    if "arm0" in summary:  # a counterfactual: baseline and treated arm, then the paired effects
        arms = [summary[k] for k in sorted(summary, key=lambda k: int(k[3:]))]
        for a in arms:
            lines.append(f"{a.get('label', '')}:")
            lines += [f"  {m:<24} {_fmt(v.get('mean'))}  95% CI [{_fmt(v.get('ci_low'))}, {_fmt(v.get('ci_high'))}]"
                      for m in metrics if isinstance(v := (a.get("metrics") or {}).get(m), dict)]
        try:
            eff = json.loads((Path(outdir) / "effects.json").read_text())
            for arm in eff.values():
                net = arm.get("metrics") or {}
                rows = [(m, net[m]) for m in metrics if isinstance(net.get(m), dict)]
                lines.append(f"effect of {arm.get('label', '')} - baseline (paired, same replications):")
                lines += [f"  {m:<24} {_fmt(e.get('effect'))}  95% CI [{_fmt(e.get('ci_low'))}, "
                          f"{_fmt(e.get('ci_high'))}]" for m, e in rows]
        except (OSError, ValueError):
            pass
    else:
        lines += [f"  {m:<24} {_fmt(v.get('mean'))}  95% CI [{_fmt(v.get('ci_low'))}, {_fmt(v.get('ci_high'))}]"
                  f"  n={v.get('n')}" for m in metrics if isinstance(v := summary.get(m), dict)]
    head = f"{cfg.scenario.get('name', '')}: {int(cfg.replications)} replications"
    print("\n".join([head, *lines, f"run folder: {outdir}"]), flush=True)


def _main_metrics(cfg, summary: dict) -> list[str]:
    """The search objective's metric, then the twin's first metrics (its own order): four in all."""
    node = summary["arm0"].get("metrics", {}) if "arm0" in summary else summary
    names = [m for m in node if isinstance(node[m], dict)]
    first = [o.metric for o in ((cfg.get("search") or {}).get("objectives") or []) if o.metric in names]
    return list(dict.fromkeys(first + names))[:4]


def precheck(overrides: list[str], command: str = "run", multirun: bool = False) -> None:
    """Compose the config the way Hydra will (first value of each sweep) and validate it: its values, the
    launcher plugin, the memory it will need (twins.compute.plan.check_memory) and the run folder. Everything
    here runs before Hydra creates the folder, so a refusal leaves nothing on disk."""
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
        _check_launchers(parsed)
        _check_memory(cfg, command)
        if command == "calibrate":  # the counts and the scenario's files, before Hydra makes the folder
            from twins.calibration.run import check_inputs

            check_inputs(cfg)
    except ConfigError as e:
        _fail(str(e))
    _check_folder(cfg, parsed, command, multirun)


#: Hydra launcher plugins by the name a user gives (hydra/launcher=NAME) and the module that provides them
LAUNCHERS = {"joblib": "hydra_plugins.hydra_joblib_launcher", "submitit_local": "hydra_plugins.hydra_submitit_launcher",
             "submitit_slurm": "hydra_plugins.hydra_submitit_launcher"}


def _check_launchers(parsed) -> None:
    from twins.compute.plan import installed

    for o in parsed:
        if o.get_key_element() == "hydra/launcher" and not o.is_sweep_override():
            name = str(o.value())
            mod = LAUNCHERS.get(name)
            if mod is not None and not installed(mod):
                raise ConfigError("hydra/launcher", name, "a launcher that is installed (basic is built in)",
                                  f'The {name} launcher comes with the launchers extra: pip install -e ".[launchers]" '
                                  "(or leave hydra/launcher out to run the jobs one after another).")


def _check_memory(cfg, command: str) -> None:
    """The estimate for the run (all its worlds: replications x arms), or for a search's largest batch."""
    import interventions
    from interventions import counterfactual as cf
    from twins.compute.plan import check_memory

    R = int(cfg.replications)
    if command == "search" and cfg.get("search") is not None:
        s = cfg.search
        conf = s.get("confirm") or {}
        batch = int(s.get("batch") or 1)  # null: planned to fit memory, one candidate at least
        confirm_R = int(conf.get("replications") or 2 * R)
        worlds = max((batch + 1) * R, (int(conf.get("top", 3) or 0) + 1) * confirm_R)
        check_memory(cfg, worlds, f"each search batch ({worlds:,} worlds at most)")
    else:
        arms = cf.arms_from_config(interventions.get(cfg.get("intervention", None)))
        check_memory(cfg, R * len(arms), "this run")


def _resolve_dir(parsed, key: str) -> Path | None:
    """Where Hydra will write (``hydra.run.dir`` or ``hydra.sweep.dir``), resolved as Hydra will; None when
    it cannot be resolved here (Hydra then reports it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    plain = [o.input_line for o in parsed if not o.is_hydra_override() and not o.is_sweep_override()]
    hydra_all = [o.input_line for o in parsed if o.is_hydra_override() and not o.is_sweep_override()]
    # all of Hydra's own overrides, else (a plugin's settings that do not compose here) only the folders'
    hydra_dirs = [x for x in hydra_all if x.lstrip("+~").startswith(("hydra.run.", "hydra.sweep.", "hydra.job."))]
    for lines in (hydra_all + plain, hydra_dirs + plain):
        try:
            with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
                hcfg = compose(config_name="config", overrides=lines, return_hydra_config=True)
            HydraConfig.instance().set_config(hcfg)
            return Path(str(OmegaConf.select(hcfg, key)))
        except Exception:  # noqa: BLE001  (e.g. an interpolation of a swept value: the job checks its folder)
            continue
    return None


def _writable(folder: Path) -> bool:
    import os

    p = folder
    while not p.exists() and p != p.parent:
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)


def _check_folder(cfg, parsed, command: str, multirun: bool) -> None:
    """Refuse a folder Hydra cannot write, one another run is writing into, or one holding another run's files
    (unless output.overwrite=true; a multirun's sweep folder is cleared here, before Hydra starts its jobs)."""
    from twins.core import io

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    folder = _resolve_dir(parsed, key)
    if folder is None:
        return
    overwrite = bool(cfg.output.get("overwrite", False))
    resume = command == "search" and bool((cfg.get("search") or {}).get("resume", False))
    if overwrite and resume:
        _fail("output.overwrite=true clears the folder that search.resume=true means to continue: use one of them.")
    if not _writable(folder):
        _fail(f"{key}={str(folder)!r}: the folder is not writable (permission denied). Choose a writable folder "
              f"with {key}=... or make it writable.")
    jobs = [folder] + ([p for p in folder.iterdir() if p.is_dir()] if multirun and folder.is_dir() else [])
    for d in jobs:
        pid = io.lock_holder(d)
        if pid is not None:
            _fail(f"{key}={str(folder)!r}: another twins run (pid {pid}) is writing into {d}. Wait for it to "
                  f"finish, or choose another folder ({key}=...).")
    left = io.foreign_entries(folder)
    if not left or resume:
        return
    names = ", ".join(p.name for p in left[:5]) + (", ..." if len(left) > 5 else "")
    if not overwrite:
        also = " (a search continues its own folder with search.resume=true)" if command == "search" else ""
        _fail(f"output.overwrite=False is invalid: expected true to clear {folder} first. The folder holds another "
              f"run's files ({names}); runs are never mixed. Choose a new folder ({key}=...) or add "
              f"output.overwrite=true{also}.")
    if not io.is_run_folder(folder):  # checked here: once Hydra wrote .hydra/ into it, any folder looks like one
        _fail(f"output.overwrite=true is invalid: {folder} holds files but none a twins run writes: not clearing "
              f"it. Choose another folder ({key}=...).")
    if multirun:  # the jobs' own folders are cleared by each job; the sweep's summary and old jobs here
        try:
            io.clear_folder(folder)
        except (OSError, ConfigError) as e:
            _fail(f"{key}={str(folder)!r}: could not clear it for output.overwrite=true: {e}")


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

    from twins.core import io

    outdir = HydraConfig.get().runtime.output_dir
    try:
        set_threads(cfg.compute.get("threads"))
        with io.RunFolder(outdir, overwrite=cfg.output.get("overwrite", False)):
            summary = runner.run(cfg, outdir)
    except ConfigError as e:
        _fail(str(e))
    except io.FolderInUse as e:
        _fail(str(e))
    except NumericalError as e:
        _fail(f"{e} The results recorded before are in {outdir} (manifest: complete = false).")
    except KeyboardInterrupt:
        _fail(f"interrupted. The results recorded before are in {outdir} (manifest: complete = false).", 130)
    except PermissionError as e:
        _fail(_unwritable(outdir, e))
    print_summary(cfg, summary, outdir)
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

    from interventions.search_config import search_from_config
    from twins import ethics

    from twins.core import io

    outdir = HydraConfig.get().runtime.output_dir
    try:
        set_threads(cfg.compute.get("threads"))
        with io.RunFolder(outdir, overwrite=cfg.output.get("overwrite", False),
                          reuse=bool(cfg.search.get("resume", False))):
            # the hard ethics gates enter the search as constraints; all gates re-check the confirmed winner
            cfg = ethics.with_search_constraints(cfg)
            res = search_from_config(cfg, outdir)
            ethics.review_search(cfg, outdir, res)
    except ConfigError as e:
        _fail(str(e))
    except io.FolderInUse as e:
        _fail(str(e))
    except NumericalError as e:
        _fail(f"{e} The evaluations finished before are in {outdir}.")
    except KeyboardInterrupt:
        _fail(f"interrupted. The evaluations finished before are in {outdir} (manifest: complete = false; "
              "continue with search.resume=true and the same hydra.run.dir).", 130)
    except PermissionError as e:
        _fail(_unwritable(outdir, e))
    print(f"search folder: {outdir}")
    if res.best:
        m = cfg.search.objectives[0].metric
        return res.best["confirmed"].get(m, {}).get("effect")
    return None


@hydra.main(config_path=CONF_DIR, config_name="config", version_base=None)
def calibrate_main(cfg: DictConfig) -> float | None:
    """``python -m twins calibrate``: fit the scenario's route flows to ``observed.counts``, write the folder
    (twins/calibration/run.py); returns the calibrated mean GEH."""
    from hydra.core.hydra_config import HydraConfig

    from twins.calibration import run as calibration
    from twins.core import io

    outdir = HydraConfig.get().runtime.output_dir
    try:
        set_threads(cfg.compute.get("threads"))
        with io.RunFolder(outdir, overwrite=cfg.output.get("overwrite", False)):
            rec = calibration.calibrate_from_config(cfg, outdir)
    except ConfigError as e:
        _fail(str(e))
    except io.FolderInUse as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail(f"interrupted: the calibration in {outdir} is incomplete (no calibration.json).", 130)
    except PermissionError as e:
        _fail(_unwritable(outdir, e))
    print(calibration.summary_lines(rec, outdir), flush=True)
    return float(rec["fit"]["mean_geh"])
