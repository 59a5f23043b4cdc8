"""A direct-mode training step (GRAM v1 template, the 2-way label-smoothing loss) on the embedded SmolLM2-135M-Instruct
with LoRA, bf16 autocast on the CPU: `GramRewardTrainer`'s label-only forward (the LM head on the label slots only)
against the same step through `SFTTrainer.compute_loss` (full-vocabulary logits, entropy and token accuracy at every
position). Both run in one process, alternating, on the same batch, so machine load hits both alike; the figure is the
ratio of median step times, and the two losses must agree.

    OMP_NUM_THREADS=2 python benchmarks/direct_label_only_step.py --batch_size 8 --words 120 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="Model path (default: the embedded SmolLM2-135M-Instruct).")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--words", type=int, default=120, help="Words per response (about 1.3 tokens each).")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTTrainer

    from trl_gram import GramRewardConfig, GramRewardTrainer
    from trl_gram.default_model import default_model_path

    torch.manual_seed(0)
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing".split()
    rows = [
        {
            "prompt": f"Question {i}: " + " ".join(words[(i + k) % len(words)] for k in range(30)),
            "chosen": " ".join(words[(i * 3 + k) % len(words)] for k in range(args.words)),
            "rejected": " ".join(words[(i * 3 + k) % len(words)] for k in reversed(range(args.words))),
        }
        for i in range(args.batch_size)
    ]
    config = GramRewardConfig(
        "/tmp/direct_label_only_step",
        mode="direct",
        label_loss="label_smoothing",
        use_cpu=True,
        bf16=True,
        report_to=[],
        max_length=1024,
        disable_tqdm=True,
    )
    trainer = GramRewardTrainer(
        default_model_path(),
        config,
        train_dataset=Dataset.from_list(rows),
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(args.batch_size)])
    model = trainer.model.train()
    label_only = trainer._label_only_forward

    def full_forward(model, inputs):  # the SFTTrainer path (what ran before the label-only forward)
        return SFTTrainer.compute_loss(trainer, model, inputs, return_outputs=True)

    def step(fast: bool) -> tuple[float, float]:
        trainer._label_only_forward = label_only if fast else full_forward
        start = time.perf_counter()
        with trainer.compute_loss_context_manager():
            loss = trainer.compute_loss(model, {k: v.clone() for k, v in batch.items()})
        loss.backward()
        model.zero_grad()
        return time.perf_counter() - start, loss.item()

    times, losses = {False: [], True: []}, {}
    for _ in range(args.repeats):
        for fast in (False, True):
            t, losses[fast] = step(fast)
            times[fast].append(t)
    full, fast = statistics.median(times[False]), statistics.median(times[True])
    tokens = int(batch["attention_mask"].sum())
    print(
        f"{args.batch_size} direct examples, {tokens} tokens: full logits {full:.2f} s/step, label-only {fast:.2f} "
        f"s/step: {full / fast:.2f}x faster; losses {losses[False]:.5f} / {losses[True]:.5f}"
    )


if __name__ == "__main__":
    main()
