"""Offline helpers for the training tests: a small byte-level BPE tokenizer trained on the fly, tiny random Llama
models, a short judge template, and synthetic preference data whose rule a tiny model can learn."""

from __future__ import annotations

import random

import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from trl_gram.templates import GRAM_R2_PROMPT, GRAM_V1_PROMPT, JudgeTemplate
from trl_gram.training.config import GramRewardConfig
from trl_gram.training.prover import PROVER_PROMPT
from trl_gram.training.trainer import GramRewardTrainer

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

WORDS = ["apple", "river", "stone", "cloud", "tiger", "maple", "ocean", "piano", "lemon", "eagle", "candle", "forest"]

SHORT_REASON_TEMPLATE = JudgeTemplate(
    text="Which is better?\nQ: {question}\nA: {first}\nB: {second}\n",
    question_field="question",
    first_field="first",
    second_field="second",
    reasoning=True,
)
SHORT_DIRECT_TEMPLATE = SHORT_REASON_TEMPLATE.replace(reasoning=False, text=SHORT_REASON_TEMPLATE.text + "Better: ")

_CORPUS = [
    GRAM_R2_PROMPT,
    PROVER_PROMPT,
    GRAM_V1_PROMPT,
    "<think>\nFeedback:\nComparision:\nConclusion: Response A is better. Response B is better.\n</think>\n"
    "<answer>\nA\n</answer>\n<answer>\nB\n</answer>",
    "Here is my justification for why the selected response is the better one:",
    "[User Question]\n[The Start of Assistant A's Answer]\n[The End of Assistant B's Answer]\n#Preferred: ",
    "Which is better? Q: A: B: Better: the answer repeats the word of the question",
    " ".join(WORDS) + "\n" + "\n".join(" " + w for w in WORDS) * 20,
    "0 1 2 3 4 5 6 7 8 9 + = sum is the right",
]


def make_tokenizer(chat_template: bool = True, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (every string round-trips; ``"A"`` and ``"B"`` are single tokens)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>" if chat_template else "<|endoftext|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    if chat_template:
        fast.chat_template = CHATML
    return fast


def make_model(tokenizer, hidden_size: int = 64, layers: int = 2, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


GOOD_WORDS = WORDS[:6]
BAD_WORDS = WORDS[6:]


def rule_rows(n: int, seed: int = 0, with_rationale: bool = False) -> list[dict]:
    """The synthetic rule: the better response is a word of ``GOOD_WORDS``, the worse one a word of ``BAD_WORDS``;
    the question is a random word."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        good, bad = rng.choice(GOOD_WORDS), rng.choice(BAD_WORDS)
        row = {"prompt": rng.choice(WORDS), "chosen": good, "rejected": bad}
        if with_rationale:
            row["rationale"] = f"Response A has {good}. Response A is better."
        rows.append(row)
    return rows


def tiny_training_args(tmp_path, **overrides) -> GramRewardConfig:
    """A `GramRewardConfig` for tiny CPU runs under ``tmp_path/out``: float32, no checkpoints, no reporting, no
    judge evaluation unless ``overrides`` ask for it."""
    settings = dict(
        report_to=[],
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        max_length=256,
        save_strategy="no",
        disable_tqdm=True,
        judge_eval=False,
    )
    settings.update(overrides)
    return GramRewardConfig(str(tmp_path / "out"), **settings)


def reason_trainer(tokenizer, args: GramRewardConfig, rows: list[dict]):
    """A ``GramRewardTrainer`` in reason mode (``SHORT_REASON_TEMPLATE``) on a fresh tiny model and ``rows``."""
    return GramRewardTrainer(
        make_model(tokenizer),
        args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        template=SHORT_REASON_TEMPLATE,
    )
