"""A LoRA training step on the CPU in float32 against the same step under bf16 autocast (what `bf16: true` does in a
TRL/transformers trainer with `use_cpu`), on the embedded SmolLM2-135M-Instruct: the reason the embedded-judge recipe
trains with `bf16: true`. Both run in one process, alternating, so machine load hits both alike; the figure is the
ratio of median step times. On a CPU without native bf16 (AVX-512 BF16 / AMX) the ratio can fall below 1.

    OMP_NUM_THREADS=1 python benchmarks/cpu_bf16_step.py --batch_size 4 --seq_len 700 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="Model path (default: the embedded SmolLM2-135M-Instruct).")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--seq_len", type=int, default=700)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trl_gram.default_model import default_model_path

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model or default_model_path(), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    ids = torch.randint(0, model.config.vocab_size, (args.batch_size, args.seq_len))

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad()
        return time.perf_counter() - start

    times = {False: [], True: []}
    for _ in range(args.repeats):
        for bf16 in (False, True):
            times[bf16].append(step(bf16))
    fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
    print(f"float32 {fp32:.2f} s/step, bf16 autocast {bf16:.2f} s/step: bf16 is {fp32 / bf16:.2f}x faster")


if __name__ == "__main__":
    main()
