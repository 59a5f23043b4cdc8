"""Figures of the embedded judge: every stage of a ``recipes/gram_r2_embedded_judge.yaml`` run (and the zero-shot
base) judged on the held-out sets by ``trl-gram eval``, in direct and reason mode, both orders.

Each (stage, mode) is one ``trl-gram eval`` call on the three held-out files written by ``prepare_data.py``
(hh-rlhf, PandaLM, JudgeBench; the first ``--direct_pairs`` / ``--reason_pairs`` rows of each), with the stage's LoRA
checkpoint as ``--adapter`` on the base model; its JSON report lands in ``<out>/<stage>_<mode>.json`` with the call's
wall time, and a finished call is not repeated (rerun to resume). The summary (``figures.md``, ``figures.json``)
adds a 95 % Wilson interval to each accuracy and pools the three sets.

    python research/embedded_judge/evaluate_stages.py --run runs/embedded_judge/run \\
        --data runs/embedded_judge/data --out runs/embedded_judge/eval
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

SETS = ("hh_rlhf", "pandalm", "judgebench")
STAGES = ("zero_shot", "warmup", "round_00", "round_01", "round_02", "final")
STAGE_NAMES = {
    "prover": "prover training",
    "zero_shot": "zero-shot base",
    "warmup": "direct warm-up",
    "round_00": "initial judge (round 0)",
    "round_01": "self-training round 1",
    "round_02": "self-training round 2",
    "final": "final fine-tune",
}


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``p`` over ``n`` trials."""
    if n == 0 or p is None or math.isnan(p):
        return (math.nan, math.nan)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def _checkpoint(run: Path, stage: str, warmup: Path | None = None) -> Path | None:
    if stage == "warmup":  # a `trl-gram train` output folder: its adapter is written at the end of training
        return warmup if warmup is not None and (warmup / "adapter_config.json").is_file() else None
    ckpt = run / stage / "checkpoint"
    return ckpt if (ckpt / ".done").is_file() else None


def evaluate(stage: str, mode: str, args) -> dict | None:
    out = Path(args.out) / f"{stage}_{mode}.json"
    if out.is_file():
        return json.loads(out.read_text())
    adapter = None if stage == "zero_shot" else _checkpoint(Path(args.run), stage, Path(args.warmup))
    if stage != "zero_shot" and adapter is None:
        return None
    n = args.direct_pairs if mode == "direct" else args.reason_pairs
    files = [str(Path(args.data) / f"heldout_{s}.jsonl") for s in SETS]
    cmd = [
        sys.executable,
        "-m",
        "trl_gram.cli",
        "eval",
        "--data",
        *files,
        "--judge_model",
        args.base,
        "--mode",
        mode,
        "--max_samples",
        str(n),
        "--max_length",
        str(args.max_length),
        "--max_new_tokens",
        str(args.max_new_tokens),
        "--backend",
        "transformers",
        "--output_json",
        str(out) + ".part",
    ]
    if adapter is not None:
        cmd += ["--adapter", str(adapter)]
    print(" ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    report = json.loads(Path(str(out) + ".part").read_text())
    report = {"wall_s": time.perf_counter() - start, "files": report}
    out.write_text(json.dumps(report, indent=2) + "\n")
    os.remove(str(out) + ".part")
    return report


def summarize(args) -> None:
    rows, table = [], []
    run = Path(args.run)
    # training wall time of a stage: from the previous stage's summary.json to its own (the run writes them in order)
    done = [
        (s, (run / s / "summary.json").stat().st_mtime)
        for s in ("seed", "prover", *STAGES[1:])
        if (run / s / "summary.json").is_file()
    ]
    stage_times = {s: t - prev for (_, prev), (s, t) in zip(done, done[1:])}
    for stage in STAGES:
        for mode in ("direct", "reason"):
            path = Path(args.out) / f"{stage}_{mode}.json"
            if not path.is_file():
                continue
            report = json.loads(path.read_text())
            per_set, pooled_correct, pooled_n = {}, 0.0, 0
            for file, rep in report["files"].items():
                name = next(s for s in SETS if f"heldout_{s}" in file)
                m = rep["metrics"]
                n = m["num_pairs"]
                per_set[name] = {**m, "ci95": wilson(m["accuracy"], n)}
                pooled_correct += m["accuracy"] * n
                pooled_n += n
            pooled = pooled_correct / pooled_n
            row = {
                "stage": stage,
                "mode": mode,
                "sets": per_set,
                "pooled_accuracy": pooled,
                "pooled_pairs": pooled_n,
                "pooled_ci95": wilson(pooled, pooled_n),
                "eval_wall_s": report["wall_s"],
            }
            rows.append(row)

            def cell(m):
                lo, hi = m["ci95"]
                return f"{m['accuracy']:.3f} [{lo:.2f}, {hi:.2f}]"

            swap = {k: v.get("swap_agreement") for k, v in per_set.items()}
            fails = {k: v.get("parse_failure_rate") for k, v in per_set.items()}
            lo, hi = row["pooled_ci95"]
            table.append(
                f"| {STAGE_NAMES[stage]} | {mode} | "
                + " | ".join(cell(per_set[s]) for s in SETS if s in per_set)
                + f" | {pooled:.3f} [{lo:.2f}, {hi:.2f}] (n={pooled_n}) | "
                + " / ".join(f"{swap[s]:.2f}" if swap[s] is not None else "–" for s in SETS if s in swap)
                + " | "
                + (" / ".join(f"{fails[s]:.2f}" for s in SETS if s in fails) if mode == "reason" else "–")
                + f" | {report['wall_s'] / 60:.1f} |"
            )
    head = (
        "| stage | mode | hh-rlhf acc [95 % CI] | PandaLM acc [95 % CI] | JudgeBench acc [95 % CI] | pooled acc "
        "[95 % CI] | swap agreement (hh / PandaLM / JB) | parse failures (hh / PandaLM / JB) | eval min |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    text = head + "\n" + "\n".join(table) + "\n"
    if stage_times:
        text += (
            "\nTraining wall time per stage (this CPU): "
            + ", ".join(f"{STAGE_NAMES.get(k, k)} {v / 60:.1f} min" for k, v in stage_times.items() if v)
            + "\n"
        )
    Path(args.out, "figures.md").write_text(text)
    Path(args.out, "figures.json").write_text(json.dumps({"rows": rows, "stage_wall_s": stage_times}, indent=2) + "\n")
    print(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/embedded_judge/run")
    p.add_argument("--data", default="runs/embedded_judge/data")
    p.add_argument(
        "--warmup", default="runs/embedded_judge/warmup", help="Output folder of the direct warm-up (its stage)."
    )
    p.add_argument("--out", default="runs/embedded_judge/eval")
    p.add_argument("--base", default=None, help="Base model folder (default: the embedded model).")
    p.add_argument("--stages", nargs="*", default=list(STAGES), choices=STAGES)
    p.add_argument("--modes", nargs="*", default=["direct", "reason"], choices=["direct", "reason"])
    p.add_argument("--direct_pairs", type=int, default=50, help="Pairs per set in direct mode.")
    p.add_argument("--reason_pairs", type=int, default=20, help="Pairs per set in reason mode.")
    p.add_argument("--max_length", type=int, default=640)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--wait", action="store_true", help="Wait for stages that are not finished yet.")
    p.add_argument("--summary_only", action="store_true")
    args = p.parse_args(argv)
    if args.base is None:
        from trl_gram.default_model import default_model_path

        args.base = default_model_path()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        for stage in args.stages:
            for mode in args.modes:
                while evaluate(stage, mode, args) is None:
                    if not args.wait:
                        print(f"{stage}: no finished checkpoint; skipped", flush=True)
                        break
                    time.sleep(60)
    summarize(args)


if __name__ == "__main__":
    main()
