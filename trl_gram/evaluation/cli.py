"""``trl-gram eval``: judge a benchmark file and report its official aggregate (see ``docs/evaluation.md``).

Every ``--data`` file is read and validated before the judge loads; a mistake in a file or an argument prints what is
wrong (file, row, column, what was expected) and exits with status 2, without a traceback. When no pair could be
judged the command exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .formats import FORMATS, DataError, EvalData, read_eval_file

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
    """Options of ``trl-gram eval``."""

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
    judge_model: str | None = field(
        default=None, metadata={"help": "Judge model path/id (default: embedded SmolLM2)."}
    )
    adapter: str | None = field(default=None, metadata={"help": "PEFT adapter on the judge."})
    load_in_4bit: bool = field(default=False, metadata={"help": "Load the judge in 4 bits (bitsandbytes NF4)."})
    preset: str = field(
        default="auto",
        metadata={"help": "Checkpoint preset: auto (recognise released GRAM checkpoints), none, or a preset name."},
    )
    mode: str | None = field(
        default=None,
        metadata={"help": "Judge mode (default: the preset's, else reason).", "choices": ["reason", "direct"]},
    )
    template: str | None = field(default=None, metadata={"help": "Template name (gram-r2, gram-v1, gram-r2-direct)."})
    label_scoring: str | None = field(
        default=None,
        metadata={
            "help": "Label tokens read: official (bare A/B, as the GRAM authors) or merged (A + ' A').",
            "choices": ["official", "merged"],
        },
    )
    swap: str = field(default="both", metadata={"help": "Orders judged.", "choices": ["both", "random", "none"]})
    votes: int = field(default=1, metadata={"help": "Rationales per order (1: greedy)."})
    max_new_tokens: int = field(default=512, metadata={"help": "Rationale length cap."})
    max_length: int = field(default=4096, metadata={"help": "Prompt length cap (responses are cut to fit)."})
    token_budget: int = field(default=32768, metadata={"help": "rows x padded length per batch."})
    reason_prefix: str = field(default="", metadata={"help": "Text prefilled at the start of the judge's reply."})
    seed: int = field(default=0, metadata={"help": "Seed (sampling, swap='random')."})
    output_json: str | None = field(
        default=None, metadata={"help": "Write the report of every file to this JSON file."}
    )
    plot: str | None = field(default=None, metadata={"help": "Write a PNG of accuracy per subset / difficulty here."})
    backend: str = field(
        default="transformers",
        metadata={
            "help": "Judge engine: transformers, vllm (`vllm.LLM`; install vLLM first), openai (engines behind "
            "`--engine_urls`, e.g. `vllm serve`; `--judge_model` names the tokenizer), or auto (vLLM for reason mode "
            "when installed).",
            "choices": ["auto", "transformers", "vllm", "openai"],
        },
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs one vLLM engine is split over."})
    engine_urls: list[str] = field(
        default_factory=list, metadata={"help": "`--backend openai`: base URLs of the engines (with or without /v1)."}
    )
    served_model_name: str | None = field(
        default=None, metadata={"help": "`--backend openai`: the engines' model name (default: --judge_model)."}
    )


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parse_eval_args(argv: list[str]) -> EvalArguments:
    from trl import TrlParser

    parser = TrlParser(
        (EvalArguments,), prog="trl-gram eval", description=_description(), formatter_class=_HelpFormatter
    )
    (args,) = parser.parse_args_and_config(argv)
    return args


def _check_args(a: EvalArguments) -> None:
    if not a.data:
        raise DataError("--data", [(None, None, "pass at least one benchmark file with --data")])
    if a.preset not in ("auto", "none"):
        from ..presets import get_preset

        try:
            get_preset(a.preset)
        except ValueError as e:
            raise DataError("--preset", [(None, None, str(e))]) from None
    for name in ("votes", "max_new_tokens", "max_length", "token_budget"):
        if getattr(a, name) < 1:
            raise DataError(f"--{name}", [(None, None, f"must be a positive integer, got {getattr(a, name)}")])
    if a.max_samples is not None and a.max_samples < 1:
        raise DataError("--max_samples", [(None, None, f"must be a positive integer, got {a.max_samples}")])


def evaluate_file(judge, data: EvalData, swap: str = "both", show_progress: bool | None = None) -> dict:
    """Judge every comparison of a validated file and return its report (see [`~trl_gram.evaluation.report`])."""
    from .metrics import aggregate, outcome
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
    outcomes = [outcome(j, c.label, words) for j, c in zip(judgments, comps)]
    return file_report(data, aggregate(data.format, comps, outcomes, data.row_info))


def run_eval(args) -> int:
    """The ``trl-gram eval`` handler (``args.argv``: its unparsed tokens)."""
    argv = list(getattr(args, "argv", args) or [])
    a = parse_eval_args(argv)
    try:
        _check_args(a)
        from ..templates import get_template

        words = get_template(a.template, a.mode or "reason").label_words
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

    vllm_only = dict(tensor_parallel_size=a.tensor_parallel_size) if a.backend != "transformers" else {}
    if a.backend == "openai":
        vllm_only = dict(engine_urls=a.engine_urls, served_model_name=a.served_model_name)
    judge = load_judge(
        a.judge_model,
        backend=a.backend,
        **vllm_only,
        adapter=a.adapter,
        load_in_4bit=a.load_in_4bit,
        preset=None if a.preset == "none" else a.preset,
        mode=a.mode,
        template=a.template,
        label_scoring=a.label_scoring,
        swap=a.swap,
        votes=a.votes,
        max_new_tokens=a.max_new_tokens,
        max_length=a.max_length,
        token_budget=a.token_budget,
        reason_prefix=a.reason_prefix,
        seed=a.seed,
        show_progress=True,
    )
    from ..templates import TEMPLATES
    from .report import format_table, plot_reports

    cfg = judge.config
    settings = {
        "judge_model": a.judge_model or "embedded SmolLM2-135M-Instruct",
        "mode": cfg.mode,
        "template": next((n for n, t in TEMPLATES.items() if t == judge.template), "custom"),
        "chat_template_kwargs": cfg.chat_template_kwargs,
        "label_scoring": cfg.label_scoring,
        "swap": a.swap,
        "votes": a.votes,
    }
    print("Judge: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    reports = {}
    for data in files:
        reports[data.path] = {**evaluate_file(judge, data, swap=a.swap, show_progress=True), "judge": settings}
        print(format_table(data.path, reports[data.path]))
    if a.output_json:
        Path(a.output_json).write_text(json.dumps(reports, indent=2, default=str) + "\n")
    if a.plot:
        plot_reports(reports, a.plot)
        print(f"Plot written to {a.plot}")
    judged = sum(r["comparisons"] for r in reports.values())
    return 0 if judged else 1
