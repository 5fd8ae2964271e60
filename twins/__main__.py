"""``python -m twins <subcommand> [hydra overrides]``."""
from __future__ import annotations

import sys

USAGE = """usage: python -m twins <command> [overrides ...]

commands:
  run      simulate a scenario (and an intervention's counterfactual) and write a run folder
  search   search an intervention's parameters for the best policy (confirmed on held-out worlds)
  review   show / approve / reject a run's ethics review; verify the audit log (review --help)
  export   export an approved policy (json, sumo), refused unless every gate passed (export --help)
  transfer replay a run's plan in SUMO (baseline vs plan, seeds x car-following models): does it hold?
  calibrate fit a SUMO scenario's route flows to observed counts (GEH, an ensemble, calibrated.sumocfg)

Hydra options work after the command: -m/--multirun, --cfg job, hydra.run.dir=..., --help.
Examples:
  python -m twins run scenario=traffic
  python -m twins run scenario=arterial replications=16 horizon_s=1800
  python -m twins run -m scenario=ring,junction
  python -m twins search scenario=arterial intervention=signal_timing search.budget=32 search.sampler=tpe
  python -m twins review show outputs/<date>/<time>_<scenario>
  python -m twins review approve outputs/<date>/<time>_<scenario> --reviewer "name" --role "traffic authority"
  python -m twins export outputs/<date>/<time>_<scenario> --format sumo
  python -m twins transfer outputs/<date>/<time>_sumo transfer.seeds=8 "transfer.car_following=[IDM,Krauss]"
  python -m twins calibrate scenario=sumo scenario.sumocfg=my.sumocfg observed.counts=counts.csv
"""

COMMANDS = {"run", "search", "calibrate"}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    if cmd in ("review", "export"):  # argparse commands over a finished run folder (twins/ethics/cli.py)
        from twins.ethics import cli as ethics_cli

        sys.exit((ethics_cli.review_main if cmd == "review" else ethics_cli.export_main)(rest))
    if cmd == "transfer":  # a task over a finished SUMO run folder (interventions/transfer.py), Hydra-style overrides
        from interventions import transfer

        sys.exit(transfer.main(rest))
    if cmd not in COMMANDS:
        from twins.core.errors import suggest

        known = COMMANDS | {"review", "export", "transfer"}
        print(f"twins: error: unknown command {cmd!r}. {suggest(cmd, known)}", file=sys.stderr)
        sys.exit(2)
    from twins import cli

    if cmd in ("run", "search", "calibrate"):
        info_flags = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--resolve", "--package", "-p"}
        overrides = [a for a in rest if not a.startswith("-")]
        if not info_flags.intersection(rest):
            cli.precheck(overrides, command=cmd, multirun=bool({"-m", "--multirun"}.intersection(rest)))
        sys.argv = [f"{sys.argv[0]} {cmd}"] + rest
        {"run": cli.run_main, "search": cli.search_main, "calibrate": cli.calibrate_main}[cmd]()


if __name__ == "__main__":
    main()
