"""``python -m twins <subcommand> [hydra overrides]``."""
from __future__ import annotations

import sys

USAGE = """usage: python -m twins <command> [overrides ...]

commands:
  run      simulate a scenario (and an intervention's counterfactual) and write a run folder
  search   search an intervention's parameters for the best policy (confirmed on held-out worlds)
  review   (not available yet) show / approve / reject / verify a run's ethics review
  export   (not available yet) export an approved policy, refused unless every gate passed

Hydra options work after the command: -m/--multirun, --cfg job, hydra.run.dir=..., --help.
Examples:
  python -m twins run scenario=traffic
  python -m twins run scenario=arterial replications=16 horizon_s=1800
  python -m twins run -m scenario=ring,junction
  python -m twins search scenario=arterial intervention=signal_timing search.budget=32 search.sampler=tpe
"""

COMMANDS = {"run", "search"}
PLANNED = {"review", "export"}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    if cmd in PLANNED:
        print(f"twins: error: '{cmd}' is not available yet: ethics review gates, review records and guarded "
              "export are still being built. Use 'run' or 'search'.", file=sys.stderr)
        sys.exit(2)
    if cmd not in COMMANDS:
        from twins.core.errors import suggest

        print(f"twins: error: unknown command {cmd!r}. {suggest(cmd, COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    from twins import cli

    if cmd in ("run", "search"):
        info_flags = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--resolve", "--package", "-p"}
        overrides = [a for a in rest if not a.startswith("-")]
        if not info_flags.intersection(rest):
            cli.precheck(overrides)
        sys.argv = [f"{sys.argv[0]} {cmd}"] + rest
        (cli.run_main if cmd == "run" else cli.search_main)()


if __name__ == "__main__":
    main()
