"""One reader per published layout: a row in, its [`Comparison`]s and the facts its aggregate needs out; the format
of a file detected from its first row ([`detect_format`]). `trl-gram eval` and the training loaders both read through
them, so each layout (JudgeBench subsets, hh-rlhf transcripts, PandaLM's majority vote, ...) is parsed in one place.

A reader raises ``_Bad(column, what)`` for a user mistake and ``_Skip(reason)`` for a row the benchmark leaves out;
[`~trl_gram.formats.files.read_eval_file`] collects both.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..templates import is_conversational, question_to_text, response_to_text


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
    if "domain" in rec or not ctx.get("domain"):
        domain = _text(rec, "domain", kind="the domain (chat, math, code, safety-refuse, safety-response)")
    else:  # a per-domain file of the RM-Bench repository (data/chat_filtered.json): the file's domain
        domain = ctx["domain"]
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
            vote = int(rec[k]) if isinstance(rec[k], bool) else rec[k]  # PandaLM's own code reads True as 1
            votes[_one_of({k: vote}, k, {0: 0, 1: 1, 2: 2, "0": 0, "1": 1, "2": 2})] += 1
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


def split_transcript(transcript: str) -> list[dict]:
    """An hh-rlhf transcript ``"\\n\\nHuman: …\\n\\nAssistant: …"`` as chat messages."""
    messages = []
    for part in transcript.split("\n\nHuman: ")[1:] if transcript.startswith("\n\nHuman: ") else [transcript]:
        human, *assistant = part.split("\n\nAssistant: ")
        messages.append({"role": "user", "content": human.strip()})
        for a in assistant:
            messages.append({"role": "assistant", "content": a.strip()})
    return messages


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
