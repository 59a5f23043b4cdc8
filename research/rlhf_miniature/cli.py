"""``python -m research.rlhf_miniature --config research/rlhf_miniature/configs/cpu.yaml``: run (or resume) the
recipe, then write ``results.json`` and rebuild the report (``--report_only`` rebuilds from ``results.json``)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .config import MiniatureConfig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.rlhf_miniature", description=__doc__)
    parser.add_argument("--config", required=True, help="Recipe YAML (research/rlhf_miniature/configs/*.yaml).")
    parser.add_argument("--arms", nargs="*", default=None, help="Run only these arms (default: the recipe's).")
    parser.add_argument("--seeds", nargs="*", type=int, default=None, help="Run only these seeds.")
    parser.add_argument(
        "--judge_eval",
        nargs="*",
        default=["trained", "zero_shot"],
        choices=["trained", "zero_shot"],
        help="Judges to measure on the held-out pairs after the arms (none: pass the flag alone).",
    )
    parser.add_argument("--output_dir", default=None, help="Override the recipe's run folder.")
    parser.add_argument("--results", default=None, help="Write the compact results here (e.g. .../results.json).")
    parser.add_argument("--report", default=None, help="Write the report (markdown + PNG plots) here.")
    parser.add_argument("--report_only", action="store_true", help="Only rebuild the report from --results.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from .report import compact, write_report

    if not args.report_only:
        from .runner import collect, run

        cfg = MiniatureConfig.from_yaml(args.config, output_dir=args.output_dir)
        run(cfg, only_arms=args.arms, only_seeds=args.seeds, judge_eval=tuple(args.judge_eval))
        if args.results:
            Path(args.results).write_text(json.dumps(compact(collect(cfg.output_dir)), indent=1) + "\n")
    if args.report:
        if not args.results:
            parser.error("--report needs --results (the report is built from the compact results file).")
        write_report(json.loads(Path(args.results).read_text()), Path(args.report))
    return 0
