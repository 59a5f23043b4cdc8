"""Training throughput of ``GramRewardTrainer`` against plain TRL ``SFTTrainer`` on the same examples and settings.

Both trainers see the same tokenized judge examples (``GramRewardTrainer`` renders and tokenizes the pairs; the plain
``SFTTrainer`` gets those ``input_ids`` with the label-slot markers replaced by the label tokens, i.e. the ordinary
completion-only NLL), the same model, batch size, steps, optimizer and seed. Each repeat builds fresh trainers and
runs them back to back (order alternating), so machine load hits both alike; the figure is trained tokens (attention
mask, as TRL counts them) per second of ``train()``. In ``reason`` mode with ``label_loss=nll`` the two objectives are
identical, which the script checks on the first logged loss.

    python benchmarks/train_throughput.py --data ../shared/data/hh_rlhf_harmless_base_test.jsonl.gz --select 0:48 \\
        --modes reason,direct --steps 6 --batch_size 4 --repeats 2

Without ``--model`` the embedded SmolLM2-135M-Instruct is used (offline).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="Model path/id (default: embedded SmolLM2-135M-Instruct).")
    p.add_argument("--data", required=True, help="Pairwise data file (any format trl-gram loads).")
    p.add_argument("--select", default="0:48", help="Rows 'start:stop' of the data file.")
    p.add_argument("--modes", default="reason,direct", help="Comma-separated modes to measure.")
    p.add_argument("--template", default=None, help="Template name or prompt file (default: the mode's).")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--max_length", type=int, default=768)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--output_json", default=None)
    return p.parse_args(argv)


def _rows_with_rationale(dataset):
    # Throughput does not depend on what the rationale says; a fixed, label-consistent one keeps the run offline.
    text = "Feedback: Response A is safer and more helpful.\n\nComparision: Response B is worse.\n\nConclusion: Response A is better."
    return dataset.map(lambda _: {"rationale": text})


def _common(out, args, cuda):
    return dict(
        output_dir=out,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        max_length=args.max_length,
        gradient_checkpointing=False,
        save_strategy="no",
        report_to=[],
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        use_cpu=not cuda,
        bf16=cuda,
    )


def run_once(kind, mode, args, model_path, rows, tokenized, label_ids):
    from trl import SFTConfig, SFTTrainer

    from trl_gram.training.config import GramRewardConfig
    from trl_gram.training.losses import split_label_slots
    from trl_gram.training.trainer import GramRewardTrainer

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as out:
        if kind == "gram":
            cfg = GramRewardConfig(mode=mode, template=args.template, judge_eval=False, **_common(out, args, cuda))
            trainer = GramRewardTrainer(model_path, cfg, train_dataset=rows)
        else:

            def plain(ex):
                labels = split_label_slots(torch.tensor([ex["labels"]]), label_ids, keep_in_lm=True)[0][0].tolist()
                return {"input_ids": ex["input_ids"], "labels": labels}

            cfg = SFTConfig(**_common(out, args, cuda))
            trainer = SFTTrainer(model_path, cfg, train_dataset=tokenized.map(plain))
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
        tokens = trainer._total_train_tokens
        first_loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "first_loss": first_loss,
        "train_runtime": result.metrics["train_runtime"],
    }


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    from trl_gram.formats import load_pairs
    from trl_gram.training.config import GramRewardConfig
    from trl_gram.training.trainer import GramRewardTrainer

    transformers.logging.set_verbosity_error()
    if args.model is None:
        from trl_gram.default_model import default_model_path

        args.model = default_model_path()
    data, _ = load_pairs(args.data, select=args.select)
    data = _rows_with_rationale(data)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    report = {
        "model": args.model,
        "device": device,
        "data": args.data,
        "select": args.select,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "modes": {},
    }
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory() as out:  # the tokenized examples both trainers will see
            cfg = GramRewardConfig(
                mode=mode, template=args.template, judge_eval=False, **_common(out, args, torch.cuda.is_available())
            )
            probe = GramRewardTrainer(args.model, cfg, train_dataset=data)
            tokenized, label_ids = probe.train_dataset, probe.label_token_ids
            del probe
        runs = {"gram": [], "sft": []}
        for r in range(args.repeats):
            for kind in ("gram", "sft") if r % 2 == 0 else ("sft", "gram"):
                runs[kind].append(run_once(kind, mode, args, args.model, data, tokenized, label_ids))
                print(f"[{mode}] repeat {r} {kind}: {runs[kind][-1]['tokens_per_s']:.1f} tokens/s", flush=True)
        med = {k: statistics.median(x["tokens_per_s"] for x in v) for k, v in runs.items()}
        report["modes"][mode] = {
            "gram_tokens_per_s": med["gram"],
            "sft_tokens_per_s": med["sft"],
            "ratio": med["gram"] / med["sft"],
            "first_loss": {k: v[0]["first_loss"] for k, v in runs.items()},
            "runs": runs,
            "mean_example_tokens": sum(len(x) for x in tokenized["input_ids"]) / len(tokenized),
        }
    print(
        f"\nmodel {args.model} on {device}; {args.steps} steps x batch {args.batch_size}, max_length {args.max_length}"
    )
    print(f"{'mode':8} {'GramRewardTrainer':>18} {'SFTTrainer':>12} {'ratio':>6}  first loss (gram / sft)")
    for mode, m in report["modes"].items():
        fl = m["first_loss"]
        print(
            f"{mode:8} {m['gram_tokens_per_s']:14.1f} t/s {m['sft_tokens_per_s']:8.1f} t/s {m['ratio']:6.3f}  "
            f"{fl['gram']:.4f} / {fl['sft']:.4f}"
        )
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
