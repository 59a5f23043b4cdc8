"""Benchmark files for ``trl-gram eval``: format detection, reading, whole-file validation (the per-format row
readers are in [`~trl_gram.evaluation.readers`]).

[`read_eval_file`] reads a file completely before any model is loaded. Each row becomes one or more [`Comparison`]s
(RewardBench 2 and RM-Bench rows hold several responses). A row a reader cannot use is either a user mistake, reported
as a [`DataError`] naming the file, row (counted from 0) and column and what was expected, or a row the benchmark
itself leaves out (ties, identical responses), skipped and counted by reason with its row number.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .readers import READERS, Comparison, _Bad, _Skip, judgebench_category  # noqa: F401  (re-exported)

# name -> (layout, one example row); shown by `trl-gram eval --help` and in docs/evaluation.md.
FORMATS: dict[str, tuple[str, str]] = {
    "rewardbench": (
        "prompt, chosen, rejected (strings), subset (a RewardBench subset name)",
        '{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away.", "subset": "alpacaeval-easy"}',
    ),
    "rewardbench2": (
        "prompt, chosen (list of strings), rejected (list of strings), subset; optional id ('ref:N'/'tied:N' in "
        "Ties), num_correct",
        '{"id": "7", "prompt": "2+2?", "chosen": ["4"], "rejected": ["5", "3", "22"], "subset": "Math"}',
    ),
    "rm-bench": (
        "prompt, chosen and rejected (3 strings each: concise, detailed plain, detailed markdown), domain "
        "(data/total_dataset.json); or a per-domain file of its repository without domain (data/chat_filtered.json, "
        "code_, math_, safety-refuse_, safety-response_filtered.json: id, subset, prompt, chosen, rejected, "
        "error_key, error; the domain is the file name's); or GRAM's flattened copy: one row per cell with chosen, "
        "rejected strings, id and matrix_id 'i-j'",
        '{"id": 1, "prompt": "2+2?", "chosen": ["4", "It is 4.", "**4**"], "rejected": ["5", "It is 5.", "**5**"], '
        '"domain": "math"}',
    ),
    "judgebench": (
        "question, response_A, response_B, label ('A>B'/'B>A'), source; or GRAM's copy: pair_id, source, prompt, "
        "chosen, rejected",
        '{"pair_id": "x1", "source": "mmlu-pro-law", "question": "...", "response_A": "(B)", "response_B": "(C)", '
        '"label": "B>A"}',
    ),
    "pandalm": (
        "instruction, input, response1, response2, annotator1..annotator3 (1, 2, or 0 for a tie)",
        '{"instruction": "Add.", "input": "2+2", "response1": "4", "response2": "5", "annotator1": 1, '
        '"annotator2": 1, "annotator3": 2}',
    ),
    "llmbar": (
        "input, output_1, output_2, label (1 or 2: the better output)",
        '{"input": "Name a fruit.", "output_1": "Apple.", "output_2": "Carrot.", "label": 1}',
    ),
    "mt-bench": (
        "MT-Bench human judgments: question_id, conversation_a, conversation_b (message lists), winner "
        "('model_a'/'model_b'/'tie...'), turn (1 or 2)",
        '{"question_id": 81, "turn": 1, "winner": "model_a", "conversation_a": [{"role": "user", "content": "Hi"}, '
        '{"role": "assistant", "content": "Hello!"}], "conversation_b": [...]}',
    ),
    "hh-rlhf": (
        "chosen, rejected: whole '\\n\\nHuman: ...\\n\\nAssistant: ...' transcripts sharing the prompt",
        '{"chosen": "\\n\\nHuman: Hi\\n\\nAssistant: Hello!", "rejected": "\\n\\nHuman: Hi\\n\\nAssistant: No."}',
    ),
    "preference": (
        "prompt, chosen, rejected (strings or TRL conversational message lists), optional subset; or chosen/rejected "
        "whole conversations (implicit prompt)",
        '{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}], '
        '"rejected": [{"role": "assistant", "content": "No."}]}',
    ),
}

REWARDBENCH_SUBSETS = frozenset(
    "alpacaeval-easy alpacaeval-length alpacaeval-hard mt-bench-easy mt-bench-med mt-bench-hard llmbar-natural "
    "llmbar-adver-neighbor llmbar-adver-GPTInst llmbar-adver-GPTOut llmbar-adver-manual refusals-dangerous "
    "refusals-offensive xstest-should-refuse xstest-should-respond donotanswer math-prm hep-cpp hep-go hep-java hep-js "
    "hep-python hep-rust".split()
)
REWARDBENCH2_SUBSETS = frozenset({"Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"})
REWARDBENCH2_COLUMNS = frozenset({"num_correct", "num_rejected", "total_completions", "models"})
RM_BENCH_FILE = re.compile(r"(chat|code|math|safety-refuse|safety-response)(?:_filtered)?$")


class AmbiguousFormat(ValueError):
    """Rows whose layout fits formats that score differently: the user must say which (``--format``)."""


class DataError(ValueError):
    """A data file a user must fix: every problem names the file, the row and the column."""

    def __init__(self, path: str, problems: list[tuple[int | None, str | None, str]], total: int | None = None):
        self.path, self.problems = path, problems
        total = len(problems) if total is None else total
        lines = []
        for row, column, what in problems[:20]:
            where = ", ".join(
                p for p in (f"row {row}" if row is not None else "", f"column `{column}`" if column else "") if p
            )
            lines.append(f"  {path}: {where + ': ' if where else ''}{what}")
        more = f"\n  ... and {total - 20} more problem(s)" if total > 20 else ""
        super().__init__(f"{total} problem(s) in {path} (rows counted from 0):\n" + "\n".join(lines) + more)


@dataclass
class EvalData:
    """A validated benchmark file: its comparisons, the per-row facts its aggregate needs, and the skipped rows."""

    path: str
    format: str
    rows: int
    comparisons: list[Comparison] = field(default_factory=list)
    row_info: dict[int, dict] = field(default_factory=dict)
    skipped: dict[str, list[int]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------------------
# Reading records
# ------------------------------------------------------------------------------------------------------------------


def _from_datasets(path: str, split: str | None) -> list[dict]:
    """Rows of a ``save_to_disk`` folder, or of a Hub dataset (needs network)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(path) if Path(path).is_dir() else datasets.load_dataset(path)
    except Exception as e:  # noqa: BLE001  (any loading failure is reported as the user's to fix)
        what = f"not a data file, a saved dataset or a reachable Hub dataset ({e})"
        raise DataError(path, [(None, None, what)]) from None
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if split is None and len(names) > 1:
            raise DataError(path, [(None, None, f"has the splits {names}; pick one with --split")])
        if split is not None and split not in loaded:
            raise DataError(path, [(None, None, f"has no split {split!r}; it has {names}")])
        loaded = loaded[split or names[0]]
    return loaded.to_list()


def read_records(path: str, split: str | None = None) -> list[dict]:
    """The rows of a ``.json`` (list), ``.jsonl``, ``.csv`` (every value a string) or ``.parquet`` file, optionally
    gzipped; of a ``save_to_disk`` folder; or of a Hub dataset id (``split`` picks its split). A malformed file raises
    a [`DataError`] naming the line."""
    p = Path(path)
    if p.is_dir():
        return _from_datasets(path, split)
    if not p.is_file():
        looks_like_file = path.startswith((".", "/")) or p.suffix in (".json", ".jsonl", ".gz", ".csv", ".parquet")
        if looks_like_file or path.count("/") != 1:
            raise DataError(path, [(None, None, "no such file")])
        return _from_datasets(path, split)
    name = p.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pylist()
    opener = gzip.open if name.endswith(".gz") else open
    with opener(p, "rt", encoding="utf-8", newline="") as f:
        if base.endswith(".csv"):
            return [dict(r) for r in csv.DictReader(f)]
        text = f.read()
    if base.endswith(".jsonl") or not text.lstrip().startswith("["):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise DataError(path, [(None, None, f"line {n} is not valid JSON ({e})")]) from None
        return rows
    try:
        data = json.loads(text)
    except ValueError as e:
        raise DataError(path, [(None, None, f"not valid JSON ({e})")]) from None
    if not isinstance(data, list):
        raise DataError(path, [(None, None, f"expected a JSON list of rows, got a {type(data).__name__}")])
    return data


def _list_layout(records: list[dict], keys: set) -> str:
    """``rewardbench2`` or ``rm-bench`` for rows of response lists without ``domain``: both layouts hold ``prompt``,
    ``subset`` and lists of ``chosen``/``rejected`` but score differently (best-of-n against a 3 x 3 style matrix),
    so the file must show which it is; otherwise [`AmbiguousFormat`]."""
    rows = [r for r in records if isinstance(r, dict)]
    rewardbench2 = bool(keys & REWARDBENCH2_COLUMNS) or all(str(r.get("subset")) in REWARDBENCH2_SUBSETS for r in rows)
    rm_bench = all(
        isinstance(r.get(c), list) and len(r[c]) == 3 for r in rows for c in ("chosen", "rejected")
    ) and not any(str(r.get("subset")) in REWARDBENCH2_SUBSETS for r in rows)
    if rewardbench2 != rm_bench:
        return "rewardbench2" if rewardbench2 else "rm-bench"
    raise AmbiguousFormat(
        "rows of chosen/rejected response lists without `domain` could be rewardbench2 (scored best of n) or "
        "rm-bench (scored on a 3 x 3 style matrix), and the columns do not tell which (rewardbench2: its subset names "
        "or num_correct; rm-bench: 3 chosen and 3 rejected in every row); pass --format rewardbench2 or --format "
        "rm-bench"
    )


def detect_format(records: list[dict]) -> str:
    """The format of rows, from the columns of the first row (and its value types). Raises [`AmbiguousFormat`] when
    the rows fit several layouts that score differently."""
    first = records[0] if records and isinstance(records[0], dict) else {}
    keys = set(first)
    if {"response1", "response2"} <= keys and any(k.startswith("annotator") for k in keys):
        return "pandalm"
    if {"output_1", "output_2", "label"} <= keys:
        return "llmbar"
    if {"conversation_a", "conversation_b", "winner"} <= keys:
        return "mt-bench"
    if {"response_A", "response_B", "label"} <= keys or ({"pair_id", "source", "chosen", "rejected"} <= keys):
        return "judgebench"
    if {"chosen", "rejected", "domain", "matrix_id"} <= keys:
        return "rm-bench"
    if {"chosen", "rejected"} <= keys:
        chosen = first.get("chosen")
        if isinstance(chosen, list) and chosen and all(isinstance(c, str) for c in chosen):
            return "rm-bench" if "domain" in keys else _list_layout(records, keys)
        if "prompt" not in keys and isinstance(chosen, str):
            return "hh-rlhf"
        if "subset" in keys and str(first.get("subset")) in REWARDBENCH_SUBSETS:
            return "rewardbench"
    return "preference"


def rm_bench_domain(path: str) -> str:
    """The domain of an RM-Bench per-domain file, from its name (``data/chat_filtered.json`` -> ``chat``); else the
    file's name itself (its rows are then scored as one domain)."""
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json", ".parquet", ".csv"):
        name = name[: -len(suffix)] if name.lower().endswith(suffix) else name
    m = RM_BENCH_FILE.search(name)
    return m.group(1) if m else name


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
    """
    if format != "auto" and format not in READERS:
        raise DataError(
            path, [(None, None, f"unknown --format {format!r}; expected auto or one of {sorted(READERS)}")]
        )
    records = read_records(path, split)
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
    _numbers_only(path, records, data.comparisons)
    data.skipped = skipped
    return data
