"""``trl-gram reproduce``: run (or resume) the reproduction experiment of a recipe and write its report.

trl-gram reproduce --config recipes/reproduce_smoke.yaml
trl-gram reproduce --config recipes/reproduce_cpu.yaml --seeds 0 --arms zero_shot_direct,direct
trl-gram reproduce --config recipes/reproduce_cpu.yaml --report-only
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="Reproduce the GRAM-R² claims in miniature (arms x seeds, resumable) and write its report.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="Recipe YAML (e.g. recipes/reproduce_cpu.yaml).")
    p.add_argument("--output_dir", default=None, help="Override the recipe's output_dir.")
    p.add_argument("--seeds", type=_ints, default=None, help="Comma-separated seeds (override).")
    p.add_argument("--arms", type=_names, default=None, help="Comma-separated arms (override).")
    p.add_argument("--tasks", type=_names, default=None, help="Comma-separated tasks: hh, synthetic (override).")
    p.add_argument(
        "--report",
        default=None,
        help="Report to write ('' to skip; default docs/reproduction_<name>.md for recipes/reproduce_<name>.yaml).",
    )
    p.add_argument("--report-only", action="store_true", help="Only rebuild the report from finished arms.")


def default_report_path(recipe: str) -> str:
    """``docs/reproduction_<name>.md`` for a recipe ``reproduce_<name>.yaml`` (``docs/reproduction_<stem>.md`` for any
    other recipe name), so that each recipe has its own report and none overwrites ``docs/reproduction.md``, the
    hand-written summary."""
    return f"docs/reproduction_{Path(recipe).stem.removeprefix('reproduce_')}.md"


def run(args) -> int:
    from .config import ReproductionConfig
    from .report import write_report
    from .runner import run_experiment

    cfg = ReproductionConfig.from_yaml(
        args.config, output_dir=args.output_dir, seeds=args.seeds, arms=args.arms, tasks=args.tasks
    )
    command = "trl-gram " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "trl-gram reproduce"
    t0 = time.time()
    if not args.report_only:
        run_experiment(cfg)
    report = default_report_path(args.config) if args.report is None else args.report
    if report:
        wall_s = None if args.report_only else time.time() - t0
        path = write_report(cfg, report, command=command, recipe=args.config, wall_s=wall_s)
        print(f"Report written to {path}")
    return 0
