"""Synthetic control tasks whose rule is known exactly: right vs wrong answers to generated questions.

* ``arithmetic``: ``"What is 37 + 48?"``; the better response states the true result (``"37 + 48 = 85."``), the worse
  one a near miss (off by 1, 2 or 10, so the two responses share most tokens and only the rule separates them).
* ``compare``: ``"Which number is larger, 37 or 48?"``; the better response names the larger number
  (``"48 is larger than 37."``), the worse one the smaller, with the same tokens in the other order. A model that
  cannot do two-digit sums (SmolLM2-135M solves about 12 % of them, ``research/reproduction/analysis/arithmetic_knowledge.py``) can still
  compare two numbers.
* ``smaller``: the mirror task, ``"Which number is smaller, 37 or 48?"``; the better response is ``"37 is smaller
  than 48."``. It needs the same skill as ``compare`` with the opposite preference at the surface (the better
  response now names the smaller number first): the second domain of the few-shot adaptation control.

The vocabulary is digits, a few symbols and a handful of words, so even a tiny tokenizer encodes it compactly, and the
rule is exactly checkable: [`is_correct`] is the oracle used to score rationale-free pseudo-labels in tests.
"""

from __future__ import annotations

import random
import re

from datasets import Dataset

from trl_gram.training.judge_examples import render_pairs, validate_pairs

OPS = ("+", "-")
RULES = ("arithmetic", "compare", "smaller")
_PAIR = re.compile(r"(-?\d+)\s*([+-])\s*(-?\d+)\s*=\s*(-?\d+)")
_RELATION = re.compile(r"(-?\d+) is (larger|smaller) than (-?\d+)")


def _number_range(n: int, digits: int) -> tuple[int, int]:
    """The smallest and largest ``digits``-digit number, after checking a generator's ``n`` and ``digits``."""
    if n < 0:
        raise ValueError(f"`n` must be >= 0, got {n}.")
    if not 1 <= digits <= 6:
        raise ValueError(f"`digits` must be in 1..6, got {digits}.")
    return (10 ** (digits - 1) if digits > 1 else 0), 10**digits - 1


def _problem(rng: random.Random, lo: int, hi: int, ops: tuple[str, ...]) -> tuple[int, str, int, int]:
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    op = rng.choice(ops)
    if op == "-" and b > a:
        a, b = b, a
    return a, op, b, a + b if op == "+" else a - b


def make_arithmetic_pairs(n: int, seed: int = 0, digits: int = 2, ops: tuple[str, ...] = OPS) -> Dataset:
    """``n`` preference rows (``prompt``/``chosen``/``rejected``/``pair_id``) of the arithmetic task.

    Args:
        n: Number of pairs.
        seed: Seed of the problems and of the wrong answers.
        digits: Digits per operand (1 to 6).
        ops: Operators to draw from (``"+"``, ``"-"``).
    """
    lo, hi = _number_range(n, digits)
    bad = [o for o in ops if o not in OPS]
    if bad or not ops:
        raise ValueError(f"`ops` must be a non-empty subset of {OPS}, got {ops!r}.")
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, op, b, result = _problem(rng, lo, hi, tuple(ops))
        wrong = result + rng.choice((-10, -2, -1, 1, 2, 10))
        rows.append(
            {
                "prompt": f"What is {a} {op} {b}?",
                "chosen": f"{a} {op} {b} = {result}.",
                "rejected": f"{a} {op} {b} = {wrong}.",
                "pair_id": i,
            }
        )
    return Dataset.from_list(rows)


def make_comparison_pairs(n: int, seed: int = 0, digits: int = 2, relation: str = "larger") -> Dataset:
    """``n`` preference rows of the ``compare`` task (``relation="larger"``: which of two different ``digits``-digit
    numbers is larger) or of the ``smaller`` task (``relation="smaller"``)."""
    if relation not in ("larger", "smaller"):
        raise ValueError(f"`relation` must be 'larger' or 'smaller', got {relation!r}.")
    lo, hi = _number_range(n, digits)
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.sample(range(lo, hi + 1), 2)
        right, wrong = (max(a, b), min(a, b)) if relation == "larger" else (min(a, b), max(a, b))
        rows.append(
            {
                "prompt": f"Which number is {relation}, {a} or {b}?",
                "chosen": f"{right} is {relation} than {wrong}.",
                "rejected": f"{wrong} is {relation} than {right}.",
                "pair_id": i,
            }
        )
    return Dataset.from_list(rows)


def make_synthetic_pairs(n: int, seed: int = 0, digits: int = 2, rule: str = "arithmetic") -> Dataset:
    """``n`` preference rows of the control task ``rule`` (one of [`RULES`])."""
    if rule == "arithmetic":
        return make_arithmetic_pairs(n, seed=seed, digits=digits)
    if rule in ("compare", "smaller"):
        return make_comparison_pairs(n, seed=seed, digits=digits, relation="larger" if rule == "compare" else rule)
    raise ValueError(f"`rule` must be one of {RULES}, got {rule!r}.")


ORACLE_STYLES = ("per_response", "fact")


def oracle_rationale(first: str, second: str, label: str, style: str = "per_response") -> str:
    """A correct rationale for a control pair shown as ``first`` (Response A) and ``second`` (Response B), ``label``
    naming the true one: a rule-checked stand-in for the rationales a strong model writes in the paper.

    ``"per_response"`` checks each response in the order shown, then concludes (``Response A says: ... This is
    false. Response B says: ... This is true. Response B is better.``); ``"fact"`` states the true fact, then names
    the response that says it.
    """
    if label not in ("A", "B"):
        raise ValueError(f"`label` must be 'A' or 'B', got {label!r}.")
    if style == "fact":
        true = first if label == "A" else second
        return f"The true statement is: {true.strip()} Response {label} says it. Response {label} is better."
    if style == "per_response":
        verdict = ("true", "false") if label == "A" else ("false", "true")
        return (
            f"Response A says: {first.strip()} This is {verdict[0]}. Response B says: {second.strip()} This is "
            f"{verdict[1]}. Response {label} is better."
        )
    raise ValueError(f"`style` must be one of {ORACLE_STYLES}, got {style!r}.")


def with_oracle_rationales(ds: Dataset, style: str = "per_response", seed: int = 0) -> Dataset:
    """``ds`` (``prompt``/``chosen``/``rejected`` rows of a control task) as ``prompt``/``response_a``/``response_b``/
    ``label``/``rationale`` rows in a seeded order with exactly half labeled ``B``, each rationale written for the
    order it is in. Train on them with ``swap="none"``, so that no order is changed afterwards: a letter swap would
    keep the per-response checks in the old order."""
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in ds.column_names]
    if missing:
        raise ValueError(f"Oracle rationales need `prompt`/`chosen`/`rejected` columns; the dataset lacks {missing}.")
    pairs, _ = validate_pairs(ds, name="oracle")
    rows = []
    for ex in render_pairs(pairs, "random", seed):
        label = "AB"[ex["label"]]
        rows.append(
            {
                "prompt": ex["question"],
                "response_a": ex["first"],
                "response_b": ex["second"],
                "label": label,
                "rationale": oracle_rationale(ex["first"], ex["second"], label, style),
            }
        )
    return Dataset.from_list(rows)


def is_correct(response: str) -> bool | None:
    """Whether a response states the truth: ``"a op b = c"`` with the true result, ``"x is larger than y"`` with
    x > y, or ``"x is smaller than y"`` with x < y (``None`` when it holds none of these forms)."""
    m = _RELATION.search(response)
    if m is not None:
        x, y = int(m.group(1)), int(m.group(3))
        return x > y if m.group(2) == "larger" else x < y
    m = _PAIR.search(response)
    if m is None:
        return None
    a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    return (a + b if op == "+" else a - b) == c


def synthetic_pool(size: int, seed: int = 0, digits: int = 2, rule: str = "arithmetic") -> Dataset:
    """A pool of unique control-task pairs to cut with [`~research.reproduction.harness.splits.make_splits`] (the pool is
    the same for every run seed; the splits choose from it). Duplicated questions are dropped."""
    ds = make_synthetic_pairs(int(size * 1.3) + 16, seed=seed, digits=digits, rule=rule)
    seen, keep = set(), []
    for i, q in enumerate(ds["prompt"]):
        if q not in seen:
            seen.add(q)
            keep.append(i)
    if len(keep) < size:
        raise ValueError(
            f"Only {len(keep)} unique {digits}-digit {rule} problems for a pool of {size}: raise `digits`."
        )
    ds = ds.select(keep[:size]).remove_columns("pair_id")
    return ds
