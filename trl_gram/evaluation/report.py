"""What ``trl-gram eval`` shows: a table per file on the terminal, a JSON document, and an optional PNG."""

from __future__ import annotations

import math

SCORE_NAMES = {
    "rewardbench": "RewardBench score (mean of the section scores)",
    "rewardbench2": "RewardBench 2 score (mean of the subset scores)",
    "rm-bench": "RM-Bench Overall (mean of the chat, code, math and safety averages of hard/normal/easy)",
    "judgebench": "JudgeBench accuracy (both orders: right when the decisions sum positive)",
    "pandalm": "PandaLM accuracy (against the annotators' majority)",
    "llmbar": "LLMBar accuracy (averaged over the two orders)",
    "mt-bench": "MT-Bench agreement with humans (ties excluded)",
    "hh-rlhf": "accuracy",
    "preference": "accuracy",
}
PAIRWISE = "pairs the judge gets right (probability above one half; exactly one half counts half)"
# What the table's `accuracy` column holds, per format (each subset row and the `all` row of a file without subsets).
ACCURACY_COLUMN = {
    "rewardbench2": "RewardBench 2's rule (a row is right when its chosen response beats every rejected one)",
    "judgebench": "JudgeBench's rule (a pair is right when its two orders' decisions sum positive)",
    "llmbar": "LLMBar's rule (each order's accuracy, averaged over the two orders)",
    "mt-bench": "agreement with the human vote (the judge's label)",
}
RM_BENCH_DOMAINS = ("chat", "code", "math", "safety")


def score_name(fmt: str, metrics: dict) -> str:
    """What the file's score is. RM-Bench's Overall needs its four domains; a per-domain file, or a file missing a
    domain, gets the average of the domains it holds, named as such."""
    if fmt != "rm-bench":
        return SCORE_NAMES.get(fmt, "accuracy")
    domains = sorted(k[: -len("/average")] for k in metrics if k.endswith("/average"))
    if set(domains) == set(RM_BENCH_DOMAINS):
        return SCORE_NAMES[fmt]
    if len(domains) == 1:
        return f"RM-Bench {domains[0]} average (mean of its hard, normal and easy accuracies)"
    return (
        f"RM-Bench average of the domains present ({', '.join(domains)}; not the Overall, which averages chat, code, "
        "math and safety)"
    )


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _rows_text(rows: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f", ... ({len(rows) - limit} more)" if len(rows) > limit else "")


def _clean(value):
    """NaN (a metric with nothing to average) as ``None``, so the JSON output is standard JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def file_report(data, result: dict) -> dict:
    """The JSON document of one evaluated file."""
    return _clean(
        {
            "format": data.format,
            "rows": data.rows,
            "rows_evaluated": len({c.row for c in data.comparisons}),
            "comparisons": len(data.comparisons),
            "score": result["score"],
            "score_name": score_name(data.format, result["metrics"]),
            "metrics": result["metrics"],
            "subsets": result["subsets"],
            "skipped": {reason: {"count": len(rows), "rows": rows} for reason, rows in sorted(data.skipped.items())},
        }
    )


def format_table(path: str, report: dict) -> str:
    """A terminal table: one line per subset, then the format's aggregate lines."""
    head = (
        f"== {path} ({report['format']}: {report['rows_evaluated']}/{report['rows']} rows, "
        f"{report['comparisons']} comparisons) =="
    )
    cols = ("subset", "pairs", "accuracy", "swap_agree", "parse_fail")
    fmt, metrics = report["format"], report["metrics"]
    rule = ACCURACY_COLUMN.get(fmt)
    subsets = report["subsets"] or {"all": {**metrics, "accuracy": report["score"] if rule else metrics["accuracy"]}}
    width = max(len(cols[0]), *(len(str(s)) for s in subsets))
    lines = [
        head,
        f"accuracy column: {rule or PAIRWISE}",
        "  ".join([cols[0].ljust(width)] + [c.rjust(10) for c in cols[1:]]),
    ]
    for name in sorted(subsets, key=str):
        m = subsets[name]
        values = (m.get("num_pairs"), m.get("accuracy"), m.get("swap_agreement"), m.get("parse_failure_rate"))
        lines.append("  ".join([str(name).ljust(width)] + [_fmt(v).rjust(10) for v in values]))
    extra = {k: v for k, v in metrics.items() if k not in ("num_pairs", "accuracy")}
    if report["score_name"] != "accuracy":  # the probability-based figure every format has, named apart
        extra = {"pairwise_accuracy": metrics["accuracy"], **extra}
    if extra:
        lines.append("")
        key_width = max(len(k) for k in extra)
        lines += [f"{k.ljust(key_width)}  {_fmt(v)}" for k, v in extra.items()]
        if "pairwise_accuracy" in extra:
            lines.append(f"(pairwise_accuracy: {PAIRWISE}, over all pairs; not the benchmark's figure)")
    lines.append(f"Benchmark score, {report['score_name']}: {_fmt(report['score'])}")
    for reason, info in report["skipped"].items():
        lines.append(f"skipped ({reason}): {info['count']} row(s): {_rows_text(info['rows'])}")
    return "\n".join(lines)


def plot_reports(reports: dict[str, dict], path: str) -> None:
    """A PNG with one panel per file: accuracy per subset (and RM-Bench's hard / normal / easy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(reports), 1, figsize=(8, 3.2 * len(reports)), squeeze=False)
    for ax, (name, rep) in zip(axes[:, 0], reports.items()):
        bars = {str(k): v.get("accuracy") for k, v in sorted(rep["subsets"].items(), key=lambda kv: str(kv[0]))}
        if rep["format"] == "rm-bench":
            bars.update({k: rep["metrics"].get(k) for k in ("hard", "normal", "easy")})
        bars = bars or {"all": rep["metrics"].get("accuracy")}
        values = [0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in bars.values()]
        ax.bar(range(len(values)), values, color="#4c72b0")
        ax.set_xticks(range(len(values)), list(bars), rotation=30, ha="right", fontsize=8)
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name} ({rep['format']}): {_fmt(rep['score'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
