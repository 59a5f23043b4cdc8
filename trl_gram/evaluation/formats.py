"""Benchmark files for ``trl-gram eval``: format detection, one reader per published layout, whole-file validation.

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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..templates import is_conversational, question_to_text, response_to_text

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
        "prompt, chosen and rejected (3 strings each: concise, detailed plain, detailed markdown), domain; or GRAM's "
        "flattened copy: one row per cell with chosen, rejected strings, id and matrix_id 'i-j'",
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


class _Bad(Exception):
    def __init__(self, column: str | None, what: str):
        super().__init__(what)
        self.column, self.what = column, what


class _Skip(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Comparison:
    """One judged pair: ``label`` is 0 when ``first`` is the better response, 1 when ``second`` is, ``None`` for a
    kept tie; ``key`` places it in its row (``(i, j)``: chosen ``i`` against rejected ``j``)."""

    question: Any
    first: str
    second: str
    label: int | None
    row: int
    subset: str | None = None
    key: tuple = ()


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


def detect_format(records: list[dict]) -> str:
    """The format of rows, from the columns of the first row (and its value types)."""
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
            return "rm-bench" if "domain" in keys else "rewardbench2"
        if "prompt" not in keys and isinstance(chosen, str):
            return "hh-rlhf"
        if "subset" in keys and str(first.get("subset")) in REWARDBENCH_SUBSETS:
            return "rewardbench"
    return "preference"


# ------------------------------------------------------------------------------------------------------------------
# Field checks
# ------------------------------------------------------------------------------------------------------------------


def _text(rec: dict, col: str, allow_messages: bool = False, kind: str = "the response text") -> Any:
    if col not in rec:
        raise _Bad(col, f"missing; expected {kind}")
    v = rec[col]
    if v is None:
        raise _Bad(col, f"is null; expected {kind}")
    if allow_messages and is_conversational(v):
        try:
            (question_to_text if kind == "the prompt" else response_to_text)(v, col)
        except ValueError as e:
            raise _Bad(col, str(e)) from None
        return v
    if not isinstance(v, str):
        extra = " or a list of {role, content} messages" if allow_messages else ""
        raise _Bad(col, f"is a {type(v).__name__} ({v!r:.60}); expected {kind} as a string{extra}")
    return v


def _texts(rec: dict, col: str, n: int | None = None) -> list[str]:
    v = rec.get(col)
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        got = "missing" if col not in rec else f"a {type(v).__name__} ({v!r:.60})"
        raise _Bad(col, f"is {got}; expected a non-empty list of response strings")
    if n is not None and len(v) != n:
        raise _Bad(col, f"has {len(v)} responses; expected {n} (concise, detailed plain, detailed markdown)")
    return v


def _pair(question, a, b, label, row, subset=None, key=()) -> Comparison:
    ta, tb = response_to_text(a), response_to_text(b)
    if not ta.strip() or not tb.strip():
        raise _Skip("empty_response")
    if ta.strip() == tb.strip():
        raise _Skip("identical_responses")
    return Comparison(question, ta, tb, label, row, subset, key)


def _one_of(rec, col, allowed: dict):
    v = rec.get(col)
    key = v.strip() if isinstance(v, str) else v
    if isinstance(key, bool) or key not in allowed:
        shown = ", ".join(repr(k) for k in allowed if not isinstance(k, str) or not k.isdigit())
        raise _Bad(col, f"is {v!r:.40}; expected one of {shown}")
    return allowed[key]


# ------------------------------------------------------------------------------------------------------------------
# One reader per format: rec, row -> (comparisons, row facts)
# ------------------------------------------------------------------------------------------------------------------


def _read_preference(rec, row, ctx):
    if "prompt" not in rec and is_conversational(rec.get("chosen")) and is_conversational(rec.get("rejected")):
        c, r = rec["chosen"], rec["rejected"]
        n = 0
        while n < min(len(c), len(r)) - 1 and c[n] == r[n]:
            n += 1
        if n == 0:
            raise _Bad("chosen", "shares no prompt turn with `rejected`; expected whole conversations")
        return [_pair(c[:n], c[n:], r[n:], 0, row, _subset(rec))], {}
    if {"response_a", "response_b"} <= set(rec):
        q = _text(rec, "prompt", True, "the prompt")
        a, b = _text(rec, "response_a", True), _text(rec, "response_b", True)
        label = _one_of(rec, "label", {w: i for i, w in enumerate(ctx["label_words"])})
        return [_pair(q, a, b, label, row, _subset(rec))], {}
    q = _text(rec, "prompt", True, "the prompt")
    return [_pair(q, _text(rec, "chosen", True), _text(rec, "rejected", True), 0, row, _subset(rec))], {}


def _subset(rec):
    s = rec.get("subset")
    return None if s is None else str(s)


def _read_rewardbench(rec, row, ctx):
    q = _text(rec, "prompt", kind="the prompt")
    subset = _text(rec, "subset", kind="the subset name")
    return [_pair(q, _text(rec, "chosen"), _text(rec, "rejected"), 0, row, subset)], {"subset": subset}


def _read_rewardbench2(rec, row, ctx):
    q = _text(rec, "prompt", kind="the prompt")
    subset = _text(rec, "subset", kind="the subset name")
    chosen, rejected = _texts(rec, "chosen"), _texts(rec, "rejected")
    kind = str(rec.get("id", "")).split(":", 1)[0] if subset.lower() == "ties" else None
    comps = [_pair(q, c, r, 0, row, subset, (i, j)) for i, c in enumerate(chosen) for j, r in enumerate(rejected)]
    return comps, {"subset": subset, "ties_kind": kind, "prompt_id": str(rec.get("id", row)).split(":")[-1]}


def _read_rmbench(rec, row, ctx):
    q = _text(rec, "prompt", kind="the prompt")
    if "matrix_id" in rec:  # GRAM's flattened copy: one row per (chosen style, rejected style) cell, "i-j"
        m = re.fullmatch(r"\s*([0-2])-([0-2])\s*", str(rec["matrix_id"]))
        if m is None:
            raise _Bad("matrix_id", f"is {rec['matrix_id']!r:.20}; expected 'i-j' with i, j in 0..2")
        domain = _text(rec, "domain", kind="the domain (chat, math, code, safety-refuse, safety-response)")
        key = (int(m.group(1)), int(m.group(2)))
        comp = _pair(q, _text(rec, "chosen"), _text(rec, "rejected"), 0, row, domain, key)
        return [comp], {"domain": domain, "group": ("id", str(rec.get("id", q)))}
    chosen, rejected = _texts(rec, "chosen", 3), _texts(rec, "rejected", 3)
    domain = _text(rec, "domain", kind="the domain (chat, math, code, safety-refuse, safety-response)")
    comps = [_pair(q, c, r, 0, row, domain, (i, j)) for i, c in enumerate(chosen) for j, r in enumerate(rejected)]
    return comps, {"domain": domain}


def judgebench_category(source: str) -> str:
    """JudgeBench's four categories, by the ``source`` prefix its authors group on."""
    for prefix, name in (
        ("mmlu-pro", "knowledge"),
        ("livebench-reasoning", "reasoning"),
        ("livebench-math", "math"),
        ("livecodebench", "coding"),
    ):
        if source.startswith(prefix):
            return name
    return source


def _read_judgebench(rec, row, ctx):
    source = _text(rec, "source", kind="the source (e.g. mmlu-pro-law)")
    cat = judgebench_category(source)
    if "response_A" in rec:
        q = _text(rec, "question", kind="the question")
        label = _one_of(rec, "label", {"A>B": 0, "B>A": 1})
        return [_pair(q, _text(rec, "response_A"), _text(rec, "response_B"), label, row, cat)], {}
    q = _text(rec, "prompt", kind="the prompt")
    return [_pair(q, _text(rec, "chosen"), _text(rec, "rejected"), 0, row, cat)], {}


def _read_pandalm(rec, row, ctx):
    votes = Counter()
    for k in ("annotator1", "annotator2", "annotator3"):
        if rec.get(k) is not None:
            votes[_one_of(rec, k, {0: 0, 1: 1, 2: 2, "0": 0, "1": 1, "2": 2})] += 1
    if not votes:
        raise _Bad("annotator1", "no annotator vote; expected annotator1..annotator3 in 0, 1, 2")
    top, count = votes.most_common(1)[0]
    tie = top == 0 or count < 2
    if tie and ctx["ties"] == "drop":
        raise _Skip("tie")
    # Six rows of the released test set hold booleans where text is expected: PandaLM's own code reads them as text.
    instruction = str(rec.get("instruction", ""))
    extra = rec.get("input")
    q = instruction + (f"\n\n{extra}" if isinstance(extra, (str, bool, int, float)) and str(extra).strip() else "")
    r1, r2 = (str(rec[k]) if isinstance(rec.get(k), bool) else _text(rec, k) for k in ("response1", "response2"))
    return [_pair(q, r1, r2, None if tie else top - 1, row)], {}


def _read_llmbar(rec, row, ctx):
    q = _text(rec, "input", kind="the instruction")
    label = _one_of(rec, "label", {1: 0, 2: 1, "1": 0, "2": 1})
    return [_pair(q, _text(rec, "output_1"), _text(rec, "output_2"), label, row, _subset(rec))], {}


def _read_mtbench(rec, row, ctx):
    winner = rec.get("winner")
    if isinstance(winner, str) and winner.startswith("tie"):
        raise _Skip("tie")
    label = _one_of(rec, "winner", {"model_a": 0, "model_b": 1})
    turn = _one_of(rec, "turn", {1: 1, 2: 2, "1": 1, "2": 2})
    convs = []
    for col in ("conversation_a", "conversation_b"):
        conv = rec.get(col)
        if not is_conversational(conv) or len(conv) < 2 * turn:
            raise _Bad(col, f"expected a message list with at least {2 * turn} messages for turn {turn}")
        convs.append(conv)
    question = convs[0][: 2 * turn - 1]
    answers = [c[2 * turn - 1] for c in convs]
    if any(m.get("role") != "assistant" for m in answers):
        raise _Bad("conversation_a", f"message {2 * turn - 1} is not the assistant's answer of turn {turn}")
    return [_pair(question, [answers[0]], [answers[1]], label, row, f"turn {turn}")], {"turn": turn}


_HH_MARKER = "\n\nAssistant:"


def _read_hh(rec, row, ctx):
    chosen = _text(rec, "chosen", kind="an hh-rlhf transcript")
    rejected = _text(rec, "rejected", kind="an hh-rlhf transcript")
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    cut = chosen.rfind(_HH_MARKER, 0, n)
    if cut < 0:
        raise _Bad("chosen", "the transcripts share no '\\n\\nAssistant:' turn; expected hh-rlhf transcripts")
    from ..training.datasets import split_transcript

    prompt = split_transcript(chosen[:cut])
    a, b = chosen[cut + len(_HH_MARKER) :].strip(), rejected[cut + len(_HH_MARKER) :].strip()
    return [_pair(prompt, a, b, 0, row)], {}


READERS = {
    "rewardbench": _read_rewardbench,
    "rewardbench2": _read_rewardbench2,
    "rm-bench": _read_rmbench,
    "judgebench": _read_judgebench,
    "pandalm": _read_pandalm,
    "llmbar": _read_llmbar,
    "mt-bench": _read_mtbench,
    "hh-rlhf": _read_hh,
    "preference": _read_preference,
}

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
    fmt = detect_format(records) if format == "auto" else format
    data = EvalData(path, fmt, len(records))
    ctx = {"ties": ties, "label_words": tuple(str(w) for w in label_words)}
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
