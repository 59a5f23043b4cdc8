"""A synthetic control task whose rule is known and learnable: arithmetic answers, right vs wrong.

Each pair asks ``"What is 37 + 48?"``; the better response states the true result (``"37 + 48 = 85."``), the worse
one a near miss (off by 1, 2 or 10, so the two responses share most tokens and only the rule separates them). The
vocabulary is digits, ``+``/``-``/``=`` and a handful of words, so even a tiny tokenizer encodes it compactly, and the
rule is exactly checkable: :func:`is_correct` is the oracle used to score rationale-free pseudo-labels in tests.
"""

from __future__ import annotations

import random
import re

from datasets import Dataset

OPS = ("+", "-")
_PAIR = re.compile(r"(-?\d+)\s*([+-])\s*(-?\d+)\s*=\s*(-?\d+)")


def _problem(rng: random.Random, digits: int, ops: tuple[str, ...]) -> tuple[int, str, int, int]:
    lo, hi = 10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1
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
    if n < 0:
        raise ValueError(f"`n` must be >= 0, got {n}.")
    if not 1 <= digits <= 6:
        raise ValueError(f"`digits` must be in 1..6, got {digits}.")
    bad = [o for o in ops if o not in OPS]
    if bad or not ops:
        raise ValueError(f"`ops` must be a non-empty subset of {OPS}, got {ops!r}.")
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, op, b, result = _problem(rng, digits, tuple(ops))
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


def is_correct(response: str) -> bool | None:
    """Whether a response ``"a op b = c"`` states the true result (``None`` when it has no such equation)."""
    m = _PAIR.search(response)
    if m is None:
        return None
    a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    return (a + b if op == "+" else a - b) == c


def synthetic_pool(size: int, seed: int = 0, digits: int = 2) -> Dataset:
    """A pool of unique arithmetic pairs to cut with :func:`~trl_gram.experiments.splits.make_splits` (the pool is the
    same for every run seed; the splits choose from it). Duplicated questions are dropped."""
    ds = make_arithmetic_pairs(int(size * 1.3) + 16, seed=seed, digits=digits)
    seen, keep = set(), []
    for i, q in enumerate(ds["prompt"]):
        if q not in seen:
            seen.add(q)
            keep.append(i)
    if len(keep) < size:
        raise ValueError(f"Only {len(keep)} unique {digits}-digit problems for a pool of {size}: raise `digits`.")
    ds = ds.select(keep[:size]).remove_columns("pair_id")
    return ds
