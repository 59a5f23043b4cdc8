"""Reading a judge's output: the label in the final answer slot, the rationale, and why it failed.

[`parse_verdict`] never raises on a string and runs in time linear in the length of the output: one scan finds every
tag, each character of the text is looked at a bounded number of times afterwards. It reads the verdict a careful human
would:

* Only the answer slot that follows the rationale counts. An ``<answer>…</answer>`` quoted inside ``<think>…</think>``
  (e.g. the model restating the format, ``"the format is <answer>A or B</answer>"``) is ignored as soon as an answer
  slot exists outside the rationale; answers inside the rationale are read only when there is no other.
* Inside the slot, the usual variants of a well-formed answer are accepted (case, spaces, ``Response A``, ``[[A]]``,
  ``**A**``, ``The better response is B.``, ``A because it is shorter``, ``Response (a)``, ``\\boxed{A}``, a short
  sentence in another language such as ``La respuesta A es mejor`` or ``答案是A``, a closing tag missing or cut off
  at the very end such as ``</ans``). Control characters such as NUL bytes in the slot are ignored.
* Negated labels never become the verdict: ``Not B`` is a failure (``negated_answer``), not ``B``; ``A, not B`` is
  ``A``. Articles and filler words are never read as labels: ``I choose a response`` names no label.
* What cannot be read with confidence is rejected: both labels (``A or B``, ``both``), final slots that disagree.

**Difference from the official routine.** The released GRAM-R² usage code (NiuTrans/GRAM,
``extensions/GRAM-RR/README.md``) keeps the text *after* the last ``</answer>`` and says "response 1" when it starts
with ``A``, else "response 2". A well-formed output ends with ``</answer>``, so that text is empty and the official
routine answers "response 2" for every well-formed output, whatever the slot says; text written after the slot decides
instead of the slot. We read the slot itself and make no attempt to reproduce that behaviour. (The probabilities that
[`~trl_gram.GramJudge`] reports come from the label-token logits at the slot and do not depend on this parser.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# Failure reasons (stable strings: they are logged and counted).
NO_ANSWER = "no_answer"  # no answer tag and no [[X]] verdict anywhere
EMPTY_ANSWER = "empty_answer"  # an answer slot with nothing in it
AMBIGUOUS_ANSWER = "ambiguous_answer"  # one answer naming both labels ("A or B", "both")
CONFLICTING_ANSWERS = "conflicting_answers"  # several final answers that disagree
UNRECOGNIZED_ANSWER = "unrecognized_answer"  # an answer that names no label
NEGATED_ANSWER = "negated_answer"  # an answer that only names a label to negate it ("Not B")
NOT_TEXT = "not_text"  # the output was not a string

FAILURE_REASONS = (
    NO_ANSWER,
    EMPTY_ANSWER,
    AMBIGUOUS_ANSWER,
    CONFLICTING_ANSWERS,
    UNRECOGNIZED_ANSWER,
    NEGATED_ANSWER,
    NOT_TEXT,
)


@dataclass(frozen=True)
class Verdict:
    """One parsed judge output.

    Attributes:
        label (`str` or `None`):
            The label word read (``"A"``/``"B"`` with the default words), or ``None``.
        rationale (`str`):
            The reasoning text (inside ``<think>…</think>`` when present, else what precedes the answer).
        failure (`str` or `None`):
            Why no label could be read (one of [`FAILURE_REASONS`]), ``None`` on success.
    """

    label: str | None
    rationale: str
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.label is not None


# Words that may surround a label inside the answer slot ("Response A", "The better one is B.").
_FILLER = frozenset(
    "the response responses assistant answer output option choice model candidate final verdict is are was better "
    "best one preferred winner chosen choose select pick prefer my i'd would say think that this "
    "clearly definitely overall so therefore thus".split()
)
# Lower-case spellings that are English words before they are labels ("a response", "I think").
_WORD_LIKE = frozenset({"a", "i", "an"})
_NEGATIONS = frozenset(
    "not no never neither nor isn't aren't wasn't isnt doesn't don't cannot can't without except nope non "
    "nicht kein keine nein pas ni nunca jamais niet не нет ни 不 不是 没 没有 非 無 無い ない 아니".split()
)
_BOTH_WORDS = frozenset({"both", "neither", "tie", "tied", "equal", "equally"})
# After an upper-case "A", these words make it a label ("A is better"); any other lower-case word makes it the article
# ("A better response is the second").
_PREDICATES = frozenset(
    "is was wins won seems appears does did has provides gives answers performs follows and or vs versus over than "
    "clearly definitely es est ist è é är er".split()
)
# Nor do these, which never follow the article ("A because it is shorter" names A).
_NOT_AFTER_ARTICLE = frozenset(
    "because since as for with in on at to by from due given which that who while whereas though although but here "
    "there it its it's this these those he she they we you his her their".split()
)
# Control characters other than tab and newlines (NUL bytes from a broken stream) are ignored.
_CONTROL = dict.fromkeys([c for c in range(32) if chr(c) not in "\t\n\r"] + [127])
# LaTeX around a label: \boxed{A}, \text{A}, $...$, \( ... \).
_LATEX_WRAP = re.compile(r"\\(?:boxed|fbox|text|textbf|textrm|mathrm|mathbf)\s*\{([^{}]*)\}")
_LATEX_DELIMS = re.compile(r"\$+|\\[()\[\]]")
# Letters of scripts written without spaces (CJK, kana, hangul, full-width forms) are words of their own.
_UNSPACED = re.compile(r"([\u2e80-\u9fff\uac00-\ud7af\uff00-\uffef])")
_STRIP_CHARS = " \t\r\n*_`'\"“”‘’.,:;!?()[]{}<>#-=|"
_CLAUSE = re.compile(r"[,;.!?\n，。！？；]+")
_WORD = re.compile(r"[^\s,;.!?，。！？；]+")
_PARENTHESISED = re.compile(r"[(\[]\s*([^\s()\[\]]+)\s*[)\]]")


@dataclass(frozen=True)
class _Patterns:
    tags: re.Pattern
    bracket: re.Pattern
    kinds: dict


@lru_cache(maxsize=32)
def _patterns(answer_open: str, answer_close: str, think_open: str, think_close: str, labels: tuple[str, str]):
    kinds = {}
    for kind, tag in (("ao", answer_open), ("ac", answer_close), ("to", think_open), ("tc", think_close)):
        kinds.setdefault(tag.lower(), kind)
    # Longest tags first, so "</answer>" is never read as a shorter tag it contains.
    alternatives = sorted(kinds, key=len, reverse=True)
    return _Patterns(
        tags=re.compile("|".join(re.escape(t) for t in alternatives), re.IGNORECASE),
        bracket=re.compile(
            r"\[\[\s*(" + "|".join(re.escape(w) for w in labels) + r")\s*\]\]"
            r"|\\boxed\s*\{\s*(?:\\text(?:bf)?\s*\{\s*)?(" + "|".join(re.escape(w) for w in labels) + r")\s*\}",
            re.IGNORECASE,
        ),
        kinds=kinds,
    )


def _match_label(token: str, labels: tuple[str, str], alone: bool) -> int | None:
    """Index of the label ``token`` spells, or ``None``. Inside a sentence, a lower-case token that is an English word
    (``a``, ``i``) is that word, not the label (``"I choose a response"``)."""
    for i, w in enumerate(labels):
        if token == w:
            return i
        if token.lower() == w.lower() and (alone or token.lower() not in _WORD_LIKE):
            return i
    return None


def _mentions(words: list[str], labels: tuple[str, str], skip_filler: bool) -> set[int]:
    """Labels a clause names, with the article rule: an upper-case ``A`` followed by a lower-case word that is not a
    predicate is the article. With ``skip_filler``, filler words ("one", "answer", ...) are not labels even when a
    label word spells the same."""
    found = set()
    for k, raw in enumerate(words):
        wrapped = _PARENTHESISED.fullmatch(raw.strip("*_`'\"“”‘’:"))
        if wrapped and _match_label(wrapped.group(1), labels, alone=True) is not None:
            found.add(_match_label(wrapped.group(1), labels, alone=True))  # "Response (a)": a list marker
            continue
        token = raw.strip(_STRIP_CHARS)
        if token.endswith("'s"):
            token = token[:-2]
        if skip_filler and token.lower() in _FILLER:
            continue
        idx = _match_label(token, labels, alone=False)
        if idx is None:
            continue
        if token.lower() in _WORD_LIKE and raw == token and k == 0 and k + 1 < len(words):
            nxt = words[k + 1].strip(_STRIP_CHARS)
            if (
                nxt[:1].islower()
                and nxt.lower() not in _PREDICATES | _NOT_AFTER_ARTICLE
                and _match_label(nxt, labels, False) is None
            ):
                continue  # "A better response ...": the article (only a clause's first word is a capitalised one)
        found.add(idx)
    return found


def _read_slot(content: str, labels: tuple[str, str]) -> tuple[str | None, str | None]:
    """The label named by the content of one answer slot, or a failure reason."""
    content = content.translate(_CONTROL)
    for _ in range(3):  # \boxed{\text{A}}: innermost first
        content = _LATEX_WRAP.sub(r" \1 ", content)
    body = _UNSPACED.sub(r" \1 ", _LATEX_DELIMS.sub(" ", content))
    text = body.strip(_STRIP_CHARS)
    if not text:
        return None, EMPTY_ANSWER
    # The common case: exactly a label word, maybe wrapped in brackets, quotes or markdown.
    idx = _match_label(text, labels, alone=True)
    if idx is not None:
        return labels[idx], None
    lowered_labels = {w.lower() for w in labels}
    clauses = [_WORD.findall(c) for c in _CLAUSE.split(body)]
    plains = [[w.strip(_STRIP_CHARS).lower() for w in words] for words in clauses]
    negative = [any(w in _NEGATIONS or w.endswith("n't") for w in plain) for plain in plains]
    both_seen = any(w in _BOTH_WORDS and w not in lowered_labels for plain in plains for w in plain)
    for skip_filler in (True, False):  # filler words count as labels only when nothing else names one
        affirmed, negated = set(), set()
        for words, neg in zip(clauses, negative):
            (negated if neg else affirmed).update(_mentions(words, labels, skip_filler))
        if affirmed or negated:
            break
    negation_seen = any(negative)
    if both_seen and len(affirmed) != 1:
        return None, AMBIGUOUS_ANSWER
    if len(affirmed) > 1:
        return None, AMBIGUOUS_ANSWER
    if len(affirmed) == 1:
        (idx,) = affirmed
        if idx in negated:
            return None, AMBIGUOUS_ANSWER  # "A. Not A."
        if both_seen:
            return None, AMBIGUOUS_ANSWER
        return labels[idx], None
    if negation_seen and negated:
        return None, NEGATED_ANSWER
    if both_seen:
        return None, AMBIGUOUS_ANSWER
    return None, UNRECOGNIZED_ANSWER


def _scan(text: str, pats: _Patterns):
    """One pass over the tags: the think regions and the answer slots (start, content, inside-think flag)."""
    kinds = pats.kinds
    think_regions: list[tuple[int, int, int]] = []  # (tag start, content start, content end)
    slots: list[tuple[int, str, bool]] = []
    think_start = think_content = None
    open_at = open_content = None
    open_inside = False
    for m in pats.tags.finditer(text):
        kind = kinds[m.group(0).lower()]
        if kind == "to":
            if think_start is None:
                think_start, think_content = m.start(), m.end()
        elif kind == "tc":
            if think_start is not None:
                think_regions.append((think_start, think_content, m.start()))
                think_start = None
        elif kind == "ao":
            open_at, open_content, open_inside = m.start(), m.end(), think_start is not None
        elif kind == "ac" and open_at is not None:
            slots.append((open_at, text[open_content : m.start()], open_inside))
            open_at = None
    if open_at is not None:  # an answer left open at the very end (generation stopped early), maybe in its closing tag
        content = text[open_content:]
        close = next(tag for tag, kind in kinds.items() if kind == "ac")
        for cut in range(len(close) - 1, 0, -1):
            if content[-cut:].lower() == close[:cut]:
                content = content[:-cut]
                break
        slots.append((open_at, content, open_inside))
    if think_start is not None:  # an unclosed rationale runs to the end
        think_regions.append((think_start, think_content, len(text)))
    return think_regions, slots


def _rationale(text: str, think_regions, answer_start: int) -> str:
    for start, content_start, content_end in think_regions:
        if start < answer_start:
            return text[content_start:content_end].strip()
        break
    return text[:answer_start].strip()


def _decide(readings: list[tuple[str | None, str | None]]) -> tuple[str | None, str | None]:
    found = {label for label, _ in readings if label is not None}
    if len(found) > 1:
        return None, CONFLICTING_ANSWERS
    if found:
        return found.pop(), None
    return None, readings[-1][1]


def parse_verdict(
    text: object,
    label_words: tuple[str, str] = ("A", "B"),
    answer_open: str = "<answer>",
    answer_close: str = "</answer>",
    think_open: str = "<think>",
    think_close: str = "</think>",
) -> Verdict:
    """Parse one judge output into a [`Verdict`].

    Args:
        text (`str`):
            The judge's output. Anything else gives ``failure="not_text"``; nothing raises.
        label_words (`tuple[str, str]`, *optional*, defaults to ``("A", "B")``):
            The two label words, first for the response shown first.
        answer_open, answer_close, think_open, think_close (`str`, *optional*):
            The tags of the answer slot and of the rationale.
    """
    if not isinstance(text, str):
        return Verdict(None, "", NOT_TEXT)
    try:
        labels = (str(label_words[0]), str(label_words[1]))
        pats = _patterns(answer_open, answer_close, think_open, think_close, labels)
        return _parse(text, labels, pats)
    except Exception:  # noqa: BLE001  (a parser bug must never stop a training or evaluation run)
        return Verdict(None, "", UNRECOGNIZED_ANSWER)


def _parse(text: str, labels: tuple[str, str], pats: _Patterns) -> Verdict:
    think_regions, slots = _scan(text, pats)
    if slots:
        final = [s for s in slots if not s[2]] or slots  # answers quoted in the rationale count only when alone
        label, failure = _decide([_read_slot(content, labels) for _, content, _ in final])
        return Verdict(label, _rationale(text, think_regions, final[0][0]), failure)

    # No answer tag: accept the "[[A]]" verdict style when it is unambiguous (outside the rationale first).
    brackets = list(pats.bracket.finditer(text))
    if brackets:
        ends = [end for _, _, end in think_regions]
        starts = [start for start, _, _ in think_regions]

        def inside(pos):
            return any(s <= pos < e for s, e in zip(starts, ends))

        outside = [m for m in brackets if not inside(m.start())] or brackets
        found = {(m.group(1) or m.group(2)).lower() for m in outside}
        rationale = _rationale(text, think_regions, outside[0].start())
        if len(found) > 1:
            return Verdict(None, rationale, CONFLICTING_ANSWERS)
        word = found.pop()
        return Verdict(next(w for w in labels if w.lower() == word), rationale, None)
    return Verdict(None, _rationale(text, think_regions, len(text)), NO_ANSWER)


def parse_with_template(text: object, template) -> Verdict:
    """[`parse_verdict`] with the tags and label words of a [`~trl_gram.templates.JudgeTemplate`]."""
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
    [`parse_verdict`] for rationales without tags. ``template`` gives the tags (GRAM-R²'s by default)."""
    if template is None:
        from .templates import GRAM_R2_TEMPLATE as template
    t = template
    return f"{t.think_open}\n{rationale.strip()}\n{t.think_close}\n{t.answer_open}\n{label}\n{t.answer_close}"
