"""Reading a judge's output: the label between ``<answer>`` and ``</answer>``, the rationale, and why it failed.

:func:`parse_verdict` never raises on a string and costs a few regular-expression scans. It accepts the usual
variants of a well-formed answer (case, spaces, ``Response A``, ``[[A]]``, ``**A**``, a missing closing tag at the very
end) and rejects what cannot be read with confidence (both letters, answers that disagree).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# Failure reasons (stable strings: they are logged and counted).
NO_ANSWER = "no_answer"  # no answer tag and no [[X]] verdict anywhere
EMPTY_ANSWER = "empty_answer"  # an answer slot with nothing in it
AMBIGUOUS_ANSWER = "ambiguous_answer"  # one answer naming both labels ("A or B", "both")
CONFLICTING_ANSWERS = "conflicting_answers"  # several answers that disagree
UNRECOGNIZED_ANSWER = "unrecognized_answer"  # an answer that names no label
NOT_TEXT = "not_text"  # the output was not a string

FAILURE_REASONS = (NO_ANSWER, EMPTY_ANSWER, AMBIGUOUS_ANSWER, CONFLICTING_ANSWERS, UNRECOGNIZED_ANSWER, NOT_TEXT)


@dataclass(frozen=True)
class Verdict:
    """One parsed judge output.

    Attributes:
        label: The label word read (``"A"``/``"B"`` with the default words), or ``None``.
        rationale: The reasoning text (inside ``<think>…</think>`` when present, else what precedes the answer).
        failure: Why no label could be read (one of :data:`FAILURE_REASONS`), ``None`` on success.
    """

    label: str | None
    rationale: str
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.label is not None


# Words that may surround a label inside the answer slot ("Response A", "The better one is B.").
_FILLER = (
    "the",
    "response",
    "responses",
    "assistant",
    "answer",
    "output",
    "option",
    "choice",
    "model",
    "candidate",
    "final",
    "verdict",
    "is",
    "better",
    "best",
    "one",
    "preferred",
    "winner",
    "chosen",
    "i",
    "choose",
    "select",
    "pick",
    "prefer",
)
_BOTH_WORDS = re.compile(r"\b(both|neither|tie|equal|equally)\b", re.IGNORECASE)
_STRIP_CHARS = " \t\r\n*_`'\"“”‘’.,:;!()[]{}<>#-=|"


@dataclass(frozen=True)
class _Patterns:
    block: re.Pattern
    unclosed: re.Pattern
    think: re.Pattern
    bracket: re.Pattern
    label_any_case: tuple[re.Pattern, re.Pattern]
    label_upper: tuple[re.Pattern, re.Pattern]


@lru_cache(maxsize=32)
def _patterns(answer_open: str, answer_close: str, think_open: str, think_close: str, labels: tuple[str, str]):
    o, c = re.escape(answer_open), re.escape(answer_close)
    to, tc = re.escape(think_open), re.escape(think_close)

    def word(w, flags):
        return re.compile(r"(?<![A-Za-z0-9])" + re.escape(w) + r"(?![A-Za-z0-9])", flags)

    return _Patterns(
        block=re.compile(o + r"(.*?)" + c, re.IGNORECASE | re.DOTALL),
        unclosed=re.compile(o + r"((?:(?!" + o + r").)*)\Z", re.IGNORECASE | re.DOTALL),
        think=re.compile(to + r"(.*?)(?:" + tc + r"|\Z)", re.IGNORECASE | re.DOTALL),
        bracket=re.compile(r"\[\[\s*(" + "|".join(re.escape(w) for w in labels) + r")\s*\]\]", re.IGNORECASE),
        label_any_case=(word(labels[0], re.IGNORECASE), word(labels[1], re.IGNORECASE)),
        label_upper=(word(labels[0], 0), word(labels[1], 0)),
    )


def _read_slot(content: str, labels: tuple[str, str], pats: _Patterns) -> tuple[str | None, str | None]:
    """The label named by the content of one answer slot, or a failure reason."""
    text = content.strip(_STRIP_CHARS)
    if not text:
        return None, EMPTY_ANSWER
    lowered = [w.lower() for w in labels]
    # The common case: exactly a label word, maybe wrapped in brackets, quotes or markdown.
    if text.lower() in lowered:
        return labels[lowered.index(text.lower())], None
    # "Response A", "The better response is B." ...: drop filler words and punctuation, look again.
    words = [w.strip(_STRIP_CHARS) for w in re.split(r"\s+", text)]
    core = [w for w in words if w and w.lower() not in _FILLER]
    if len(core) == 1 and core[0].lower() in lowered:
        return labels[lowered.index(core[0].lower())], None
    if _BOTH_WORDS.search(text):
        return None, AMBIGUOUS_ANSWER
    # Free text: a label written as a standalone capital letter (so the article "a" does not count).
    hits = [bool(p.search(text)) for p in pats.label_upper]
    if all(hits):
        return None, AMBIGUOUS_ANSWER
    if any(hits):
        return labels[hits.index(True)], None
    if all(bool(p.search(text)) for p in pats.label_any_case):
        return None, AMBIGUOUS_ANSWER
    return None, UNRECOGNIZED_ANSWER


def _rationale(text: str, pats: _Patterns, answer_start: int) -> str:
    m = pats.think.search(text)
    if m and m.start() < answer_start:
        return m.group(1).strip()
    return text[:answer_start].strip()


def parse_verdict(
    text: object,
    label_words: tuple[str, str] = ("A", "B"),
    answer_open: str = "<answer>",
    answer_close: str = "</answer>",
    think_open: str = "<think>",
    think_close: str = "</think>",
) -> Verdict:
    """Parse one judge output into a :class:`Verdict`. Never raises; a non-string gives ``failure="not_text"``."""
    if not isinstance(text, str):
        return Verdict(None, "", NOT_TEXT)
    labels = (str(label_words[0]), str(label_words[1]))
    pats = _patterns(answer_open, answer_close, think_open, think_close, labels)

    slots = [(m.start(), m.group(1)) for m in pats.block.finditer(text)]
    last_end = max((m.end() for m in pats.block.finditer(text)), default=0)
    tail = pats.unclosed.search(text, last_end)
    if tail is not None:
        slots.append((tail.start(), tail.group(1)))

    if slots:
        results = [_read_slot(content, labels, pats) for _, content in slots]
        rationale = _rationale(text, pats, slots[0][0])
        found = {label for label, _ in results if label is not None}
        if len(found) > 1:
            return Verdict(None, rationale, CONFLICTING_ANSWERS)
        if found:
            return Verdict(found.pop(), rationale, None)
        return Verdict(None, rationale, results[-1][1])

    # No answer tag: accept the "[[A]]" verdict style when it is unambiguous.
    brackets = list(pats.bracket.finditer(text))
    if brackets:
        found = {m.group(1).lower() for m in brackets}
        rationale = _rationale(text, pats, brackets[0].start())
        if len(found) > 1:
            return Verdict(None, rationale, CONFLICTING_ANSWERS)
        word = found.pop()
        return Verdict(next(w for w in labels if w.lower() == word), rationale, None)
    return Verdict(None, _rationale(text, pats, len(text)), NO_ANSWER)


def parse_with_template(text: object, template) -> Verdict:
    """:func:`parse_verdict` with the tags and label words of a :class:`~trl_gram.templates.JudgeTemplate`."""
    return parse_verdict(
        text,
        template.label_words,
        template.answer_open,
        template.answer_close,
        template.think_open,
        template.think_close,
    )


def format_verdict(rationale: str, label: str, template=None) -> str:
    """The canonical judge output for a rationale and a label (what the judge is trained to write): the inverse of
    :func:`parse_verdict` for rationales without tags. ``template`` gives the tags (GRAM-R²'s by default)."""
    if template is None:
        from .templates import GRAM_R2_TEMPLATE as template
    t = template
    return f"{t.think_open}\n{rationale.strip()}\n{t.think_close}\n{t.answer_open}\n{label}\n{t.answer_close}"
