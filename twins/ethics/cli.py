"""``python -m twins review ...`` and ``python -m twins export ...`` (argparse: these are not Hydra tasks)."""
from __future__ import annotations

import argparse
import sys

from .review import ReviewError


def _parser_review() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m twins review",
                                description="Show, approve, reject a run's ethics review; verify the audit log.")
    sub = p.add_subparsers(dest="action", required=True, metavar="{show,approve,reject,verify}")
    s = sub.add_parser("show", help="the objective, trade-offs, per-group effects and every gate (writes review.md)")
    s.add_argument("run", help="run folder (outputs/<date>/<time>_<scenario>)")
    a = sub.add_parser("approve", help="record an approval by a person other than the run's author")
    a.add_argument("run")
    a.add_argument("--reviewer", required=True, help="the approver's name (the principal in allowed-signers)")
    a.add_argument("--role", required=True, help="the approver's role, e.g. 'traffic safety officer'")
    a.add_argument("--sign", metavar="KEY", help="sign the approval with this SSH private key (tiers III-IV)")
    r = sub.add_parser("reject", help="record a rejection (the run can then never be exported)")
    r.add_argument("run")
    r.add_argument("--reason", required=True)
    r.add_argument("--reviewer", help="who rejects (default: the OS user)")
    r.add_argument("--role")
    v = sub.add_parser("verify", help="check the audit log's hash chain; names edited/deleted/inserted/reordered lines")
    v.add_argument("log", nargs="?", help="audit log (default: outputs/audit.jsonl)")
    return p


def _print_to_pipe(text: str) -> None:
    """Print, quietly stopping when the reader closes the pipe (``review show RUN | head``)."""
    import os

    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit


def review_main(argv: list[str]) -> int:
    from . import audit, review

    args = _parser_review().parse_args(argv)
    try:
        if args.action == "show":
            _print_to_pipe(review.show(args.run))
        elif args.action == "approve":
            rec = review.approve(args.run, args.reviewer, args.role, args.sign)
            print(f"approved by {args.reviewer} ({args.role}); review status: {rec['status']}")
            if rec["status"] != "cleared":
                for g in rec["gates"]:
                    if g["status"] != "PASS":
                        print(f"  {g['status']:<11} {g['gate']}: {g['reason']}")
        elif args.action == "reject":
            review.reject(args.run, args.reason, args.reviewer, args.role)
            print(f"rejected: {args.reason}")
        else:
            v = audit.verify(args.log or audit.default_log())
            if v.missing:  # a wrong path is a usage error, not evidence of tampering
                print(f"twins review: error: {v}", file=sys.stderr)
                return 2
            print(v)
            return 0 if v.ok else 1
    except ReviewError as e:
        print(f"twins review: error: {e}", file=sys.stderr)
        return 1
    return 0


def export_main(argv: list[str]) -> int:
    from .export import FORMATS, export

    p = argparse.ArgumentParser(
        prog="python -m twins export",
        description="Export a run's recommended policy: refused, writing nothing, unless every gate passed and the "
                    "approval is valid.")
    p.add_argument("run", help="run folder")
    p.add_argument("--format", default="json", choices=FORMATS,
                   help="json: policy.json with the review record; sumo: also a tlLogic additional file")
    p.add_argument("--out", help="output folder (default: RUN/export)")
    args = p.parse_args(argv)
    try:
        for f in export(args.run, args.format, args.out):
            print(f"wrote {f}")
    except ReviewError as e:
        print(f"twins export: {e}", file=sys.stderr)
        return 1
    return 0
