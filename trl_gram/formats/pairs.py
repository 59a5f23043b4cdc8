"""Training pairs given by path (or, when the user names one, a Hub dataset), read through the same readers as
``trl-gram eval`` ([`~trl_gram.formats.readers`]).

[`load_pairs`] returns a ``datasets.Dataset`` in one of the layouts the trainer accepts (``prompt``/``chosen``/
``rejected``, optionally ``subset`` and a rationale column) and a small info dict (``format``, ``rows``, ``ties``).
Recognised files (by content, any of ``.json``, ``.jsonl``, ``.json.gz``, ``.jsonl.gz``, ``.parquet``, ``.csv``):

* hh-rlhf transcripts (``{"chosen", "rejected"}`` whole ``"\\n\\nHuman: …\\n\\nAssistant: …"`` strings): the prompt
  is the shared prefix up to the last ``"\\n\\nAssistant:"``, turned into a conversation; the responses follow it.
* PandaLM (``instruction``, ``input``, ``response1``, ``response2``, ``annotator1..3``): majority label; ties (label 0
  or no majority) dropped and counted, or kept with ``ties="keep"`` (then in a ``tie`` column, for reporting).
* JudgeBench (``prompt``, ``chosen``, ``rejected``, ``source``): ``subset`` = knowledge/reasoning/math/coding.
* Every other benchmark layout of [`~trl_gram.formats.readers.FORMATS`] (RewardBench 1/2, RM-Bench, LLMBar,
  MT-Bench): one row per comparison, the better response as ``chosen``.
* Anything already in a trainer layout (TRL preference format, ``response_a``/``response_b``/``label``, rationale
  columns) is kept as it is.

A folder saved with ``Dataset.save_to_disk`` is loaded with ``load_from_disk``.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, load_dataset, load_from_disk
from transformers.utils import logging

from .files import read_eval_file
from .readers import AmbiguousFormat, detect_format
from .records import DataError, read_records

logger = logging.get_logger(__name__)


def _rows(path: str, ties: str) -> tuple[list[dict], dict]:
    """Trainer rows of a file: a trainer layout as it is, a benchmark layout one row per comparison."""
    records = read_records(path)
    if not records:
        return [], {"format": "empty", "ties": 0}
    try:
        fmt = detect_format(records)
    except AmbiguousFormat as e:
        raise DataError(path, [(None, None, str(e))]) from None
    if fmt == "preference":
        return records, {"format": fmt, "ties": 0}
    data = read_eval_file(path, fmt, ties=ties, records=records, numeric_responses=True)
    rows = []
    for c in data.comparisons:
        chosen, rejected = (c.second, c.first) if c.label == 1 else (c.first, c.second)
        row = {"prompt": c.question, "chosen": chosen, "rejected": rejected}
        if c.subset is not None:
            row["subset"] = c.subset
        if ties == "keep" and fmt == "pandalm":
            row["tie"] = c.label is None
        rows.append(row)
    kept_ties = sum(c.label is None for c in data.comparisons)
    info = {"format": fmt, "ties": kept_ties + len(data.skipped.get("tie", []))}
    others = {k: len(v) for k, v in data.skipped.items() if k != "tie"}
    if others:
        logger.warning(f"{path}: rows left out: {others}.")
        info["skipped"] = others
    return rows, info


def load_pairs(
    path: str, split: str = "train", ties: str = "drop", limit: int | None = None, select: str | None = None
) -> tuple[Dataset, dict]:
    """Load pairwise data from a file, a ``save_to_disk`` folder, or (named explicitly) a Hub dataset.

    Args:
        path (`str`):
            File path, folder, or Hub dataset id.
        split (`str`, *optional*, defaults to `"train"`):
            Split of a Hub dataset or of a saved `DatasetDict`.
        ties (`str`, *optional*, defaults to `"drop"`):
            `"drop"` or `"keep"` rows without a majority preference (PandaLM).
        limit (`int`, *optional*):
            Keep at most this many rows (after `select`).
        select (`str`, *optional*):
            A Python-style slice `"start:stop"` of rows to keep (e.g. `"0:500"`), to carve disjoint
            train/unlabeled/held-out slices out of one file.

    Returns:
        `tuple[Dataset, dict]`: the rows in a trainer layout, and `{"format", "rows", "ties"}` (plus `"skipped"`: rows
        a benchmark reader left out, by reason).
    """
    if ties not in ("drop", "keep"):
        raise ValueError(f"`ties` must be 'drop' or 'keep', got {ties!r}.")
    p = Path(path)
    if p.is_dir():
        loaded = load_from_disk(str(p))
        ds = loaded[split] if hasattr(loaded, "keys") else loaded
        info = {"format": "saved", "ties": 0}
    elif p.is_file():
        rows, info = _rows(str(p), ties)
        ds = Dataset.from_list(rows) if rows else Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []})
    else:
        if path.startswith((".", "/")) or path.endswith((".json", ".jsonl", ".gz", ".parquet", ".csv")):
            raise ValueError(f"Data file {path!r} does not exist.")
        ds = load_dataset(path, split=split)
        info = {"format": "hub", "ties": 0}
    if select:
        try:
            start, stop = (int(x) if x.strip() else None for x in select.split(":"))
        except ValueError:
            raise ValueError(f"`select` must look like 'start:stop', got {select!r}.") from None
        ds = ds.select(range(*slice(start, stop).indices(len(ds))))
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    info["rows"] = len(ds)
    if info.get("ties"):
        logger.info(f"{path}: {info['ties']} tie(s) {'dropped' if ties == 'drop' else 'kept'}.")
    return ds, info
