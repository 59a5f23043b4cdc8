"""Rule checks that denoise pseudo-labels (GRAM-R² self-training) and validate supplied rationales.

Each candidate pseudo-label goes through the rules in a fixed order and is dropped by the first one it fails; the
counts per rule are reported. The rules:

* ``malformed``: no run gave a readable label, or the rationale is empty or still carries answer/think tags.
* ``vote_disagreement``: the share of runs (votes × orders) that agree with the majority label is below
  ``min_vote_agreement`` (failed runs count as disagreeing), or the vote is tied.
* ``low_confidence``: the probability of the predicted label is below ``confidence_threshold``.
* ``too_long``: the rationale is longer than ``max_rationale_tokens`` tokens (words without a tokenizer).
* ``unsupported``: the rationale's conclusion names the other response as the better one, or prefers each of the two.

[`rationale_label`] (which response a rationale concludes for) and [`swap_label_mentions`] (rewrite a
rationale for the swapped order) read references such as "Response A", "Assistant B", "[[A]]", "A is better" or
"the second response".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

RULES = ("malformed", "vote_disagreement", "low_confidence", "too_long", "unsupported")

_NOUNS = r"(?:response|assistant|answer|output|option|candidate|model)"
_BETTER = (
    r"(?:better|superior|preferred|preferable|stronger|more\s+(?:helpful|accurate|appropriate|harmless|complete|"
    r"relevant|correct|precise)|the\s+(?:better|best|winner|preferred)(?:\s+\w+)?|wins)"
)


@dataclass(frozen=True)
class _RefPatterns:
    reference: re.Pattern  # "Response A", "Assistant (B)", "[[A]]"
    preference: re.Pattern  # "Response A is better", "A is clearly better", "prefer Response B"
    verdict: re.Pattern  # a bare label word given as the verdict: "The better response is A." (not "is A good one")


_ORDINALS = ("first", "second")


def _ref(words: str, tag: str) -> str:
    return (
        rf"(?:\b{_NOUNS}\s*[\(\[]?\s*(?P<n{tag}>{words})\s*[\)\]]?(?![A-Za-z0-9])"
        rf"|\[\[\s*(?P<b{tag}>{words})\s*\]\]"
        rf"|\b(?:the\s+)?(?P<o{tag}>first|second)\s+(?:{_NOUNS}|one)\b)"
    )


@lru_cache(maxsize=16)
def _ref_patterns(labels: tuple[str, str]) -> _RefPatterns:
    words = "|".join(re.escape(w) for w in labels)

    def bare(tag):
        return rf"(?<![A-Za-z0-9'])(?-i:(?P<w{tag}>{words}))(?![A-Za-z0-9'])"

    preference = re.compile(
        rf"(?:(?:{_ref(words, 1)}|{bare(1)})\s+(?:is|was|seems|appears|would\s+be|remains)\s+(?:\w+\s+){{0,2}}?"
        rf"{_BETTER}|(?:prefer|choose|select|pick|favou?r)\s+(?:{_ref(words, 2)}|{bare(2)}))",
        re.IGNORECASE,
    )
    verdict = re.compile(rf"(?<=\b(?:is|be)\s)\s*(?-i:(?P<v>{words}))(?=\s*(?:[.,;:!?)]|$))", re.IGNORECASE)
    return _RefPatterns(reference=re.compile(_ref(words, 0), re.IGNORECASE), preference=preference, verdict=verdict)


def _labels_in(matches, labels: tuple[str, str]) -> list[str]:
    found = []
    for m in matches:
        name, value = next(((k, v) for k, v in m.groupdict().items() if v), (None, None))
        if value is None:
            continue
        if name.startswith("o"):  # "the first response" / "the second one"
            found.append(labels[_ORDINALS.index(value.lower())])
            continue
        for w in labels:
            if value.lower() == w.lower():
                found.append(w)
    return found


def _conclusion(text: str) -> str:
    matches = list(re.finditer(r"conclusion\s*:?", text, re.IGNORECASE))
    if matches:
        return text[matches[-1].end() :]
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return paragraphs[-1] if paragraphs else text


def _stance(rationale: str | None, label_words: Sequence[str]) -> tuple[str | None, bool]:
    """``(label the rationale concludes for or None, whether its conclusion prefers each of the two responses)``."""
    if not rationale or not rationale.strip():
        return None, False
    labels = (str(label_words[0]), str(label_words[1]))
    pats = _ref_patterns(labels)
    conclusion = _conclusion(rationale)
    preferred = set(_labels_in(pats.preference.finditer(conclusion), labels))
    if len(preferred) == 1:
        return preferred.pop(), False
    named = set(_labels_in(pats.reference.finditer(conclusion), labels))
    named |= set(_labels_in(pats.verdict.finditer(conclusion), labels))
    if len(named) == 1 and not preferred:
        return named.pop(), False
    if preferred or named:
        return None, len(preferred) == 2
    everywhere = set(_labels_in(pats.preference.finditer(rationale), labels))
    return (everywhere.pop() if len(everywhere) == 1 else None), False


def rationale_label(rationale: str | None, label_words: Sequence[str] = ("A", "B")) -> str | None:
    """The label word a rationale concludes for, or ``None`` when it does not say clearly.

    The conclusion (the text after the last "Conclusion:", else the last paragraph) is read first: a single response
    named there (or given as the bare verdict "The better response is B."), or a single one named in a preference
    phrase ("Response B is better", "I prefer A"), decides. Failing that, preference phrases anywhere in the
    rationale decide when they all name the same response.
    """
    return _stance(rationale, label_words)[0]


def swap_label_mentions(text: str, label_words: Sequence[str] = ("A", "B")) -> str:
    """Rewrite a rationale for the swapped order: each reference to one response ("Response A", "[[A]]",
    "A is better", "prefer B", "the first response", the verdict "The better one is B.") names the other one.
    Other occurrences of the letters (the article "a", "is A good one") are untouched."""
    if not text:
        return text
    labels = (str(label_words[0]), str(label_words[1]))
    pats = _ref_patterns(labels)
    spans: dict[int, tuple[int, str]] = {}
    for pattern in (pats.reference, pats.preference, pats.verdict):
        for m in pattern.finditer(text):
            for name, value in m.groupdict().items():
                if value:
                    start, end = m.span(name)
                    spans[start] = (end, value)
    out, last = [], 0
    for start in sorted(spans):
        end, value = spans[start]
        if start < last:
            continue
        if value.lower() in _ORDINALS:
            other = _ORDINALS[1 - _ORDINALS.index(value.lower())]
            other = other.capitalize() if value[0].isupper() else other
        else:
            other = labels[1] if value.lower() == labels[0].lower() else labels[0]
            if value.islower() and len(other) == 1:
                other = other.lower()
        out.append(text[last:start])
        out.append(other)
        last = end
    out.append(text[last:])
    return "".join(out)


_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


def first_sentences(text: str, n: int) -> str:
    """The first ``n`` sentences of ``text`` (a sentence ends at ``.``, ``!`` or ``?`` before a space or the end, or
    at a line break; blank lines are skipped), stripped: a compact rationale whose end is a sentence end."""
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}.")
    text, taken, start = text.strip(), 0, 0
    for match in _SENTENCE_END.finditer(text):
        if not text[start : match.end()].strip():
            start = match.end()
            continue
        taken, start = taken + 1, match.end()
        if taken == n:
            return text[:start].strip()
    return text


def before_first_reference(text: str, label_words: Sequence[str] = ("A", "B")) -> str:
    """``text`` up to its first reference to a response ("Response B", "[[A]]", "the first response", "B is better",
    the verdict "is A."), stripped; the whole text when it names none, ``""`` when it opens with one. A rationale cut
    there leaves the choice of a response to the label slot that follows it."""
    pats = _ref_patterns((str(label_words[0]), str(label_words[1])))
    starts = [m.start() for p in (pats.reference, pats.preference, pats.verdict) if (m := p.search(text))]
    return (text[: min(starts)] if starts else text).strip()


_TAGS = re.compile(r"</?(?:think|answer)>", re.IGNORECASE)


@dataclass
class Candidate:
    """One pseudo-label to check.

    Attributes:
        label: The predicted label word, in the orientation the rationale uses (``None``: no run parsed).
        confidence: Probability of ``label`` (``None``: unknown, the confidence rule passes).
        votes: Label word of every run, in the same orientation (``None`` for a run that failed).
        rationale: The rationale kept for the example (``None`` when rationales come later, from a prover).
    """

    label: str | None
    confidence: float | None = None
    votes: list[str | None] = field(default_factory=list)
    rationale: str | None = None


@dataclass
class DenoiseRules:
    """Thresholds of the rules (see the module docstring). A rule with a ``None``/disabled setting always passes."""

    min_vote_agreement: float = 0.5
    confidence_threshold: float | None = None
    max_rationale_tokens: int | None = None
    check_support: bool = True
    require_rationale: bool = True
    drop_tied_votes: bool = True
    """When ``False`` (denoising off), a tied vote or a label that is not the vote majority passes: the label stands as
    predicted (from the averaged probability), as a judge without any filter would give it."""


def check_candidate(
    cand: Candidate,
    rules: DenoiseRules,
    label_words: Sequence[str] = ("A", "B"),
    count_tokens: Callable[[str], int] | None = None,
) -> str | None:
    """The first rule ``cand`` fails (one of [`RULES`]), or ``None`` when it is kept."""
    if cand.label is None:
        return "malformed"
    if rules.require_rationale and (cand.rationale is None or not cand.rationale.strip()):
        return "malformed"
    if cand.rationale and _TAGS.search(cand.rationale):
        return "malformed"
    if cand.votes and (rules.drop_tied_votes or rules.min_vote_agreement > 0):
        counts = Counter(v for v in cand.votes if v is not None)
        top = counts.most_common(2)
        if not top or (len(top) == 2 and top[0][1] == top[1][1]) or top[0][0] != cand.label:
            return "vote_disagreement"
        if top[0][1] / len(cand.votes) < rules.min_vote_agreement:
            return "vote_disagreement"
    if rules.confidence_threshold is not None and cand.confidence is not None:
        if cand.confidence < rules.confidence_threshold:
            return "low_confidence"
    if rules.max_rationale_tokens is not None and cand.rationale:
        length = count_tokens(cand.rationale) if count_tokens is not None else len(cand.rationale.split())
        if length > rules.max_rationale_tokens:
            return "too_long"
    if rules.check_support and cand.rationale:
        said, both = _stance(cand.rationale, label_words)
        if both or (said is not None and said != cand.label):
            return "unsupported"
    return None


def denoise(
    candidates: Sequence[Candidate],
    rules: DenoiseRules,
    label_words: Sequence[str] = ("A", "B"),
    count_tokens: Callable[[str], int] | None = None,
) -> tuple[list[str | None], dict[str, int]]:
    """Check every candidate. Returns the drop reason of each (``None`` = kept) and the count per rule (every rule
    listed, zeros included, plus ``"kept"``)."""
    reasons = [check_candidate(c, rules, label_words, count_tokens) for c in candidates]
    counts = {rule: 0 for rule in RULES}
    for r in reasons:
        if r is not None:
            counts[r] += 1
    counts["kept"] = sum(r is None for r in reasons)
    return reasons, counts
