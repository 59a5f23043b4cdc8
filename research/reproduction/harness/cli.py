"""The reproduction harness's command line: run (or resume) the experiment of a config and write its report.

    python -m research.reproduction.harness --config research/reproduction/configs/reproduce_smoke.yaml
    python -m research.reproduction.harness --config research/reproduction/configs/reproduce_cpu.yaml --seeds 0 \\
        --arms zero_shot_direct,direct
    python -m research.reproduction.harness --config research/reproduction/configs/reproduce_cpu.yaml --report-only

A report is written with its results table (``<report folder>/results.json``: every finished arm × seed); ``--results
FILE --report-only`` rebuilds the page from that file alone, without the run folder.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

PROG = "python -m research.reproduction.harness"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config", required=True, help="Config YAML (e.g. research/reproduction/configs/reproduce_cpu.yaml)."
    )
    p.add_argument("--output_dir", default=None, help="Override the config's output_dir.")
    p.add_argument("--seeds", type=_ints, default=None, help="Comma-separated seeds (override).")
    p.add_argument("--arms", type=_names, default=None, help="Comma-separated arms (override).")
    p.add_argument("--tasks", type=_names, default=None, help="Comma-separated tasks: hh, synthetic (override).")
    p.add_argument(
        "--report",
        default=None,
        help="Report to write ('' to skip; default research/reproduction/reports/reproduction_<name>.md for "
        "reproduce_<name>.yaml).",
    )
    p.add_argument("--report-only", action="store_true", help="Only rebuild the report from finished arms.")
    p.add_argument(
        "--results", default=None, help="With --report-only: read the results table file instead of output_dir."
    )
    p.add_argument(
        "--restore",
        default=None,
        help="Write the finished arms of a results table into output_dir first (to resume a run after them).",
    )
    return p


def default_report_path(config: str) -> str:
    """``research/reproduction/reports/reproduction_<name>.md`` for a config ``reproduce_<name>.yaml``, so that each
    config has its own report and none overwrites ``docs/reproduction.md``, the hand-written summary."""
    return f"research/reproduction/reports/reproduction_{Path(config).stem.removeprefix('reproduce_')}.md"


def main(argv: list[str] | None = None) -> int:
    from .config import ReproductionConfig
    from .report import write_report
    from .runner import run_experiment

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.results and not args.report_only:
        raise SystemExit("--results rebuilds a report from a results table: it needs --report-only.")
    cfg = ReproductionConfig.from_yaml(
        args.config, output_dir=args.output_dir, seeds=args.seeds, arms=args.arms, tasks=args.tasks
    )
    command = f"{PROG} " + " ".join(shlex.quote(a) for a in argv)
    if args.restore:
        from .report import restore_results

        print(f"Restored {restore_results(args.restore, cfg.output_dir)} finished arm(s) into {cfg.output_dir}")
    t0 = time.time()
    if not args.report_only:
        run_experiment(cfg)
    report = default_report_path(args.config) if args.report is None else args.report
    if report:
        wall_s = None if args.report_only else time.time() - t0
        path = write_report(cfg, report, command=command, recipe=args.config, wall_s=wall_s, results_file=args.results)
        print(f"Report written to {path}")
    return 0
