"""``write_report``: a reproduction report from the finished arms of a run: a table of every arm (mean and spread over
seeds), PNG plots (accuracy per self-training round, kept fraction per denoising rule, adaptation curves), the commands
and wall times. Every figure and table is preceded by the command that produced it.

Beside the page, ``<report stem>/results.json`` holds the results it was built from (one entry per finished arm ×
seed), so that the page rebuilds from that file alone (``read_results``) once the run folder is gone."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from pathlib import Path

from trl_gram.training.run_folder import write_json

from .config import ReproductionConfig

ST_ARMS = ("reason_st", "reason_st_nodenoise", "reason_oracle_st", "direct_st")
RULES = ("malformed", "vote_disagreement", "low_confidence", "too_long", "unsupported")


def load_results(root: str | Path) -> list[dict]:
    """Results of every finished arm × seed under ``root``."""
    out = []
    for path in sorted(Path(root).glob("*/*/seed*/result.json")):
        if (path.parent / "DONE").is_file():
            out.append(json.loads(path.read_text()))
    return out


def load_speed(root: str | Path) -> dict | None:
    """The LoRA-vs-full speed check of a run, when it has one."""
    path = Path(root) / "speed" / "result.json"
    return json.loads(path.read_text()) if path.is_file() else None


def read_results(path: str | Path) -> tuple[list[dict], dict | None]:
    """The results and speed check stored in a report's results table file (see [`write_results`])."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ValueError(f"{path}: a results table is a JSON object with a `results` list.")
    return data["results"], data.get("speed")


def write_results(path: str | Path, results: list[dict], speed: dict | None = None) -> None:
    """One results table file for a report: every finished arm × seed (in ``load_results`` order) and the speed
    check."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"results": results, "speed": speed}
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str, ensure_ascii=False) + "\n")


def restore_results(path: str | Path, root: str | Path) -> int:
    """Write the finished arms of a results table back as arm folders (``result.json`` and ``DONE``) under ``root``,
    so that a run resumes after them; returns how many were written (arm folders already there are left as they are).
    """
    results, _ = read_results(path)
    written = 0
    for r in results:
        d = Path(root) / r["task"] / r["arm"] / f"seed{r['seed']}"
        if (d / "DONE").is_file():
            continue
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / "result.json", r)
        (d / "DONE").write_text("restored from a results table\n")
        written += 1
    return written


def mean_spread(values) -> tuple[float, float, int]:
    """Mean and spread (sample standard deviation; 0 for one value) of the finite values, and their count."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return math.nan, math.nan, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def fmt(values, pct: bool = True) -> str:
    m, s, n = mean_spread(values)
    if n == 0:
        return "–"
    k = 100.0 if pct else 1.0
    return f"{m * k:.1f} ± {s * k:.1f}" if n > 1 else f"{m * k:.1f}"


def table_rows(results: list[dict]) -> list[dict]:
    """One row per task × arm (× round for self-training arms), metrics listed per seed."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        if r["arm"] == "adapt":
            continue
        if r["arm"] in ST_ARMS:
            for st in r.get("stages", []):
                if st.get("round"):
                    groups[(r["task"], r["arm"], st["round"])].append(
                        {"test": st["eval"], "ood": r["ood"] if st is r["stages"][-1] else {}, "wall_s": r["wall_s"]}
                    )
        else:
            groups[(r["task"], r["arm"], None)].append(r)
    rows = []
    for (task, arm, rnd), rs in groups.items():
        rows.append(
            {
                "task": task,
                "arm": arm if rnd is None else f"{arm} (round {rnd})",
                "seeds": len(rs),
                "accuracy": [x["test"].get("accuracy") for x in rs],
                "swap_agreement": [x["test"].get("swap_agreement") for x in rs],
                "parse_failure_rate": [x["test"].get("parse_failure_rate") for x in rs],
                "pandalm": [x.get("ood", {}).get("pandalm", {}).get("accuracy") for x in rs],
                "judgebench": [x.get("ood", {}).get("judgebench", {}).get("accuracy") for x in rs],
                "wall_s": [x.get("wall_s") for x in rs],
                "pairs": rs[0]["test"].get("num_pairs"),
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    head = (
        "| task | arm | seeds | test pairs | accuracy % | swap agreement % | parse failures % | PandaLM % | "
        "JudgeBench % | wall s (arm) |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['task']} | {r['arm']} | {r['seeds']} | {r['pairs']} | {fmt(r['accuracy'])} | "
        f"{fmt(r['swap_agreement'])} | {fmt(r['parse_failure_rate'])} | {fmt(r['pandalm'])} | "
        f"{fmt(r['judgebench'])} | {fmt(r['wall_s'], pct=False)} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve(ax, xs: list, samples: list, label: str) -> None:
    """One accuracy curve: mean ± spread (in %) of each point's samples."""
    ms = [mean_spread(v) for v in samples]
    ax.errorbar(xs, [m[0] * 100 for m in ms], yerr=[m[1] * 100 for m in ms], marker="o", capsize=3, label=label)


def _chance_and_legend(ax) -> None:
    ax.axhline(50, color="grey", lw=0.6, ls=":")
    ax.legend(fontsize=7)


def _save(plt, fig, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_rounds(results: list[dict], path: Path) -> bool:
    """Accuracy per self-training round (round 0 = the initial judge), one panel per task."""
    series = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r["arm"] in ST_ARMS:
            for st in r.get("stages", []):
                if st.get("round") is not None and st["eval"].get("accuracy") is not None:
                    series[r["task"]][(r["arm"], st["round"])].append(st["eval"]["accuracy"])
    if not series:
        return False
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 3.6), squeeze=False)
    for ax, (task, data) in zip(axes[0], sorted(series.items())):
        for arm in ST_ARMS:
            pts = sorted((rnd, v) for (a, rnd), v in data.items() if a == arm)
            if pts:
                _curve(ax, [p[0] for p in pts], [v for _, v in pts], arm)
        ax.set(title=f"{task}: accuracy per self-training round", xlabel="round", ylabel="test accuracy (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _chance_and_legend(ax)
    return _save(plt, fig, path)


def plot_denoising(results: list[dict], path: Path) -> bool:
    """Share of pseudo-labels kept and dropped by each denoising rule, per arm and round (mean over seeds)."""
    bars = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r["arm"] in ST_ARMS:
            for st in r.get("stages", []):
                if st.get("round") and st.get("candidates"):
                    n = st["candidates"]
                    key = f"{r['task']}\n{r['arm'].replace('reason_', '')}\nr{st['round']}"
                    bars[key]["kept"].append(st["kept"] / n)
                    for rule in RULES + ("no_valid_proof",):
                        bars[key][rule].append(st.get("dropped", {}).get(rule, 0) / n)
    if not bars:
        return False
    plt = _plt()
    keys = sorted(bars)
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(keys)), 3.8))
    bottom = [0.0] * len(keys)
    for part in ("kept",) + RULES + ("no_valid_proof",):
        vals = [statistics.fmean(bars[k][part]) if bars[k][part] else 0.0 for k in keys]
        if any(vals):
            ax.bar(range(len(keys)), vals, bottom=bottom, label=part)
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(keys)), keys, fontsize=6)
    ax.set(ylabel="share of pseudo-labelled pairs", title="kept fraction and drops per denoising rule")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1, 1))
    return _save(plt, fig, path)


def plot_adaptation(results: list[dict], path: Path) -> bool:
    """Accuracy on the adaptation domain against the number of its labels, from each start point."""
    curves = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r["arm"] == "adapt":
            for start, pts in r["curves"].items():
                for p in pts:
                    if p["eval"].get("accuracy") is not None:
                        curves[start][p["labels"]].append(p["eval"]["accuracy"])
    if not curves:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for start, pts in sorted(curves.items()):
        xs = sorted(pts)
        _curve(ax, xs, [pts[x] for x in xs], f"from {start}")
    ax.set(xlabel="labels of the new domain", ylabel="accuracy (%)", title="few-shot adaptation")
    _chance_and_legend(ax)
    return _save(plt, fig, path)


def adaptation_table(results: list[dict]) -> str:
    rows = defaultdict(list)
    for r in results:
        if r["arm"] == "adapt":
            for start, pts in r["curves"].items():
                for p in pts:
                    rows[(start, p["labels"])].append(p["eval"].get("accuracy"))
    if not rows:
        return ""
    out = "| start | labels | seeds | accuracy % |\n|---|---|---|---|\n"
    for (start, n), vals in sorted(rows.items()):
        out += f"| {start} | {n} | {len(vals)} | {fmt(vals)} |\n"
    return out


def write_report(
    cfg: ReproductionConfig,
    path: str,
    command: str,
    recipe: str,
    wall_s: float | None = None,
    results_file: str | None = None,
    plots: bool = True,
) -> str:
    """Write the report (markdown, PNGs and ``results.json`` in ``<report stem>/``) for the run of ``cfg``; returns
    its path. A ``<report stem>/notes.md`` (hand-written status and findings) is placed under the title.

    Args:
        results_file (`str`, *optional*):
            A results table file to read instead of the finished arms under ``cfg.output_dir``.
        plots (`bool`, *optional*, defaults to `True`):
            Whether to draw the PNG plots again (`False` keeps the ones beside the page and links them).
    """
    from .report_text import render

    if results_file:
        results, speed = read_results(results_file)
    else:
        results, speed = load_results(cfg.output_dir), load_speed(cfg.output_dir)
    report = Path(path)
    fig_dir = report.parent / report.stem
    fig_dir.mkdir(parents=True, exist_ok=True)
    table_file = fig_dir / "results.json"
    if results_file is None or Path(results_file).resolve() != table_file.resolve():
        write_results(table_file, results, speed)
    tag = Path(recipe).stem
    figures = {}
    for name, fn in (("rounds", plot_rounds), ("denoising", plot_denoising), ("adaptation", plot_adaptation)):
        target = fig_dir / f"{tag}_{name}.png"
        if fn(results, target) if plots else target.is_file():
            figures[name] = os.path.relpath(target, report.parent)
    notes = fig_dir / "notes.md"  # hand-written status and findings, kept across --report-only rebuilds
    text = render(
        cfg=cfg,
        recipe=recipe,
        command=command,
        results=results,
        table=markdown_table(table_rows(results)),
        adaptation=adaptation_table(results),
        figures=figures,
        speed=speed,
        wall_s=wall_s,
        source=results_file or cfg.output_dir,
        notes=notes.read_text().strip() if notes.is_file() else None,
    )
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)
    return str(report)
