"""The report: a compact ``results.json`` (what the figures need, no run folder) and ``report.md`` with its PNG plots,
rebuilt byte-identical from that file."""

from __future__ import annotations

import statistics
from pathlib import Path

from .task import make_splits

ARM_TITLES = {
    "grpo_oracle": "GRPO, oracle reward (upper bound)",
    "grpo_group": "GRPO, trained judge, reference=group",
    "grpo_pivot": "GRPO, trained judge, reference=pivot",
    "ppo_greedy": "GramPPO, trained judge, greedy reference",
    "grpo_zero_shot": "GRPO, zero-shot judge (negative control)",
    "grpo_random": "GRPO, random reward (null control)",
}
_LOG_KEYS = ("reward", "kl", "objective/kl", "judge_seconds", "reward_std")


def _round(x, nd=4):
    return None if x is None else round(float(x), nd)


def _kinds(answers, pairs) -> dict | None:
    from .task import answer_kind, copies_question_order, question

    if not answers:
        return None
    kinds = [answer_kind(question(a, b), c) for (a, b), c in zip(pairs, answers)]
    out = {k: kinds.count(k) for k in ("right", "wrong", "off_format")}
    out["copies_order"] = sum(copies_question_order(question(a, b), c) for (a, b), c in zip(pairs, answers))
    return out


def compact(collected: dict) -> dict:
    """The figures of a run folder's results ([`~research.rlhf_miniature.runner.collect`]), rounded, per arm and
    seed: oracle accuracy per evaluation, per-rollout judge reward and KL, wall times."""

    cfg = collected["config"]
    eval_pairs = make_splits(cfg["sizes"], cfg["split_seed"], cfg["digits"])["eval"]
    arms = {}
    for arm, seeds in collected["arms"].items():
        arms[arm] = {}
        for seed, r in sorted(seeds.items()):
            per = r.get("steps_per_rollout", 1)
            logs = []
            for row in r["logs"]:
                kl = row.get("kl", row.get("objective/kl"))
                logs.append(
                    {"rollout": _round(row["step"] / per, 2), "reward": _round(row.get("reward")), "kl": _round(kl)}
                )
            arms[arm][seed] = {
                "evals": [
                    {
                        "rollout": _round(e["step"] / per, 2),
                        "accuracy": _round(e["accuracy"]),
                        "judge_win_vs_base": _round(e.get("judge_win_vs_base")),
                        "kinds": _kinds(e.get("answers"), eval_pairs),
                        "examples": e.get("examples", [])[:3],
                    }
                    for e in r["evals"]
                ],
                "logs": logs,
                "seconds": {k: _round(v, 3) for k, v in r["seconds"].items()},
                "steps": r["steps"],
                "steps_per_rollout": per,
            }
    judge = collected.get("judge")
    if judge is not None:
        keys = ("accuracy", "swap_agreement", "policy_wrong/accuracy", "swapped/accuracy")
        judge = {
            "zero_shot": {k: _round(judge["zero_shot"].get(k)) for k in keys} if "zero_shot" in judge else None,
            "trained": {k: _round(judge["trained"].get(k)) for k in keys} if "trained" in judge else None,
            "train_kinds": judge["train_kinds"],
            "test_kinds": judge["test_kinds"],
            "seconds": {k: _round(v, 1) for k, v in judge["seconds"].items()},
            "examples": judge["examples"][:4],
        }
    base = collected["base"]
    return {
        "config": collected["config"],
        "base": {
            "accuracy": _round(base["accuracy"]),
            "n": base["n"],
            "examples": base["examples"][:4],
            "kinds": _kinds(base.get("answers"), eval_pairs),
        },
        "judge": judge,
        "arms": arms,
    }


def arm_rows(results: dict) -> list[dict]:
    """One table row per arm: oracle accuracy before and after (mean and spread over seeds), mean reward over the
    first and last fifth of the run, judge time share, wall time."""
    rows = []
    order = [a for a in ARM_TITLES if a in results["arms"]] + sorted(set(results["arms"]) - set(ARM_TITLES))
    for arm in order:
        seeds = results["arms"][arm]
        after = [s["evals"][-1]["accuracy"] for s in seeds.values()]
        before = [s["evals"][0]["accuracy"] for s in seeds.values()]
        first, last, share, wall = [], [], [], []
        for s in seeds.values():
            rewards = [x["reward"] for x in s["logs"] if x["reward"] is not None]
            k = max(len(rewards) // 5, 1)
            if rewards:
                first.append(statistics.mean(rewards[:k]))
                last.append(statistics.mean(rewards[-k:]))
            if s["seconds"].get("judge_share_of_step") is not None:
                share.append(s["seconds"]["judge_share_of_step"])
            wall.append(s["seconds"]["total"])
        rows.append(
            {
                "arm": arm,
                "seeds": sorted(seeds),
                "before": statistics.mean(before),
                "after": statistics.mean(after),
                "after_spread": (max(after) - min(after)) if len(after) > 1 else None,
                "after_each": after,
                "reward_first": statistics.mean(first) if first else None,
                "reward_last": statistics.mean(last) if last else None,
                "judge_share": statistics.mean(share) if share else None,
                "wall_min": statistics.mean(wall) / 60,
            }
        )
    return rows


def plot(results: dict, path: Path) -> None:
    """Oracle accuracy (left) and judge reward per rollout (right) of every arm × seed on one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(17, 4.8))
    colors = dict(zip(ARM_TITLES, ("black", "tab:blue", "tab:green", "tab:red", "tab:gray", "tab:orange")))
    for arm, seeds in results["arms"].items():
        for seed, s in seeds.items():
            style = "-" if seed == "0" else "--"
            label = f"{arm} (seed {seed})"
            ax1.plot(
                [e["rollout"] for e in s["evals"]],
                [100 * e["accuracy"] for e in s["evals"]],
                style,
                marker="o",
                color=colors.get(arm),
                label=label,
            )
            wins = [
                (e["rollout"], e["judge_win_vs_base"]) for e in s["evals"] if e.get("judge_win_vs_base") is not None
            ]
            if wins:
                ax3.plot(
                    [w[0] for w in wins], [w[1] for w in wins], style, marker="o", color=colors.get(arm), label=label
                )
            pts = [(x["rollout"], x["reward"]) for x in s["logs"] if x["reward"] is not None]
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colors.get(arm), label=label, alpha=0.8)
    ax1.set_xlabel("rollout (GRPO step; PPO: 2 optimizer steps)")
    ax1.set_ylabel("oracle accuracy on 64 held-out prompts (%)")
    ax1.set_title("What the oracle says")
    ax3.set_xlabel("rollout")
    ax3.set_ylabel("trained judge: P(greedy answer beats the base's)")
    ax3.set_title("What the trained judge says (held-out prompts)")
    ax3.axhline(0.5, color="gray", lw=0.8)
    ax3.grid(alpha=0.3)
    ax2.set_xlabel("rollout")
    ax2.set_ylabel("mean reward (judge: P(win) - 0.5; oracle: 0/1)")
    ax2.set_title("Training reward per rollout (group: 0 by construction)")
    ax1.legend(fontsize=7)
    ax1.grid(alpha=0.3)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def _pct(x):
    return "–" if x is None else f"{100 * x:.1f}"


def table(results: dict) -> str:
    lines = [
        "| arm | seeds | oracle acc. before → after (%) | spread over seeds | reward first → last fifth | judge share of step | wall (min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in arm_rows(results):
        each = " / ".join(_pct(a) for a in r["after_each"])
        spread = "–" if r["after_spread"] is None else f"{100 * r['after_spread']:.1f} pts ({each})"
        rew = "–" if r["reward_first"] is None else f"{r['reward_first']:+.3f} → {r['reward_last']:+.3f}"
        share = "–" if r["judge_share"] is None else f"{100 * r['judge_share']:.0f} %"
        lines.append(
            f"| {ARM_TITLES.get(r['arm'], r['arm'])} | {', '.join(r['seeds'])} | {_pct(r['before'])} → "
            f"{_pct(r['after'])} | {spread} | {rew} | {share} | {r['wall_min']:.1f} |"
        )
    return "\n".join(lines)


def yardstick_table(results: dict) -> str:
    """Oracle accuracy next to the trained judge's win rate against the base answers, per evaluation point."""
    lines = [
        "| arm | seed | rollout: oracle acc. % (right / wrong in the asked form / off-format; copies the question's order, "
        "of 64) / judge win vs base |",
        "|---|---|---|",
    ]
    for arm in [a for a in ARM_TITLES if a in results["arms"]]:
        for seed, s in sorted(results["arms"][arm].items()):
            cells = []
            for e in s["evals"]:
                win = e.get("judge_win_vs_base")
                k = e.get("kinds")
                kinds = "" if not k else f" ({k['right']}/{k['wrong']}/{k['off_format']}; {k['copies_order']})"
                cells.append(
                    f"{e['rollout']:g}: {_pct(e['accuracy'])}{kinds} / {'–' if win is None else f'{win:.3f}'}"
                )
            lines.append(f"| `{arm}` | {seed} | {' · '.join(cells)} |")
    return "\n".join(lines)


def walltimes(results: dict) -> str:
    """Per arm × seed: total, training, oracle evaluation and judge seconds."""
    lines = [
        "| arm | seed | total (min) | training (min) | oracle evaluations (min) | inside the reward (min) | reward share of step time |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in [a for a in ARM_TITLES if a in results["arms"]]:
        for seed, s in sorted(results["arms"][arm].items()):
            t = s["seconds"]
            share = t.get("judge_share_of_step")
            lines.append(
                f"| `{arm}` | {seed} | {t['total'] / 60:.1f} | {t['train'] / 60:.1f} | {t['oracle_eval'] / 60:.1f} | "
                f"{t['judge'] / 60:.1f} | {'–' if share is None else f'{100 * share:.0f} %'} |"
            )
    return "\n".join(lines)


def write_report(results: dict, path: Path, text_path: Path | None = None) -> None:
    """Writes the plots beside ``path`` and the report: the hand-written discussion (``report_text.md`` beside the
    report, when present) with the generated tables and figures substituted for its ``{{...}}`` markers."""
    path = Path(path)
    plot(results, path.with_name("rlhf_miniature_curves.png"))
    text_path = Path(text_path or path.with_name("report_text.md"))
    body = (
        text_path.read_text()
        if text_path.is_file()
        else "# RLHF in miniature\n\n{{table}}\n\n{{judge}}\n\n{{figure}}\n"
    )
    judge = results.get("judge")
    judge_md = "(no judge in this run)"
    if judge is not None:
        z, t = judge["zero_shot"] or {}, judge["trained"] or {}
        judge_md = "\n".join(
            [
                "| judge | held-out pair accuracy (%) | vs the policy's own wrong answers | vs the swapped answer | swap agreement |",
                "|---|---|---|---|---|",
                f"| zero-shot | {_pct(z.get('accuracy'))} | {_pct(z.get('policy_wrong/accuracy'))} | "
                f"{_pct(z.get('swapped/accuracy'))} | {_pct(z.get('swap_agreement'))} |",
                f"| trained (GramRewardTrainer, direct, LoRA) | {_pct(t.get('accuracy'))} | {_pct(t.get('policy_wrong/accuracy'))} | "
                f"{_pct(t.get('swapped/accuracy'))} | {_pct(t.get('swap_agreement'))} |",
                "",
                f"Test pairs: {judge['test_kinds']}; training pairs: {judge['train_kinds']}; judge training "
                f"took {judge['seconds']['train'] / 60:.1f} min (sampling the base policy's answers is not counted: it is "
                "kept in the run folder and was reused from a first attempt).",
            ]
        )
    base = results["base"]
    cfg = results["config"]
    pairs = make_splits(cfg["sizes"], cfg["split_seed"], cfg["digits"])["eval"]
    seed1 = [f"`{a}`" for a in ARM_TITLES if "1" in results["arms"].get(a, {})]
    subs = {
        "{{seed1}}": ", ".join(seed1) if seed1 else "no arm",
        "{{copy_ceiling}}": f"{sum(a > b for a, b in pairs)} of {len(pairs)} ({_pct(sum(a > b for a, b in pairs) / len(pairs))} %)",
        "{{rollouts}}": str(cfg["max_steps"]),
        "{{mid}}": str(cfg["eval_every"]),
        "{{yardstick}}": yardstick_table(results),
        "{{walltimes}}": walltimes(results),
        "{{table}}": table(results),
        "{{judge}}": judge_md,
        "{{figure}}": "![oracle accuracy and reward per rollout](rlhf_miniature_curves.png)",
        "{{base}}": f"{_pct(base['accuracy'])} % of {base['n']}",
        "{{base_examples}}": "\n".join(f"    {e!r}" for e in base["examples"]),
    }
    for key, value in subs.items():
        body = body.replace(key, value)
    path.write_text(body)
