"""Seeded, disjoint data splits for the reproduction experiment.

The hh-rlhf pool is cut into a **test** slice (drawn with ``test_seed``, the same for every seed of the experiment so
that every arm and every seed is scored on the same pairs), then, from what remains and with the run's ``seed``, a
**labeled** slice and ``rounds`` **unlabeled** slices (labels dropped, responses in a seeded random order). Pairs can
first be filtered by length (characters of question + both responses), so a small CPU judge reads short prompts.
Out-of-domain sets (PandaLM without ties, JudgeBench) are sampled the same way.

Every split carries a stable ``pair_id`` (index in the source file) and a fingerprint (hash of its ids), written to
``splits.json`` so that a report can show that all arms read the same test slice.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field

from datasets import Dataset

from trl_gram.formats import load_pairs
from trl_gram.templates import question_to_text, response_to_text
from trl_gram.training.judge_examples import as_unlabeled


def pair_chars(row: dict) -> int:
    """Length of a preference row (question + both responses) in characters."""
    q = question_to_text(row["prompt"])
    return len(q) + len(response_to_text(row["chosen"])) + len(response_to_text(row["rejected"]))


def fingerprint(ids) -> str:
    """A short hash of an ordered list of pair ids."""
    return hashlib.sha256(json.dumps([int(i) for i in ids]).encode()).hexdigest()[:16]


def _eligible(ds: Dataset, max_chars: int | None, min_chars: int = 0) -> list[int]:
    keep = []
    for i, row in enumerate(ds):
        n = pair_chars(row)
        a, b = response_to_text(row["chosen"]).strip(), response_to_text(row["rejected"]).strip()
        if n >= min_chars and (max_chars is None or n <= max_chars) and a and b and a != b:
            keep.append(i)
    return keep


@dataclass
class Splits:
    """The slices of one seed. ``labeled`` and ``test`` are preference rows (``prompt``/``chosen``/``rejected`` and
    ``pair_id``); ``unlabeled`` holds one label-free dataset per self-training round."""

    labeled: Dataset
    unlabeled: list[Dataset]
    test: Dataset
    info: dict = field(default_factory=dict)

    def ids(self) -> dict[str, list[int]]:
        return {
            "labeled": list(self.labeled["pair_id"]),
            "test": list(self.test["pair_id"]),
            **{f"unlabeled_{r + 1}": list(u["pair_id"]) for r, u in enumerate(self.unlabeled)},
        }

    def unlabeled_pool(self) -> Dataset:
        """All rounds' unlabeled rows concatenated in round order (what ``GramSelfTrainer`` slices per round)."""
        rows = [row for u in self.unlabeled for row in u]
        return (
            Dataset.from_list(rows) if rows else Dataset.from_dict({"prompt": [], "response_a": [], "response_b": []})
        )


def make_splits(
    dataset: Dataset,
    *,
    labeled: int,
    unlabeled_per_round: int,
    rounds: int,
    test: int,
    seed: int,
    test_seed: int = 1234,
    max_chars: int | None = None,
    min_chars: int = 0,
) -> Splits:
    """Cut ``dataset`` (preference rows) into disjoint test / labeled / unlabeled slices.

    The test slice depends only on ``test_seed`` (and the length filter); the others on ``seed``. Raises a
    ``ValueError`` naming the sizes when the (filtered) pool is too small.
    """
    for name, value in (("labeled", labeled), ("unlabeled_per_round", unlabeled_per_round), ("test", test)):
        if value < 0:
            raise ValueError(f"`{name}` must be >= 0, got {value}.")
    if rounds < 0:
        raise ValueError(f"`rounds` must be >= 0, got {rounds}.")
    eligible = _eligible(dataset, max_chars, min_chars)
    need = test + labeled + rounds * unlabeled_per_round
    if need > len(eligible):
        raise ValueError(
            f"The pool has {len(eligible)} pairs within the length filter (max_chars={max_chars}) but the splits need "
            f"{need} (test={test}, labeled={labeled}, unlabeled={rounds}x{unlabeled_per_round}): lower the sizes or "
            "raise `max_chars`."
        )
    order = list(eligible)
    random.Random(test_seed).shuffle(order)
    test_ids = sorted(order[:test])
    rest = order[test:]
    random.Random(seed).shuffle(rest)
    labeled_ids = rest[:labeled]
    pos = labeled
    unlabeled_ids = []
    for _ in range(rounds):
        unlabeled_ids.append(rest[pos : pos + unlabeled_per_round])
        pos += unlabeled_per_round

    def take(ids):
        return dataset.select(ids).add_column("pair_id", list(ids))

    unl = []
    for r, ids in enumerate(unlabeled_ids):
        u = as_unlabeled(take(ids).remove_columns("pair_id"), seed=seed * 1000 + r)
        unl.append(u.add_column("pair_id", list(ids)))
    out = Splits(labeled=take(labeled_ids), unlabeled=unl, test=take(test_ids))
    out.info = {
        "pool": len(dataset),
        "eligible": len(eligible),
        "max_chars": max_chars,
        "seed": seed,
        "test_seed": test_seed,
        "sizes": {"test": len(test_ids), "labeled": len(labeled_ids), "unlabeled": [len(u) for u in unlabeled_ids]},
        "test_fingerprint": fingerprint(test_ids),
        "labeled_fingerprint": fingerprint(labeled_ids),
    }
    return out


def sample_eval(dataset: Dataset, n: int | None, seed: int = 1234, max_chars: int | None = None) -> Dataset:
    """A seeded sample of at most ``n`` rows of an evaluation set (length-filtered first), with ``pair_id``."""
    eligible = _eligible(dataset, max_chars)
    rng = random.Random(seed)
    rng.shuffle(eligible)
    ids = sorted(eligible if n is None else eligible[:n])
    return dataset.select(ids).add_column("pair_id", ids)


def load_pool(path: str, **kwargs) -> Dataset:
    """Load a pair file with [`~trl_gram.formats.load_pairs`] (PandaLM ties dropped)."""
    ds, _ = load_pairs(path, ties="drop", **kwargs)
    return ds
