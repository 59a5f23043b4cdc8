"""Benchmark files for ``trl-gram eval`` and the training loaders: [`read_eval_file`] reads a whole file
([`~trl_gram.formats.records.read_records`]), detects its format and validates every row with that format's reader
([`~trl_gram.formats.readers`]) before any model is loaded.

Each row becomes one or more [`Comparison`]s (RewardBench 2 and RM-Bench rows hold several responses). A row a reader
cannot use is either a user mistake, reported as a [`DataError`] naming the file, row (counted from 0) and column and
what was expected, or a row the benchmark itself leaves out (ties, identical responses), skipped and counted by reason
with its row number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .readers import FORMATS, READERS, AmbiguousFormat, Comparison, _Bad, _Skip, detect_format, rm_bench_domain
from .records import DataError, read_records


@dataclass
class EvalData:
    """A validated benchmark file: its comparisons, the per-row facts its aggregate needs, and the skipped rows."""

    path: str
    format: str
    rows: int
    comparisons: list[Comparison] = field(default_factory=list)
    row_info: dict[int, dict] = field(default_factory=dict)
    skipped: dict[str, list[int]] = field(default_factory=dict)


_NUMBER = re.compile(r"\s*[-+]?\d+(\.\d+)?\s*")


def _numbers_only(path, records, comparisons):
    """A column whose every response is a number holds labels or scores, not responses (a common CSV mix-up)."""
    if len(comparisons) < 2 or not all(_NUMBER.fullmatch(c.first) for c in comparisons):
        return
    col = next((k for k in ("chosen", "output_1", "response_A", "response1", "response_a") if k in records[0]), None)
    raise DataError(path, [(0, col, f"every row holds a number ({comparisons[0].first!r}); expected response text")])


def read_eval_file(
    path: str,
    format: str = "auto",
    *,
    ties: str = "drop",
    on_invalid: str = "error",
    select: str | None = None,
    max_samples: int | None = None,
    label_words: tuple[str, str] = ("A", "B"),
    split: str | None = None,
    records: list[dict] | None = None,
    numeric_responses: bool = False,
) -> EvalData:
    """Read and validate a whole benchmark file.

    Args:
        path (`str`): The file.
        format (`str`, *optional*, defaults to ``"auto"``): One of [`FORMATS`], or ``"auto"`` to detect it.
        ties (`str`, *optional*, defaults to ``"drop"``): PandaLM ties: ``"drop"`` (skipped, counted) or ``"keep"``.
        on_invalid (`str`, *optional*, defaults to ``"error"``): ``"error"``: any invalid row raises a [`DataError`]
            listing every problem; ``"skip"``: invalid rows are skipped and counted by reason (``invalid:<column>``).
        select (`str`, *optional*): Rows ``"start:stop"`` to keep (before validation).
        max_samples (`int`, *optional*): Keep at most this many rows.
        label_words (`tuple[str, str]`): The label words of a ``response_a``/``response_b``/``label`` file.
        split (`str`, *optional*): The split of a saved or Hub dataset with several.
        records (`list[dict]`, *optional*): The file's rows when the caller has already read them.
        numeric_responses (`bool`, *optional*, defaults to `False`): Accept a file whose every response is a number
            (by default a sign of a label or score column taken for responses, a common CSV mix-up).
    """
    if format != "auto" and format not in READERS:
        raise DataError(
            path, [(None, None, f"unknown --format {format!r}; expected auto or one of {sorted(READERS)}")]
        )
    records = read_records(path, split) if records is None else records
    start = 0
    if select:
        try:
            a, b = (int(x) if x.strip() else None for x in select.split(":"))
        except ValueError:
            raise DataError(path, [(None, None, f"--select must look like 'start:stop', got {select!r}")]) from None
        start = slice(a, b).indices(len(records))[0]
        records = records[a:b]
    if max_samples is not None:
        records = records[:max_samples]
    if not records:
        raise DataError(path, [(None, None, "no rows to evaluate")])
    try:
        fmt = detect_format(records) if format == "auto" else format
    except AmbiguousFormat as e:
        raise DataError(path, [(None, None, str(e))]) from None
    data = EvalData(path, fmt, len(records))
    ctx = {"ties": ties, "label_words": tuple(str(w) for w in label_words), "domain": rm_bench_domain(path)}
    problems, skipped = [], {}
    for k, rec in enumerate(records):
        row = start + k
        try:
            if not isinstance(rec, dict):
                raise _Bad(None, f"is a {type(rec).__name__}; expected an object with the {fmt} columns")
            comps, info = READERS[fmt](rec, row, ctx)
        except _Bad as e:
            if on_invalid == "error":
                problems.append((row, e.column, e.what + f" ({fmt} layout: {FORMATS[fmt][0]})" * (not problems)))
            else:
                skipped.setdefault(f"invalid:{e.column}", []).append(row)
            continue
        except _Skip as e:
            skipped.setdefault(e.reason, []).append(row)
            continue
        data.comparisons.extend(comps)
        data.row_info[row] = info
    if problems:
        raise DataError(path, problems)
    if not numeric_responses:
        _numbers_only(path, records, data.comparisons)
    data.skipped = skipped
    return data
