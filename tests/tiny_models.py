"""Tiny offline models and tokenizers for the tests: a byte-level BPE tokenizer trained in memory on a small corpus
(with a ChatML chat template) and small random Llama models. No file or network access."""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from trl_gram.templates import GRAM_R2_PROMPT, GRAM_V1_PROMPT

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    GRAM_R2_PROMPT,
    GRAM_V1_PROMPT,
    "<think>\nFeedback: The response is correct.\n\nComparision: A is better.\n\nConclusion: A\n</think>\n<answer>\nA\n</answer>",
    "<think>\nFeedback: wrong sum.\n\nComparision: B is better.\n\nConclusion: B\n</think>\n<answer>\nB\n</answer>",
    "What is 2 + 3? The answer is 5. What is 7 + 8? It is 15. Write a poem about the sea and the sky.",
    "The capital of France is Paris. I think it is Berlin. Hello world, how are you today? Fine, thanks.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 + - = ? ! . , : ;",
]


@functools.lru_cache(maxsize=4)
def _trained_tokenizer(vocab_size: int) -> str:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 512, chat_template: bool = True) -> PreTrainedTokenizerFast:
    """A real byte-level BPE tokenizer (every string encodes; "A" and "B" are single tokens)."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer(vocab_size)),
        pad_token="<pad>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
    )
    if chat_template:
        tok.chat_template = CHATML
    return tok


def tiny_llama(tokenizer, seed: int = 0, hidden: int = 32, layers: int = 2) -> LlamaForCausalLM:
    """A small random Llama whose vocabulary matches ``tokenizer``."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval()


def sharp_direct_judge(tokenizer, seed: int = 1):
    """A direct-mode [`~trl_gram.judge.GramJudge`] on a tiny Llama whose head is scaled up, so its label
    probabilities are far from 0.5 and differ between pairs (cache off: every call runs the model)."""
    from trl_gram.judge import GramJudge

    model = tiny_llama(tokenizer, seed=seed, hidden=64)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    return GramJudge(model, tokenizer, mode="direct", cache_size=0)
