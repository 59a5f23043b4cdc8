"""Token-budget batching, left padding and prompt truncation for the judge engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def token_budget_batches(lengths: Sequence[int], budget: int, extra: int = 0, max_rows: int | None = None):
    """Group item indices into batches, longest first, so that ``rows × (longest + extra) ≤ budget`` per batch.

    ``extra`` is the number of tokens each row will grow by (``max_new_tokens`` when generating), so the bound holds
    for the KV cache at the end of generation too. A single item larger than the budget gets a batch of its own.
    Returns a list of index lists; every index appears exactly once.
    """
    if budget <= 0:
        raise ValueError(f"`token_budget` must be positive, got {budget}.")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current, width = [], [], 0
    for i in order:
        new_width = max(width, lengths[i] + extra)
        too_many = max_rows is not None and len(current) >= max_rows
        if current and (new_width * (len(current) + 1) > budget or too_many):
            batches.append(current)
            current, new_width = [], lengths[i] + extra
        current.append(i)
        width = new_width
    if current:
        batches.append(current)
    return batches


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device=None):
    """Left-pad token id lists into ``input_ids``, ``attention_mask`` and matching ``position_ids``."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    if device is not None:
        ids, mask, position_ids = ids.to(device), mask.to(device), position_ids.to(device)
    return ids, mask, position_ids


def fit_lengths(lengths: Sequence[int], room: int) -> list[int]:
    """Caps each length at the largest common cap ``c`` with ``sum(min(length, c)) ≤ room`` (water-filling: the
    longest fields are cut first and ends equal)."""
    lengths = list(lengths)
    if sum(lengths) <= room:
        return lengths
    lo, hi = 0, max(lengths)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(n, mid) for n in lengths) <= room:
            lo = mid
        else:
            hi = mid - 1
    return [min(n, lo) for n in lengths]


def truncate_fields(
    question: str,
    first: str,
    second: str,
    count: Callable[[str, str, str], int],
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    max_length: int,
    min_response_tokens: int = 32,
) -> tuple[str, str, str, bool]:
    """Shorten a pair so its rendered prompt fits ``max_length`` tokens.

    Only the inside of the fields is cut: the two responses first (their heads are kept, the longer one cut first,
    the same caps for both orders), then the question (its tail is kept: the latest turn matters most). The
    template's instructions, delimiters and answer slot are never touched. Returns the fields and whether anything
    was cut. ``count`` gives the rendered prompt length for three field strings.
    """
    total = count(question, first, second)
    if total <= max_length:
        return question, first, second, False
    q_ids, a_ids, b_ids = encode(question), encode(first), encode(second)
    fixed = total - len(q_ids) - len(a_ids) - len(b_ids)
    for _ in range(4):  # re-tokenization can shift a few tokens; tighten until it fits
        room = max_length - fixed
        response_room = room - len(q_ids)
        # Keep at least `min_response_tokens` of each response; past that, the question gives way.
        response_room = max(response_room, min(len(a_ids), min_response_tokens) + min(len(b_ids), min_response_tokens))
        a_len, b_len = fit_lengths([len(a_ids), len(b_ids)], max(response_room, 0))
        q_len = max(min(len(q_ids), room - a_len - b_len), 0)
        q = decode(q_ids[len(q_ids) - q_len :]) if q_len < len(q_ids) else question
        a = decode(a_ids[:a_len]) if a_len < len(a_ids) else first
        b = decode(b_ids[:b_len]) if b_len < len(b_ids) else second
        total = count(q, a, b)
        if total <= max_length:
            return q, a, b, True
        fixed += total - max_length
    if fixed >= max_length:
        raise ValueError(
            f"`max_length`={max_length} is too small for the judge template itself ({fixed} tokens without any "
            "question or responses)."
        )
    return q, a, b, True
