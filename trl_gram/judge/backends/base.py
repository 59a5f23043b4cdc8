"""What an inference engine must do for a [`~trl_gram.judge.GramJudge`]: the [`JudgeBackend`] protocol.

A judge needs exactly three things from an engine, all on token prompts the judge has already rendered
([`~trl_gram.judge.rendering.PromptRenderer`]):

* [`JudgeBackend.slot_logits`]: the logits of the label tokens at the position after each prompt (direct mode, and
  the forced answer reads of reason mode);
* [`JudgeBackend.generate_to_slot`]: generate a rationale after each prompt, stop at the answer slot (the first
  non-blank token after the answer tag) and read the label logits there; rationales that never reach the slot are
  continued with the forced answer prefix and read, when asked;
* sampled votes: the same call with [`GenerationSettings.sample`], one independent sample per prompt row.

Label "logits" may be any values whose softmax over the label tokens is the model's label distribution (raw logits,
or log-probabilities: the same softmax up to a constant).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class GenerationSettings:
    """How [`JudgeBackend.generate_to_slot`] generates.

    Args:
        max_new_tokens (`int`): Cap on the rationale length.
        sample (`bool`): Sample (votes) rather than greedy decoding.
        temperature (`float`): Sampling temperature when `sample`.
        top_p (`float`): Nucleus sampling when `sample`.
        seed (`int`): Seed of the sampling.
        force_answer (`bool`): Read the slot after the forced answer prefix when the rationale never reached it.
    """

    max_new_tokens: int
    sample: bool = False
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0
    force_answer: bool = True


@dataclass
class SlotGeneration:
    """One generated rationale.

    Args:
        text (`str`): The generated text (special tokens skipped), up to and including the label token when the slot
            was reached during generation.
        slot_logits (`torch.Tensor` or `None`): Label-token logits at the slot (read while generating, or after the
            forced answer prefix), `None` when the slot was not read.
        reached (`bool`): Whether generation itself reached the answer slot.
    """

    text: str
    slot_logits: torch.Tensor | None
    reached: bool


ForcedText = Callable[[str], str]
"""`f(rationale_text) -> text`: the rationale cut after the answer tag, or followed by the forced answer prefix."""


@runtime_checkable
class JudgeBackend(Protocol):
    """An inference engine a [`~trl_gram.judge.GramJudge`] runs on (transformers, prefix-sharing, vLLM)."""

    name: str

    def slot_logits(self, prompts: Sequence[Sequence[int]], label_ids: list[int], *, progress=None) -> list:
        """Label-token logits (a 1-D tensor per prompt, in the order of `label_ids`) after each prompt."""
        ...

    def generate_to_slot(
        self,
        prompts: Sequence[Sequence[int]],
        label_ids: list[int],
        *,
        answer_open: str,
        forced_text: ForcedText,
        settings: GenerationSettings,
        progress=None,
    ) -> list[SlotGeneration]:
        """One [`SlotGeneration`] per prompt (per row: pass a prompt several times for several votes)."""
        ...

    def fingerprint(self):
        """A value that changes when the weights may have changed (keys the judge's run cache)."""
        ...

    def release(self) -> None:
        """Free the engine's memory (a training stage needs it); the backend is unusable afterwards."""
        ...


def read_forced_slots(backend, prompts, results: list, label_ids, forced_text, force_answer: bool) -> None:
    """For the rows of ``results`` whose slot was not read during generation: append the forced answer prefix to the
    generated text and read the slot with one [`JudgeBackend.slot_logits`] call (in place; nothing when
    ``force_answer`` is off)."""
    forced = [j for j, r in enumerate(results) if r.slot_logits is None] if force_answer else []
    if forced:
        encode = lambda t: backend.tokenizer.encode(t, add_special_tokens=False)  # noqa: E731
        reads = [list(prompts[j]) + encode(forced_text(results[j].text)) for j in forced]
        for j, logits in zip(forced, backend.slot_logits(reads, label_ids)):
            results[j].slot_logits = logits


def proof_sampling_params(
    backend, count: int, n: int, *, max_new_tokens: int, temperature: float, top_p: float, seed: int
) -> list[dict]:
    """The sampling parameters of the prover's `sample` for `count` prompts, `n` completions each: one dict per
    prompt, seeded `seed + k` when the backend gives requests their own seeds (vLLM engines, in process or served)."""
    out = []
    for k in range(count):
        params = dict(max_tokens=max_new_tokens, n=n, temperature=temperature, top_p=top_p, skip_special_tokens=True)
        if backend.seeded_requests:
            params["seed"] = seed + k
        out.append(params)
    return out


def strip_padding(ids: list[int], pad_id: int, eos_ids) -> list[int]:
    """Drop trailing padding and one trailing EOS (`eos_ids`: an id, a collection of ids, or `None`)."""
    eos = set() if eos_ids is None else {eos_ids} if isinstance(eos_ids, int) else set(eos_ids)
    end = len(ids)
    while end > 0 and ids[end - 1] == pad_id:
        end -= 1
    if end > 0 and ids[end - 1] in eos:
        end -= 1
    return ids[:end]


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def weights_fingerprint(model) -> tuple:
    """Changes whenever a parameter is updated in place (optimizer steps, `load_state_dict` bump its version
    counter) or the active adapter changes."""
    parameters = model.parameters() if callable(getattr(model, "parameters", None)) else ()
    return (id(model), sum(p._version for p in parameters), str(getattr(model, "active_adapter", None)))
