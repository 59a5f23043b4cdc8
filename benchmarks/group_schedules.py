"""Comparison schedules for group rewards: judge calls, wall time and agreement with all pairs (``docs/performance.md``).

Two parts, each writing a JSON file and a Markdown table:

* ``simulated``: a judge with known strengths (a member's true quality) and a position bias; for each schedule, the
  judge calls per group and the Kendall tau of its rewards against the true ranking, over many groups (no model).
* ``real``: hh-rlhf (harmless-base test) questions; each group holds the human-chosen and human-rejected answers,
  two answers to other questions (off-topic) and the embedded SmolLM2's own sampled answers. The judge is SmolLM2
  trained briefly in direct mode with ``GramRewardTrainer`` (LoRA, 96 hh-rlhf pairs from questions outside the
  groups, half of them with an off-topic answer as the rejected one; trained once and kept under ``--out``). For each schedule: judge calls per group, wall time
  (ratio to all pairs, same process, cache off), and agreement with the all-pairs, both-orders rewards: Spearman and
  Kendall over the group, and the share of GRPO advantages (reward minus group mean) with the same sign.

    python benchmarks/group_schedules.py simulated --out runs/group_schedules
    nice -n 15 env OMP_NUM_THREADS=1 python benchmarks/group_schedules.py real \\
        --data ../shared/data/hh_rlhf_harmless_base_test.jsonl.gz --out runs/group_schedules

Each part resumes: a finished piece (the trained judge, the generated answers, each schedule's results) is read back.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import time
from pathlib import Path

import numpy as np

from trl_gram.judge import JudgeRun, combine_runs
from trl_gram.reward import GenerativeRewardFunction

SCHEDULES = {  # name -> GenerativeRewardFunction settings ("2G": a budget of twice the group size)
    "all pairs, both orders, mean (today)": dict(),
    "all pairs, both orders, Bradley-Terry": dict(aggregate="bradley_terry"),
    "all pairs, adaptive, Bradley-Terry": dict(aggregate="bradley_terry", second_order="adaptive"),
    "pivot, both orders (today's cheap option)": dict(reference="pivot"),
    "circular d=2, both orders, BT": dict(schedule="circular", schedule_degree=2, aggregate="bradley_terry"),
    "sparse d=2, both orders, BT": dict(schedule="sparse", schedule_degree=2, aggregate="bradley_terry"),
    "sparse d=3, adaptive, budget 2G, BT": dict(
        schedule="sparse", schedule_degree=3, aggregate="bradley_terry", second_order="adaptive", budget="2G"
    ),
    "sparse d=4, one order (budget 2G), BT": dict(
        schedule="sparse", schedule_degree=4, aggregate="bradley_terry", second_order="adaptive", budget="2G"
    ),
    "sparse d=4, adaptive, BT": dict(
        schedule="sparse", schedule_degree=4, aggregate="bradley_terry", second_order="adaptive"
    ),
    "sparse d=4, both orders, BT": dict(schedule="sparse", schedule_degree=4, aggregate="bradley_terry"),
}
REAL_DEFAULT = [  # the real judge costs minutes per schedule on a CPU: the informative ones
    "all pairs, both orders, mean (today)",
    "sparse d=4, one order (budget 2G), BT",
    "sparse d=4, adaptive, BT",
    "pivot, both orders (today's cheap option)",
    "sparse d=2, both orders, BT",
    "sparse d=4, both orders, BT",
]
BASELINE = "all pairs, both orders, mean (today)"


def reward_for(judge, settings: dict, group_size: int) -> GenerativeRewardFunction:
    kw = dict(settings)
    reference = kw.pop("reference", "group")
    if kw.pop("budget", None) == "2G":
        kw["max_judge_calls_per_group"] = 2 * group_size
    return GenerativeRewardFunction(judge, reference=reference, log_rationales=False, **kw)


# ------------------------------------------------------------------------------------------------------------------
# rank statistics (numpy only)
# ------------------------------------------------------------------------------------------------------------------
def _ranks(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):  # ties share their mean rank
        tied = x == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x, y) -> float:
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / den) if den else float("nan")


def kendall(x, y) -> float:
    """Kendall's tau-b."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(x), 1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    den = math.sqrt(float((sx != 0).sum() * (sy != 0).sum()))
    return float((sx * sy).sum() / den) if den else float("nan")


def sign_agreement(x, y) -> float:
    """Share of members whose GRPO advantage (reward minus group mean) has the same sign under both rewards."""
    ax, ay = np.asarray(x) - np.mean(x), np.asarray(y) - np.mean(y)
    return float(np.mean(np.sign(ax) == np.sign(ay)))


# ------------------------------------------------------------------------------------------------------------------
# simulated judge
# ------------------------------------------------------------------------------------------------------------------
class SimulatedJudge:
    """A judge with known strengths: P(first shown wins) = sigmoid(s_first - s_second + bias + noise); the noise is
    fixed per (pair, order), so the same question gets the same answer."""

    def __init__(self, strengths: dict, bias: float = 0.5, noise: float = 0.5, seed: int = 0):
        self.strengths, self.bias, self.noise, self.seed = strengths, bias, noise, seed

    def judge(self, questions, responses_1, responses_2, swap: str = "both", **_):
        out = []
        for q, a, b in zip(questions, responses_1, responses_2):
            runs = []
            for order in ("AB", "BA") if swap == "both" else ("AB",):
                x, y = (a, b) if order == "AB" else (b, a)
                eps = random.Random(f"{self.seed}|{q}|{x}|{y}").gauss(0, self.noise)
                p = 1 / (1 + math.exp(-(self.strengths[x] - self.strengths[y] + self.bias + eps)))
                runs.append(JudgeRun(order, p, "A" if p >= 0.5 else "B"))
            out.append(combine_runs(runs, ("A", "B")))
        return out


def simulated(args) -> dict:
    rows, baseline = {}, {}
    for g in args.group_sizes:
        rng = random.Random(g)
        groups = []
        for k in range(args.groups):
            names = [f"q{k}-r{m}" for m in range(g)]
            groups.append({n: rng.gauss(0, 1) for n in names})
        for name, settings in SCHEDULES.items():
            taus, calls, rhos = [], [], []
            for k, strengths in enumerate(groups):
                judge = SimulatedJudge(strengths, bias=args.bias, noise=args.noise, seed=k)
                reward = reward_for(judge, settings, g)
                names = list(strengths)
                out = reward([f"q{k}"] * g, names)
                if name == BASELINE:
                    baseline[(g, k)] = out
                taus.append(kendall(out, [strengths[n] for n in names]))
                rhos.append(spearman(out, baseline[(g, k)]))
                calls.append(reward.last_cost.judge_calls)
            rows.setdefault(name, {})[g] = {
                "judge_calls": float(np.mean(calls)),
                "kendall_vs_truth": float(np.mean(taus)),
                "kendall_vs_truth_se": float(np.std(taus, ddof=1) / math.sqrt(len(taus))),
                "spearman_vs_all_pairs": float(np.mean(rhos)),
            }
    return {"settings": vars(args), "rows": rows}


def simulated_table(result) -> str:
    sizes = sorted({int(g) for r in result["rows"].values() for g in r})
    head = (
        "| schedule | "
        + " | ".join(f"G={g}: calls / group | G={g}: Kendall τ vs truth | G={g}: Spearman vs all pairs" for g in sizes)
        + " |"
    )
    lines = [head, "|" + "---|" * (1 + 3 * len(sizes))]
    for name, row in result["rows"].items():
        cells = []
        for g in sizes:
            r = row[str(g)] if str(g) in row else row[g]
            cells += [
                f"{r['judge_calls']:.1f}",
                f"{r['kendall_vs_truth']:.3f} ± {r['kendall_vs_truth_se']:.3f}",
                f"{r['spearman_vs_all_pairs']:.3f}",
            ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------------
# real judge on hh-rlhf
# ------------------------------------------------------------------------------------------------------------------
def read_hh(path: str) -> list[dict]:
    """``{"prompt", "chosen", "rejected"}`` rows: the prompt is the transcript up to the last assistant turn."""
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            marker = "\n\nAssistant:"
            cut_c, cut_r = row["chosen"].rfind(marker), row["rejected"].rfind(marker)
            prompt = row["chosen"][:cut_c].strip()
            if cut_c < 0 or prompt != row["rejected"][:cut_r].strip():
                continue
            chosen = row["chosen"][cut_c + len(marker) :].strip()
            rejected = row["rejected"][cut_r + len(marker) :].strip()
            if chosen and rejected and chosen != rejected and len(prompt) < 200:
                rows.append({"prompt": prompt, "chosen": chosen[:200], "rejected": rejected[:200]})
    return rows


def train_judge(args, rows, out: Path) -> Path:
    """A direct judge: the embedded SmolLM2 with a LoRA adapter trained by GramRewardTrainer (merged, saved once)."""
    folder = out / "judge"
    if (folder / "config.json").is_file():
        return folder
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer

    from research.reproduction.harness.config import compact_template
    from trl_gram.default_model import default_model_path
    from trl_gram.training.config import GramRewardConfig
    from trl_gram.training.trainer import GramRewardTrainer

    base = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    train = Dataset.from_list(rows)
    config = GramRewardConfig(
        output_dir=str(out / "judge_train"),
        mode="direct",
        learning_rate=args.judge_lr,
        num_train_epochs=1,
        per_device_train_batch_size=8,
        max_length=args.max_length,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=2,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        seed=0,
        dataloader_num_workers=0,
        bf16=False,
        judge_eval=False,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    start = time.perf_counter()
    trainer = GramRewardTrainer(
        base,
        args=config,
        train_dataset=train,
        processing_class=tokenizer,
        template=compact_template(reasoning=False),
        peft_config=lora,
    )
    trainer.train()
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    (out / "judge_training.json").write_text(
        json.dumps({"pairs": len(rows), "seconds": time.perf_counter() - start, "loss": losses}, indent=2) + "\n"
    )
    return folder


def load_real_judge(folder: Path, max_length: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from research.reproduction.harness.config import compact_template
    from trl_gram.judge import GramJudge, GramJudgeConfig

    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    config = GramJudgeConfig(
        mode="direct",
        template=compact_template(reasoning=False),
        swap="both",
        max_length=max_length,
        cache_size=0,  # every schedule pays for its own calls
        show_progress=False,
    )
    return GramJudge(model, tokenizer, config=config)


def own_answers(rows, count: int, out: Path, max_new_tokens: int) -> list[list[str]]:
    """``count`` sampled answers of the embedded SmolLM2 per question (generated once, kept in ``out``)."""
    path = out / f"own_answers_{count}.json"
    if path.is_file():
        return json.loads(path.read_text())
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_gram.default_model import default_model_path

    base = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    torch.manual_seed(0)
    answers = []
    for row in tqdm(rows, desc="own answers"):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["prompt"]}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer([text] * count, return_tensors="pt")
        with torch.no_grad():
            gen = model.generate(
                **ids,
                do_sample=True,
                temperature=1.0,
                top_p=0.95,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        answers.append(
            [tokenizer.decode(g[ids["input_ids"].shape[1] :], skip_special_tokens=True).strip() or "..." for g in gen]
        )
    path.write_text(json.dumps(answers) + "\n")
    return answers


def real(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_hh(args.data)
    rng = random.Random(0)
    rng.shuffle(rows)
    group_rows, train_rows = rows[: args.groups], rows[args.groups : args.groups + args.train_pairs]
    if args.off_topic_share > 0:  # easier pairs: the human answer against an answer to another question
        every = round(1 / args.off_topic_share)
        train_rows = [
            {**row, "rejected": train_rows[(k + 7) % len(train_rows)]["chosen"]} if k % every == every - 1 else row
            for k, row in enumerate(train_rows)
        ]
    folder = train_judge(args, train_rows, out)
    if args.train_only:
        return {}
    judge = load_real_judge(folder, args.max_length)
    g_max = max(args.group_sizes)
    own = own_answers(group_rows, g_max - 4, out, args.max_new_tokens)
    result_path = out / "real.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {"rows": {}}
    result["settings"] = {k: v for k, v in vars(args).items() if k != "func"}
    for g in args.group_sizes:
        groups = []
        for k, row in enumerate(group_rows):
            others = [group_rows[(k + 1) % len(group_rows)]["chosen"], group_rows[(k + 2) % len(group_rows)]["chosen"]]
            members = [row["chosen"], row["rejected"], *others, *own[k][: g - 4]]
            groups.append((row["prompt"], members))
        rewards = {}
        names = [BASELINE] + [n for n in args.schedules if n != BASELINE]
        for name in names:
            settings = SCHEDULES[name]
            key = f"{g}|{name}"
            if key in result["rows"]:
                rewards[name] = result["rows"][key]["rewards"]
                continue
            reward = reward_for(judge, settings, g)
            outs, calls, start = [], [], time.perf_counter()
            for prompt, members in groups:
                outs.append(reward([prompt] * g, members))
                calls.append(reward.last_cost.judge_calls)
            seconds = time.perf_counter() - start
            rewards[name] = outs
            result["rows"][key] = {
                "group_size": g,
                "schedule": name,
                "rewards": outs,
                "judge_calls": calls,
                "seconds": seconds,
            }
            print(f"G={g} {name}: {np.mean(calls):.1f} calls/group, {seconds:.1f} s", flush=True)
            base = rewards[BASELINE]
            r = result["rows"][key]
            r["spearman"] = float(np.nanmean([spearman(a, b) for a, b in zip(outs, base)]))
            r["kendall"] = float(np.nanmean([kendall(a, b) for a, b in zip(outs, base)]))
            r["advantage_sign_agreement"] = float(np.mean([sign_agreement(a, b) for a, b in zip(outs, base)]))
            r["wall_time_ratio"] = seconds / result["rows"][f"{g}|{BASELINE}"]["seconds"]
            # how often this schedule's rewards put the human-chosen answer above the human-rejected one
            r["chosen_above_rejected"] = float(np.mean([o[0] > o[1] for o in outs]))
            result_path.write_text(json.dumps(result) + "\n")
            (out / "real.md").write_text(real_table(result) + "\n")
    return result


def real_table(result) -> str:
    lines = [
        "| G | schedule | judge calls / group | wall time vs all pairs | Spearman vs all pairs | Kendall vs all pairs "
        "| GRPO advantage sign agreement | chosen > rejected |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"].values():
        lines.append(
            f"| {r['group_size']} | {r['schedule']} | {np.mean(r['judge_calls']):.1f} | {r['wall_time_ratio']:.2f} "
            f"| {r['spearman']:.3f} | {r['kendall']:.3f} | {r['advantage_sign_agreement']:.3f} "
            f"| {r['chosen_above_rejected']:.2f} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    sim = sub.add_parser("simulated", help="Simulated judge with known strengths and a position bias.")
    sim.add_argument("--groups", type=int, default=300)
    sim.add_argument("--bias", type=float, default=0.5, help="Position bias (log-odds added to the first shown).")
    sim.add_argument("--noise", type=float, default=0.5, help="Judge noise (log-odds, per pair and order).")
    hh = sub.add_parser("real", help="Trained direct judge on hh-rlhf groups.")
    hh.add_argument("--data", required=True, help="hh_rlhf_harmless_base_test.jsonl.gz")
    hh.add_argument("--groups", type=int, default=6)
    hh.add_argument("--train_pairs", type=int, default=96)
    hh.add_argument("--judge_lr", type=float, default=5e-4)
    hh.add_argument(
        "--off_topic_share",
        type=float,
        default=0.5,
        help="Share of training pairs whose rejected answer is another question's chosen one.",
    )
    hh.add_argument("--max_length", type=int, default=256)
    hh.add_argument("--max_new_tokens", type=int, default=32)
    hh.add_argument("--train_only", action="store_true", help="Only train (and keep) the judge.")
    hh.add_argument("--schedules", nargs="+", default=REAL_DEFAULT, choices=list(SCHEDULES), metavar="NAME")
    for p in (sim, hh):
        p.add_argument("--group_sizes", type=int, nargs="+", default=[8, 16] if p is sim else [8])
        p.add_argument("--out", default="runs/group_schedules")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "simulated":
        result = simulated(args)
        (out / "simulated.json").write_text(json.dumps(result, indent=2) + "\n")
        print(simulated_table(json.loads(json.dumps(result))))
    else:
        result = real(args)
        if result:
            (out / "real.md").write_text(real_table(result) + "\n")
            print(real_table(result))


if __name__ == "__main__":
    main()
