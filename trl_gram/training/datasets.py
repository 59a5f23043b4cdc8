"""Loaders for pairwise preference data given by path (or, when the user names one, a Hub dataset).

Every loader returns a ``datasets.Dataset`` in one of the layouts the trainer accepts (``prompt``/``chosen``/
``rejected``, optionally ``subset`` and a rationale column) and a small info dict (``format``, ``rows``, ``ties``).
Recognised files (by content, any of ``.json``, ``.jsonl``, ``.json.gz``, ``.jsonl.gz``, ``.parquet``, ``.csv``):

* hh-rlhf transcripts (``{"chosen", "rejected"}`` whole ``"\\n\\nHuman: …\\n\\nAssistant: …"`` strings): the prompt
  is the shared prefix up to the last ``"\\n\\nAssistant:"``, turned into a conversation; the responses follow it.
* PandaLM (``instruction``, ``input``, ``response1``, ``response2``, ``annotator1..3``): majority label; ties (label 0
  or no majority) dropped and counted, or kept with ``ties="keep"`` (then in a ``tie`` column, for reporting).
* JudgeBench (``prompt``, ``chosen``, ``rejected``, ``source``): ``subset`` = knowledge/reasoning/math/coding.
* Anything already in a trainer layout (TRL preference format, ``response_a``/``response_b``/``label``).

A folder saved with ``Dataset.save_to_disk`` is loaded with ``load_from_disk``.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from pathlib import Path

from datasets import Dataset, load_dataset, load_from_disk
from transformers.utils import logging

logger = logging.get_logger(__name__)


def _read_records(path: Path) -> list[dict]:
    name = path.name.lower()
    opener = gzip.open if name.endswith(".gz") else open
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(".parquet") or base.endswith(".csv"):
        return load_dataset(
            "parquet" if base.endswith(".parquet") else "csv", data_files=str(path), split="train"
        ).to_list()
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    stripped = text.lstrip()
    if base.endswith(".jsonl") or not stripped.startswith("["):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}.")
    return data


def split_transcript(transcript: str) -> list[dict]:
    """An hh-rlhf transcript ``"\\n\\nHuman: …\\n\\nAssistant: …"`` as chat messages."""
    messages = []
    for part in transcript.split("\n\nHuman: ")[1:] if transcript.startswith("\n\nHuman: ") else [transcript]:
        human, *assistant = part.split("\n\nAssistant: ")
        messages.append({"role": "user", "content": human.strip()})
        for a in assistant:
            messages.append({"role": "assistant", "content": a.strip()})
    return messages


def _hh_pair(chosen: str, rejected: str) -> tuple[list[dict], str, str]:
    marker = "\n\nAssistant:"
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    cut = chosen.rfind(marker, 0, n)
    if cut < 0:
        raise ValueError("an hh-rlhf row has no '\\n\\nAssistant:' turn in the shared prefix.")
    prompt = chosen[:cut]
    return split_transcript(prompt), chosen[cut + len(marker) :].strip(), rejected[cut + len(marker) :].strip()


def _judgebench_subset(source: str) -> str:
    s = str(source)
    if s.startswith("mmlu-pro"):
        return "knowledge"
    if s.startswith("livebench-reasoning"):
        return "reasoning"
    if s.startswith("livebench-math"):
        return "math"
    if s.startswith("livecodebench"):
        return "coding"
    return s


def _convert(records: list[dict], ties: str) -> tuple[list[dict], dict]:
    if not records:
        return [], {"format": "empty", "rows": 0, "ties": 0}
    keys = set(records[0])
    info = {"ties": 0}
    if {"response1", "response2", "annotator1"} <= keys:
        info["format"] = "pandalm"
        rows = []
        for r in records:
            votes = Counter(int(r[k]) for k in ("annotator1", "annotator2", "annotator3") if r.get(k) is not None)
            top, count = votes.most_common(1)[0] if votes else (0, 0)
            label = top if count >= 2 else 0
            instruction = str(r.get("instruction", ""))
            extra = str(r.get("input", "") or "")
            prompt = instruction + (f"\n\n{extra}" if extra.strip() else "")
            r1, r2 = str(r["response1"]), str(r["response2"])
            if label == 0:
                info["ties"] += 1
                if ties == "drop":
                    continue
                rows.append({"prompt": prompt, "chosen": r1, "rejected": r2, "tie": True})
                continue
            chosen, rejected = (r1, r2) if label == 1 else (r2, r1)
            row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
            if ties == "keep":
                row["tie"] = False
            rows.append(row)
        return rows, info
    if {"chosen", "rejected"} <= keys and "prompt" not in keys and isinstance(records[0]["chosen"], str):
        info["format"] = "hh-rlhf"
        rows = []
        for i, r in enumerate(records):
            try:
                prompt, chosen, rejected = _hh_pair(r["chosen"], r["rejected"])
            except ValueError as e:
                raise ValueError(f"Row {i}: {e}") from None
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        return rows, info
    if {"prompt", "chosen", "rejected", "source"} <= keys and "pair_id" in keys:
        info["format"] = "judgebench"
        rows = [
            {
                "prompt": str(r["prompt"]),
                "chosen": str(r["chosen"]),
                "rejected": str(r["rejected"]),
                "subset": _judgebench_subset(r["source"]),
            }
            for r in records
        ]
        return rows, info
    info["format"] = "preference"
    return records, info


def load_pairs(
    path: str, split: str = "train", ties: str = "drop", limit: int | None = None, select: str | None = None
) -> tuple[Dataset, dict]:
    """Load pairwise data from a file, a ``save_to_disk`` folder, or (named explicitly) a Hub dataset.

    Args:
        path: File path, folder, or Hub dataset id.
        split: Split of a Hub dataset or of a saved ``DatasetDict``.
        ties: ``"drop"`` (default) or ``"keep"`` rows without a majority preference (PandaLM).
        limit: Keep at most this many rows (after ``select``).
        select: A Python-style slice ``"start:stop"`` of rows to keep (e.g. ``"0:500"``), to carve disjoint
            train/unlabeled/held-out slices out of one file.
    """
    if ties not in ("drop", "keep"):
        raise ValueError(f"`ties` must be 'drop' or 'keep', got {ties!r}.")
    p = Path(path)
    if p.is_dir():
        loaded = load_from_disk(str(p))
        ds = loaded[split] if hasattr(loaded, "keys") else loaded
        info = {"format": "saved", "ties": 0}
    elif p.is_file():
        rows, info = _convert(_read_records(p), ties)
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


def as_unlabeled(dataset: Dataset, seed: int = 0) -> Dataset:
    """Drop the labels of preference rows: ``prompt``/``response_a``/``response_b`` with the two responses in a
    seeded random order (so the position of the better response carries no signal)."""
    from .data import validate_pairs

    pairs, _ = validate_pairs(dataset, need_label=False, on_invalid="skip", name="unlabeled")
    rng = random.Random(seed)
    rows = []
    for p in pairs:
        a, b = (p["first"], p["second"]) if rng.random() < 0.5 else (p["second"], p["first"])
        rows.append({"prompt": p["question"], "response_a": a, "response_b": b})
    return Dataset.from_list(rows)
