"""Batches that hold both orders of each pair, for the ``"pairwise"`` label loss.

[`PairedOrderSampler`] shuffles pairs (not examples) and yields each pair's two examples next to each other, so a
batch of even size never splits a pair; [`PairOrderCollator`] carries each example's ``pair_order`` code through the
collator of the trainer, for [`~trl_gram.training.losses.pairwise_label_loss`].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def rows_by_pair(pair_order: Sequence[int], strict: bool = True) -> dict[int, list[int | None]]:
    """For each pair, the positions of its two orders in ``pair_order`` (codes ``2 * pair + swapped``):
    ``{pair: [given_row, swapped_row]}``, ``None`` where an order is absent. A repeated order is a ``ValueError``
    when ``strict``, else its last position is kept."""
    rows: dict[int, list[int | None]] = {}
    for index, code in enumerate(pair_order):
        pair, swapped = divmod(int(code), 2)
        slot = rows.setdefault(pair, [None, None])
        if strict and slot[swapped] is not None:
            raise ValueError(f"Example {index} repeats order {swapped} of pair {pair}.")
        slot[swapped] = index
    return rows


class PairedOrderSampler(Sampler[int]):
    """Indices of a dataset of paired examples: pairs in a random order (torch's global generator, as the
    `Trainer`'s own samplers use, so a resumed run restores it), each pair's given order before its swapped one.

    Args:
        pair_order: ``2 * pair + swapped`` of each example; every pair must have both orders.
        group_size: With ``lengths``, pairs are sorted by length (longest first) within random groups of
            ``50 * group_size`` examples, as `train_sampling_strategy="group_by_length"` does for examples: batches of
            similar length, little padding.
        lengths: Token count of each example (optional).
        shuffle: ``False`` keeps the pairs in dataset order (`train_sampling_strategy="sequential"`).
    """

    def __init__(
        self,
        pair_order: Sequence[int],
        group_size: int = 1,
        lengths: Sequence[int] | None = None,
        shuffle: bool = True,
    ):
        rows = rows_by_pair(pair_order)
        missing = [pair for pair, slot in rows.items() if None in slot]
        if missing:
            raise ValueError(f"{len(missing)} pair(s) lack one of their two orders (first: pair {missing[0]}).")
        self.pairs = list(rows.values())
        self.lengths = None
        if lengths is not None:
            self.lengths = [max(lengths[a], lengths[b]) for a, b in self.pairs]
        self.group_pairs = max(1, 50 * group_size // 2)
        self.shuffle = shuffle

    def __len__(self) -> int:
        return 2 * len(self.pairs)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(len(self.pairs)).tolist() if self.shuffle else list(range(len(self.pairs)))
        if self.lengths is not None:
            groups = [order[i : i + self.group_pairs] for i in range(0, len(order), self.group_pairs)]
            order = [p for group in groups for p in sorted(group, key=lambda p: -self.lengths[p])]
        for p in order:
            yield from self.pairs[p]


class PairOrderCollator:
    """Wraps a collator: drops ``pair_order`` from the examples before it, and adds it to the batch as a tensor."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples: list[dict]) -> dict:
        if "pair_order" not in examples[0]:
            return self.collator(examples)
        codes = torch.tensor([int(ex["pair_order"]) for ex in examples])
        batch = self.collator([{k: v for k, v in ex.items() if k != "pair_order"} for ex in examples])
        batch["pair_order"] = codes
        return batch
