"""The policy task and its oracle: the ``compare`` control of the reproduction turned into a question a policy answers.

The policy reads ``Which number is larger, 37 or 48? Reply with one sentence: "<number> is larger than <number>."``
(as a chat user turn) and should write ``48 is larger than 37.``. The oracle ([`oracle_correct`]) accepts an answer
when its first ``x is larger than y`` statement names the two numbers of the question with the larger one first;
anything else (the smaller one first, other numbers, no such statement) is wrong. The oracle builds the judge's labeled
pairs ([`judge_pairs`]) and measures the policy ([`oracle_accuracy`]); at RL time only the judge gives rewards.
"""

from __future__ import annotations

import random
import re

from datasets import Dataset

from research.reproduction.harness.synthetic import is_correct

INSTRUCTION = 'Reply with one sentence: "<number> is larger than <number>."'
_QUESTION = re.compile(r"larger, (\d+) or (\d+)\?")
_STATEMENT = re.compile(r"(-?\d+) is larger than (-?\d+)")


def question(a: int, b: int) -> str:
    """The text of the question about ``a`` and ``b`` (the user turn the policy reads)."""
    return f"Which number is larger, {a} or {b}? {INSTRUCTION}"


def question_numbers(text: str) -> tuple[int, int]:
    """The two numbers a question asks about (raises a `ValueError` naming the text when it is not a question)."""
    m = _QUESTION.search(text)
    if m is None:
        raise ValueError(f"Not a comparison question: {text!r:.120}.")
    return int(m.group(1)), int(m.group(2))


def prompt_text(prompt) -> str:
    """The question of a prompt given as text or as chat messages (the last user turn)."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    if not users:
        raise ValueError(f"Prompt has no user turn: {prompt!r:.120}.")
    return users[-1]


def completion_text(completion) -> str:
    """A completion given as text or as chat messages (TRL's conversational completions)."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion)


def oracle_correct(prompt, completion) -> bool:
    """Whether ``completion`` answers ``prompt`` right: its first ``x is larger than y`` statement is true
    ([`~research.reproduction.harness.synthetic.is_correct`]) and names exactly the question's two numbers."""
    a, b = question_numbers(prompt_text(prompt))
    text = completion_text(completion)
    m = _STATEMENT.search(text)
    if m is None:
        return False
    x, y = int(m.group(1)), int(m.group(2))
    return {x, y} == {a, b} and bool(is_correct(m.group(0)))


def answer_kind(prompt, completion) -> str:
    """``"right"``, ``"wrong"`` (an ``x is larger than y`` statement that the oracle rejects: the smaller number first,
    or other numbers) or ``"off_format"`` (no such statement): where a policy's errors are."""
    if oracle_correct(prompt, completion):
        return "right"
    return "wrong" if _STATEMENT.search(completion_text(completion)) else "off_format"


def copies_question_order(prompt, completion) -> bool:
    """Whether the first ``x is larger than y`` statement names the question's numbers in the order asked (``Which
    number is larger, 37 or 48?`` -> ``37 is larger than 48.``): a policy that always does this is right exactly when
    the first number is the larger one, without comparing anything."""
    m = _STATEMENT.search(completion_text(completion))
    return m is not None and (int(m.group(1)), int(m.group(2))) == question_numbers(prompt_text(prompt))


def oracle_reward(prompts, completions, **kwargs) -> list[float]:
    """The oracle as a TRL reward function (the upper-bound arm): 1.0 for a right answer, 0.0 otherwise."""
    return [float(oracle_correct(p, c)) for p, c in zip(prompts, completions)]


class RandomReward:
    """A reward with no signal: seeded uniform draws in [0, 1), one per completion (the null control)."""

    __name__ = "random"

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return [self.rng.random() for _ in completions]


def number_pairs(n: int, seed: int, digits: int = 2, exclude: set | None = None) -> list[tuple[int, int]]:
    """``n`` distinct unordered pairs of different ``digits``-digit numbers (in a random order), none in ``exclude``."""
    if n < 0:
        raise ValueError(f"`n` must be >= 0, got {n}.")
    if not 1 <= digits <= 4:
        raise ValueError(f"`digits` must be in 1..4, got {digits}.")
    lo, hi = (10 ** (digits - 1) if digits > 1 else 0), 10**digits - 1
    available = (hi - lo + 1) * (hi - lo) // 2 - len(exclude or ())
    if n > available:
        raise ValueError(f"Only {available} {digits}-digit pairs left for n={n}: raise `digits`.")
    rng = random.Random(seed)
    seen = set(exclude or ())
    out = []
    while len(out) < n:
        a, b = rng.sample(range(lo, hi + 1), 2)
        key = frozenset((a, b))
        if key not in seen:
            seen.add(key)
            out.append((a, b))
    return out


def make_splits(sizes: dict[str, int], seed: int, digits: int = 2) -> dict[str, list[tuple[int, int]]]:
    """Disjoint pair lists for each named split (e.g. ``judge_train``, ``judge_test``, ``rl``, ``eval``): the same
    for every arm and every seed of a run, so arms differ only in their reward."""
    out, used = {}, set()
    for i, (name, n) in enumerate(sizes.items()):
        pairs = number_pairs(n, seed=seed * 1000 + i, digits=digits, exclude=used)
        used |= {frozenset(p) for p in pairs}
        out[name] = pairs
    return out


def prompt_dataset(pairs: list[tuple[int, int]]) -> Dataset:
    """A conversational prompt dataset (one user turn per question) for GRPO and PPO."""
    return Dataset.from_dict({"prompt": [[{"role": "user", "content": question(a, b)}] for a, b in pairs]})


def right_answer(a: int, b: int) -> str:
    return f"{max(a, b)} is larger than {min(a, b)}."


def judge_pairs(pairs: list[tuple[int, int]], samples: list[str] | None = None, swapped_every: int = 2) -> Dataset:
    """Labeled ``prompt``/``chosen``/``rejected`` rows for the judge, in the policy's style. ``chosen`` is the right
    answer. ``rejected`` is, on every ``swapped_every``-th row, the swapped answer (``37 is larger than 48.``: the
    right form, the wrong order), and on the other rows the policy's own sample for that question when the oracle says
    it is wrong (so the judge sees the policy's real failures: rambling, other formats, wrong numbers), else the
    swapped answer too. ``samples`` (one per pair) are the base policy's sampled answers; without them every rejected
    answer is the swapped one. ``kind`` says which."""
    if samples is not None and len(samples) != len(pairs):
        raise ValueError(f"`samples` has {len(samples)} items for {len(pairs)} pairs; pass one per pair.")
    if swapped_every < 1:
        raise ValueError(f"`swapped_every` must be >= 1, got {swapped_every}.")
    rows = []
    for i, (a, b) in enumerate(pairs):
        q = question(a, b)
        sample = None if samples is None or i % swapped_every == swapped_every - 1 else samples[i].strip()
        if sample and not oracle_correct(q, sample):
            rejected, kind = sample, "policy_wrong"
        else:
            rejected, kind = f"{min(a, b)} is larger than {max(a, b)}.", "swapped"
        rows.append({"prompt": q, "chosen": right_answer(a, b), "rejected": rejected, "kind": kind})
    return Dataset.from_list(rows)


def oracle_accuracy(prompts, completions) -> float:
    """The share of ``completions`` the oracle accepts."""
    if not completions:
        raise ValueError("No completions to score.")
    return sum(oracle_correct(p, c) for p, c in zip(prompts, completions)) / len(completions)
