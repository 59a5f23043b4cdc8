"""``trl-gram eval``: judge a benchmark file and report its official aggregate (see ``docs/evaluation.md``).

Every ``--data`` file is read and validated before the judge loads; a mistake in a file or an argument prints what is
wrong (file, row, column, what was expected) and exits with status 2, without a traceback. When no pair could be
judged the command exits with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..formats import FORMATS, DataError, EvalData, read_eval_file
from ..judge.spec import JudgeSpec

EVAL_HELP = "Evaluate a judge on a benchmark file (RewardBench 1/2, RM-Bench, JudgeBench, PandaLM, LLMBar, ...)."


def _description() -> str:
    lines = [
        "Judge every pair of one or more benchmark files (or save_to_disk folders, Hub ids) and print each benchmark's official aggregate, a table",
        "per subset, and the rows skipped (by reason, with row numbers). The format is detected from the columns",
        "of the first row, or forced with --format. Files: .json (a list), .jsonl, .csv, .parquet, optionally .gz.",
        "",
        "Formats and their layout (one row):",
    ]
    for name, (layout, example) in FORMATS.items():
        lines += [f"  {name}: {layout}", f"      e.g. {example}"]
    lines += [
        "",
        "Example:",
        "  trl-gram eval --data rm_bench.json --judge_model wangclnlp/GRAM-RR-LLaMA-3.2-3B-RewardModel \\",
        "      --output_json rm_bench.metrics.json --plot rm_bench.png",
        "",
        "Released GRAM / GRAM-R2 checkpoints get their authors' settings (mode, template, enable_thinking=False,",
        "bare label tokens) from --preset auto; any explicit flag wins. Exit status: 0 ok, 1 nothing judged,",
        "2 a mistake in a file or an argument.",
    ]
    return "\n".join(lines)


@dataclass
class EvalArguments:
    """Data and report options of ``trl-gram eval``; the judge is a [`~trl_gram.judge.JudgeSpec`] parsed beside them
    (``--model``, alias ``--judge_model``; ``--mode``, ``--backend``, ...)."""

    data: list[str] = field(default_factory=list, metadata={"help": "Benchmark file(s) (see the formats above)."})
    format: str = field(default="auto", metadata={"help": "Force a format.", "choices": ["auto", *FORMATS]})
    split: str | None = field(default=None, metadata={"help": "Split of a save_to_disk folder or Hub dataset."})
    select: str | None = field(default=None, metadata={"help": "Rows 'start:stop' of every file."})
    max_samples: int | None = field(default=None, metadata={"help": "Judge at most this many rows per file."})
    ties: str = field(
        default="drop",
        metadata={
            "help": "PandaLM ties: drop (skipped, counted) or keep (a class of its own).",
            "choices": ["drop", "keep"],
        },
    )
    on_invalid: str = field(
        default="error",
        metadata={
            "help": "An invalid row: error (list every problem, exit 2) or skip (count it).",
            "choices": ["error", "skip"],
        },
    )
    output_json: str | None = field(
        default=None, metadata={"help": "Write the report of every file to this JSON file."}
    )
    plot: str | None = field(default=None, metadata={"help": "Write a PNG of accuracy per subset / difficulty here."})


@dataclass
class _LenientJudgeSpec(JudgeSpec):
    """A [`JudgeSpec`] whose checks wait, so that ``trl-gram eval`` reports a bad judge field as a usage error."""

    def __post_init__(self):
        pass


def _template_words(config) -> tuple[str, str]:
    from ..templates import get_template

    return get_template(config.template, config.mode).label_words


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parse_eval_args(argv: list[str]) -> tuple[EvalArguments, JudgeSpec]:
    """The data options and the judge of a ``trl-gram eval`` command line; a bad judge field raises `DataError`."""
    from trl import TrlParser

    parser = TrlParser(
        (EvalArguments, _LenientJudgeSpec),
        prog="trl-gram eval",
        description=_description(),
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    args, lenient = parser.parse_args_and_config(argv)
    try:
        spec = JudgeSpec(**dataclasses.asdict(lenient))
    except ValueError as e:
        raise DataError("judge", [(None, None, str(e))]) from None
    return args, spec


def _check_args(a: EvalArguments) -> None:
    if not a.data:
        raise DataError("--data", [(None, None, "pass at least one benchmark file with --data")])
    if a.max_samples is not None and a.max_samples < 1:
        raise DataError("--max_samples", [(None, None, f"must be a positive integer, got {a.max_samples}")])


def evaluate_file(judge, data: EvalData, swap: str = "both", show_progress: bool | None = None) -> dict:
    """Judge every comparison of a validated file and return its report (see [`~trl_gram.evaluation.report`])."""
    from ..judge_metrics import pair_outcome
    from .metrics import official_aggregate
    from .report import file_report

    comps = data.comparisons
    judgments = (
        judge.judge(
            [c.question for c in comps],
            [c.first for c in comps],
            [c.second for c in comps],
            swap=swap,
            show_progress=show_progress,
        )
        if comps
        else []
    )
    words = judge.template.label_words
    outcomes = [pair_outcome(j, c.label, words) for j, c in zip(judgments, comps)]
    return file_report(data, official_aggregate(data.format, comps, outcomes, data.row_info))


def run_eval(args) -> int:
    """The ``trl-gram eval`` handler (``args.argv``: its unparsed tokens)."""
    argv = list(getattr(args, "argv", args) or [])
    try:
        a, spec = parse_eval_args(argv)
        _check_args(a)
        judge_config = spec.judge_config()  # the checkpoint's preset applied
        words = _template_words(judge_config)
        files = [
            read_eval_file(
                path,
                a.format,
                ties=a.ties,
                on_invalid=a.on_invalid,
                select=a.select,
                max_samples=a.max_samples,
                label_words=words,
                split=a.split,
            )
            for path in a.data
        ]
    except (DataError, ValueError) as e:
        print(f"trl-gram eval: error: {e}", file=sys.stderr)
        return 2
    if not any(f.comparisons for f in files):
        for f in files:
            print(
                f"trl-gram eval: {f.path}: no pair to judge; skipped rows: "
                f"{ {k: len(v) for k, v in f.skipped.items()} }",
                file=sys.stderr,
            )
        return 1

    from ..judge import load_judge

    judge = load_judge(spec, show_progress=True)
    from ..templates import TEMPLATES
    from .report import format_table, plot_reports

    cfg = judge.config
    settings = {
        "judge_model": spec.model or "embedded SmolLM2-135M-Instruct",
        "mode": cfg.mode,
        "template": next((n for n, t in TEMPLATES.items() if t == judge.template), "custom"),
        "chat_template_kwargs": cfg.chat_template_kwargs,
        "label_scoring": cfg.label_scoring,
        "swap": cfg.swap,
        "votes": cfg.votes,
    }
    print("Judge: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    reports = {}
    for data in files:
        reports[data.path] = {**evaluate_file(judge, data, swap=cfg.swap, show_progress=True), "judge": settings}
        print(format_table(data.path, reports[data.path]))
    if a.output_json:
        Path(a.output_json).write_text(json.dumps(reports, indent=2, default=str) + "\n")
    if a.plot:
        plot_reports(reports, a.plot)
        print(f"Plot written to {a.plot}")
    judged = sum(r["comparisons"] for r in reports.values())
    return 0 if judged else 1
