"""The prose of a reproduction report (``research/reproduction/reports/reproduction_<name>.md``) around its measured
tables and figures (see [`~research.reproduction.harness.report.write_report`])."""

from __future__ import annotations

from collections import defaultdict

from .config import COMPACT_PROMPT, ReproductionConfig
from .synthetic import oracle_rationale

PAPER = (
    "GRAM-R² (8B): 85.7 RM-Bench / 81.0 JudgeBench; the generative baseline without the self-training pipeline: "
    "79.2 / 76.9 (arXiv 2509.02492)."
)


def _fingerprints(results: list[dict]) -> str:
    seen = defaultdict(set)
    for r in results:
        seen[r["task"]].add(r.get("test_fingerprint"))
    lines = []
    for task, fps in sorted(seen.items()):
        n = sum(r["task"] == task for r in results)
        if len(fps) == 1:
            lines.append(
                f"- `{task}`: all {n} arm × seed results were scored on the same test slice "
                f"(fingerprint `{next(iter(fps))}`)."
            )
        else:
            lines.append(f"- `{task}`: **test slices differ** across results: {sorted(map(str, fps))}.")
    return "\n".join(lines)


def _scale(cfg: ReproductionConfig, recipe: str) -> str:
    if cfg.tiny_model:
        return (
            "> **Smoke scale.** These figures come from `research/reproduction/configs/reproduce_smoke.yaml`: a *random* "
            f"{cfg.tiny_model.get('num_hidden_layers', 2)}-layer, hidden-size {cfg.tiny_model.get('hidden_size', 64)} "
            "Llama with SmolLM2's tokenizer, a handful of pairs, one short epoch. They show that every arm runs end to "
            "end through the real training code and that the report is generated from measurements; they say nothing "
            "about whether the method works (a random model judges at chance).\n"
        )
    return f"> Settings: `{recipe}` (see Setup). The summary of every scale is `docs/reproduction.md`.\n"


def _adapt_target(cfg) -> str:
    """The adaptation domain in words (a synthetic one names its rule)."""
    if cfg.adapt_domain != "synthetic":
        return cfg.adapt_domain
    return f"synthetic `{cfg.adapt_synthetic_rule()}` rule"


def render(cfg, recipe, command, results, table, adaptation, figures, speed, wall_s, source=None, notes=None) -> str:
    source = source or cfg.output_dir
    out = ["# Reproducing the GRAM-R² claims in miniature\n", _scale(cfg, recipe)]
    if notes:
        out.append(notes + "\n")
    report_cmd = f"python -m research.reproduction.harness --config {recipe} --report-only"
    if wall_s is None:  # a --report-only rebuild: the figures come from earlier runs of the recipe
        produced = (
            f"Every number and figure below was computed by `python -m research.reproduction.harness --config {recipe}` (resumable: a "
            f"rerun skips every finished arm × seed) and collected from `{source}` by\n\n"
        )
    else:
        produced = "Every number and figure below was produced by\n\n"
    out.append(
        "## Commands\n\n"
        + produced
        + f"```bash\n{command}\n```\n"
        + (
            ""
            if command == report_cmd or "--report-only" in command
            else f"\n(`{report_cmd}` rebuilds this page from `{cfg.output_dir}`).\n"
        )
    )
    total = sum(r.get("wall_s", 0) for r in results)
    out.append(
        "## Setup\n\n"
        f"- Judge: `{'random tiny model' if cfg.tiny_model else (cfg.model_name_or_path or 'SmolLM2-135M-Instruct')}`"
        f", fine-tuning: **{cfg.finetune}**"
        + (f" (r={cfg.lora_r}, alpha={cfg.lora_alpha}, all linear layers)" if cfg.finetune == "lora" else "")
        + f", lr {cfg.learning_rate}, {cfg.num_train_epochs} epoch(s), batch {cfg.per_device_train_batch_size}.\n"
        f"- Seeds: {cfg.seeds}. Tasks: {cfg.tasks}. hh-rlhf sizes: labeled {cfg.labeled}, unlabeled "
        f"{cfg.rounds} × {cfg.unlabeled_per_round}, test {cfg.test} (pairs of at most {cfg.max_chars} characters); "
        f"synthetic ({cfg.synthetic_rule} rule, {cfg.synthetic_digits}-digit numbers): {cfg.synthetic}. "
        "Out-of-domain: PandaLM (ties removed) and JudgeBench, "
        f"{cfg.ood_max_pairs} pairs each. Adaptation: {_adapt_target(cfg)}, budgets {cfg.adapt_budgets}, "
        f"{cfg.adapt_test} test pairs, from {cfg.adapt_starts} (self-trained judge: {cfg.adapt_source_task} "
        f"`{cfg.adapt_source_arm}`), epochs {cfg.adapt_training()['num_train_epochs']}.\n"
        f"- Template: `{cfg.template}`."
        + (
            " The released GRAM-R² prompt is ~450 tokens, about three times a short hh-rlhf pair; at this scale every "
            "training and judging pass would mostly read instructions. The compact prompt keeps the same "
            "placeholders, the same `<think>`/`<answer>` output and the same label words, so the code path is the "
            "released one; only the instruction text is shorter:\n\n"
            f"```text\n{COMPACT_PROMPT}\n```\n\n"
            "  Direct judges read the same prompt with an empty rationale prefilled (as `gram-r2-direct` does), so "
            "`direct` and `reason` differ only in the rationale."
            if cfg.template == "compact"
            else ""
        )
        + "\n- Rationales: for the labeled pairs, the base model acting as the preference prover (told the label, "
        f"{cfg.proof_samples} sampled proofs, best by Eq. 5); for pseudo-labels, the judge's own rationale of a run "
        "that agrees with the label (`rationale_source: judge`). The prover is not fine-tuned: there are no human "
        "rationales in this data.\n"
        + (
            "- `reason_oracle` (control task only): `reason` trained on correct rationales written from the rule "
            f"instead of the prover's (`oracle_rationale: {cfg.oracle_rationale}`), e.g. "
            f"`{oracle_rationale('12 is larger than 9.', '9 is larger than 12.', 'A', cfg.oracle_rationale)}`, "
            "written for the order each pair is shown in; it asks whether reasoning helps once the rationales are "
            "right. `reason_oracle_st` self-trains that judge as `reason_st` does (its own rationales for its "
            "pseudo-labels).\n"
            if any(a.startswith("reason_oracle") for a in cfg.arms)
            else ""
        )
        + "- Evaluation (every arm, same code): accuracy with both orders averaged, swap agreement, parse failures "
        "(`trl_gram.judge_metrics.judge_metrics`).\n"
        "- Denoising off (`reason_st_nodenoise`): every rule off (confidence, length, support, vote agreement, "
        "`drop_tied_votes: false`): each pair with a parsed label is kept with the label of its averaged "
        "probability.\n"
        f"- Wall time: {total / 60:.1f} min summed over the arms reported here"
        + (f"; this command ran {wall_s / 60:.1f} min" if wall_s else "")
        + ".\n"
    )
    if speed:
        rows = "".join(
            f"| {k} | {speed[k]['trainable_params']:,} | {speed[k]['s_per_step']} | {speed[k]['tokens_per_s']} |\n"
            for k in ("lora", "full")
        )
        out.append(
            "## LoRA or full fine-tuning?\n\n"
            f"Measured by the same command on `{speed['model']}` ({speed['steps']} timed optimizer steps each after "
            "one warm-up step, same examples):\n\n"
            "| fine-tuning | trainable parameters | s / step | trained tokens / s |\n|---|---|---|---|\n"
            f"{rows}\n**Faster here: {speed['faster']}.**\n"
        )
    out.append("## Results\n\n" + table + "\n" + _fingerprints(results) + "\n")
    captions = {
        "rounds": "Accuracy per self-training round (round 0 is the judge trained on the labeled slice).",
        "denoising": "Kept fraction of pseudo-labels and the share dropped by each denoising rule.",
        "adaptation": f"Few-shot adaptation to {_adapt_target(cfg)}: accuracy from each start point.",
    }
    for name, rel in figures.items():
        out.append(f"### {captions[name]}\n\nProduced by `{command}`:\n\n![{name}]({rel})\n")
    if adaptation:
        out.append(f"### Adaptation figures\n\nProduced by `{command}`:\n\n{adaptation}")
    out.append(
        "## Discussion\n\n"
        "What each claim needs to reproduce: (1) `reason` above `direct` at the same labels; (2) `reason_st` rounds "
        "above `reason`, and above `reason_st_nodenoise`; (3) the `self_trained` adaptation curve above the `base` "
        "one at small budgets. The synthetic task is the control: its rule is known exactly. Where a trained "
        "arm learns it (accuracy well above 50 %), an arm that fails there has a plumbing problem, and one that works "
        "there but not on hh-rlhf meets the limits of a 135M judge (hh-rlhf harmlessness labels are noisy, and a "
        "135M model's own rationales are weak evidence). Where no arm learns the control, it cannot make that "
        "separation.\n\n"
        f"What a GPU run of `recipes/` at the paper's scale should show: {PAPER} A 135M judge cannot approach these "
        "numbers: this experiment is about the direction of each difference, not its size.\n"
    )
    if cfg.tiny_model:
        out.append(
            "## Smoke scale only\n\n"
            "This page holds smoke-scale figures only: none of the paper's claims is confirmed or refuted by it. The "
            "real-model runs (`research/reproduction/configs/reproduce_cpu.yaml`, `research/reproduction/configs/reproduce_gpu.yaml`) are summarised in "
            "`docs/reproduction.md`.\n"
        )
    return "\n".join(out)
