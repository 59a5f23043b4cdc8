"""Helpers for the PPO tests: tiny policies, prompt datasets, programmatic rewards, a config with test defaults.

Also a script (`accelerate launch tests/ppo_utils.py --output_dir D --max_steps N [--resume]`) that runs a tiny PPO
with a programmatic reward, used by the multi-process test.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from datasets import Dataset  # noqa: E402
from tiny_models import tiny_llama, tiny_tokenizer  # noqa: E402

from trl_gram.ppo import GramPPOConfig, GramPPOTrainer  # noqa: E402
from trl_gram.script_utils import end_distributed  # noqa: E402

TOPICS = ["the sea", "the sky", "Paris", "a poem", "numbers", "the sun", "a friend", "the world"]


def prompt_dataset(n: int = 32, conversational: bool = False, extra_column: bool = True) -> Dataset:
    rows = []
    for i in range(n):
        text = f"Write about {TOPICS[i % len(TOPICS)]} {i}."
        row = {"prompt": [{"role": "user", "content": text}] if conversational else text}
        if extra_column:
            row["topic_id"] = i % len(TOPICS)
        rows.append(row)
    return Dataset.from_list(rows)


def target_ids(tokenizer, count: int = 64) -> set[int]:
    """`count` ordinary (non-special) token ids: the "good" tokens of the programmatic reward."""
    special = set(tokenizer.all_special_ids)
    return set([i for i in range(len(tokenizer)) if i not in special][:count])


def make_share_reward(targets: set[int], eos_id: int):
    """Reward = share of the completion's tokens (EOS excluded) that are in `targets`."""

    def target_share(prompts, completions, completion_ids, **kwargs):
        out = []
        for ids in completion_ids:
            ids = [t for t in ids if t != eos_id]
            out.append(sum(t in targets for t in ids) / max(len(ids), 1))
        return out

    return target_share


class RecordingReward:
    """A reward that records its calls and returns `value` (or None where `none_every` divides the index)."""

    __name__ = "recording"

    def __init__(self, value: float = 1.0, none_every: int | None = None):
        self.calls = []
        self.value = value
        self.none_every = none_every

    def __call__(self, prompts, completions, completion_ids, **kwargs):
        self.calls.append(dict(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs))
        return [
            None if self.none_every and i % self.none_every == 0 else self.value + 0.01 * i
            for i in range(len(completions))
        ]


def ppo_config(output_dir: str, **overrides) -> GramPPOConfig:
    kwargs = dict(
        output_dir=str(output_dir),
        report_to="none",
        use_cpu=True,
        max_steps=4,
        logging_steps=1,
        save_strategy="no",
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        num_ppo_epochs=2,
        max_completion_length=6,
        max_prompt_length=32,
        temperature=1.0,
        learning_rate=1e-3,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return GramPPOConfig(**kwargs)


def main(argv=None):
    """Tiny PPO for `accelerate launch`: each rank writes `rank{i}.json` (the prompts it was given and a hash of its
    final policy weights) in the output directory."""
    import argparse
    import hashlib
    import json

    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_steps", type=int, default=4)
    args = parser.parse_args(argv)

    tokenizer = tiny_tokenizer()
    reward = make_share_reward(target_ids(tokenizer), tokenizer.eos_token_id)
    seen = []

    def recording(prompts, completions, completion_ids, **kwargs):
        seen.extend(prompts)
        return reward(prompts, completions, completion_ids)

    config = ppo_config(
        args.output_dir,
        max_steps=args.max_steps,
        num_ppo_epochs=1,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        reward_normalization="batch",
    )
    trainer = GramPPOTrainer(
        tiny_llama(tokenizer, seed=0),
        recording,
        args=config,
        train_dataset=prompt_dataset(32),
        processing_class=tokenizer,
    )
    trainer.train()
    digest = hashlib.sha256()
    for name, tensor in sorted(trainer.accelerator.unwrap_model(trainer.model).state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().float().numpy().tobytes())
    rank = trainer.accelerator.process_index
    with open(os.path.join(args.output_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"world": trainer.accelerator.num_processes, "prompts": seen, "weights": digest.hexdigest()}, f)
    end_distributed(trainer)


if __name__ == "__main__":
    main()
