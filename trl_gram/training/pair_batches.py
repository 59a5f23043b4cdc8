"""Batches that hold both orders of each pair, for the ``"pairwise"`` label loss.

[`PairedOrderSampler`] shuffles pairs (not examples) and yields each pair's two examples next to each other, so a
batch never splits a pair; examples with a negative code (the reasoning examples beside paired direct ones) are single
units placed between the pairs. [`PairOrderCollator`] carries each example's ``pair_order`` code through the collator
of the trainer, for [`~trl_gram.training.losses.pairwise_label_loss`].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def rows_by_pair(pair_order: Sequence[int], strict: bool = True) -> dict[int, list[int | None]]:
    """For each pair, the positions of its two orders in ``pair_order`` (codes ``2 * pair + swapped``; a negative code
    marks an example outside any pair and is skipped): ``{pair: [given_row, swapped_row]}``, ``None`` where an order is
    absent. A repeated order is a ``ValueError`` when ``strict``, else its last position is kept."""
    rows: dict[int, list[int | None]] = {}
    for index, code in enumerate(pair_order):
        if int(code) < 0:
            continue
        pair, swapped = divmod(int(code), 2)
        slot = rows.setdefault(pair, [None, None])
        if strict and slot[swapped] is not None:
            raise ValueError(f"Example {index} repeats order {swapped} of pair {pair}.")
        slot[swapped] = index
    return rows


def complete_pairs(pair_order: Sequence[int], strict: bool = True) -> list[list[int]]:
    """``[given_row, swapped_row]`` of each pair of [`rows_by_pair`] whose two orders are both present."""
    return [rows for rows in rows_by_pair(pair_order, strict).values() if None not in rows]


class PairedOrderSampler(Sampler[int]):
    """Indices of a dataset of paired examples: units in a random order (torch's global generator, as the
    `Trainer`'s own samplers use, so a resumed run restores it). A unit is a pair, its given order before its swapped
    one, or a single example (negative code). Singles are moved forward so that no pair straddles a boundary between
    batches of ``batch_size`` examples (only at the very end, with no single left to fill a gap, can one).

    Args:
        pair_order: ``2 * pair + swapped`` of each example, or a negative code for an example outside any pair; every
            pair must have both orders.
        group_size: With ``lengths``, units are sorted by length (longest first) within random groups of about
            ``50 * group_size`` examples, as `train_sampling_strategy="group_by_length"` does for examples: batches of
            similar length, little padding.
        lengths: Token count of each example (optional).
        shuffle: ``False`` keeps the units in dataset order (`train_sampling_strategy="sequential"`).
        batch_size: Examples per batch; must be even. Only needed when there are single examples (without them,
            pairs of two never straddle an even boundary).
    """

    def __init__(
        self,
        pair_order: Sequence[int],
        group_size: int = 1,
        lengths: Sequence[int] | None = None,
        shuffle: bool = True,
        batch_size: int | None = None,
    ):
        rows = rows_by_pair(pair_order)
        missing = [pair for pair, slot in rows.items() if None in slot]
        if missing:
            raise ValueError(f"{len(missing)} pair(s) lack one of their two orders (first: pair {missing[0]}).")
        singles = [[i] for i, code in enumerate(pair_order) if int(code) < 0]
        if singles and (batch_size is None or batch_size % 2):
            raise ValueError(f"Single examples beside pairs need an even `batch_size`, got {batch_size}.")
        self.units = [*rows.values(), *singles]
        self.lengths = None
        if lengths is not None:
            self.lengths = [max(lengths[i] for i in unit) for unit in self.units]
        mean_unit = sum(len(u) for u in self.units) / max(len(self.units), 1)
        self.group_units = max(1, round(50 * group_size / max(mean_unit, 1)))
        self.shuffle, self.batch_size, self.n = shuffle, batch_size, len(pair_order)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(len(self.units)).tolist() if self.shuffle else list(range(len(self.units)))
        if self.lengths is not None:
            groups = [order[i : i + self.group_units] for i in range(0, len(order), self.group_units)]
            order = [u for group in groups for u in sorted(group, key=lambda u: -self.lengths[u])]
        units = [self.units[u] for u in order]
        if self.batch_size is not None:
            units = aligned(units, self.batch_size)
        for unit in units:
            yield from unit


def aligned(units: list[list[int]], batch_size: int) -> list[list[int]]:
    """``units`` (pairs and singles) reordered as little as possible so that no pair straddles a batch boundary: a
    pair that would start in the last place of a batch waits until a single has filled that place."""
    out: list[list[int]] = []
    waiting: list[list[int]] = []
    fill = 0  # examples in the current batch
    for unit in units:
        if len(unit) == 2 and fill == batch_size - 1:
            waiting.append(unit)
            continue
        out.append(unit)
        fill = (fill + len(unit)) % batch_size
        while waiting and fill != batch_size - 1:
            out.append(waiting.pop(0))
            fill = (fill + 2) % batch_size
    return out + waiting


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
