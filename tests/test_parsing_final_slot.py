"""The verdict parser reads the final answer slot as a careful human would: quoted answers in the rationale, negations,
articles and filler words never become labels; it never raises and scales linearly (measured as a ratio)."""

import timeit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trl_gram.parsing import (
    AMBIGUOUS_ANSWER,
    CONFLICTING_ANSWERS,
    NEGATED_ANSWER,
    UNRECOGNIZED_ANSWER,
    _parse,
    _patterns,
    format_verdict,
    parse_verdict,
)


@pytest.mark.parametrize(
    "text,label,failure",
    [
        # The issue's cases.
        ("<think>The format is <answer>A or B</answer>. B wins.</think><answer>B</answer>", "B", None),
        ("<answer>Not B</answer>", None, NEGATED_ANSWER),
        ("<answer>I choose a response</answer>", None, UNRECOGNIZED_ANSWER),
        # Quoted answers inside the rationale.
        ("<think>I could write <answer>A</answer> but no.</think>\n<answer>\nB\n</answer>", "B", None),
        ("<think>x <answer>B</answer> y <answer>A</answer></think><answer>A</answer>", "A", None),
        ("<think>only here: <answer>A</answer>", "A", None),  # unclosed rationale, no other slot: read it
        ("<think>a</think><answer>A</answer><answer>B</answer>", None, CONFLICTING_ANSWERS),
        ("<think>[[A]] is the format</think> Verdict: [[B]]", "B", None),
        # Negations.
        ("<answer>not A</answer>", None, NEGATED_ANSWER),
        ("<answer>Response B isn't better</answer>", None, NEGATED_ANSWER),
        ("<answer>A, not B</answer>", "A", None),
        ("<answer>A is better; B is not.</answer>", "A", None),
        ("<answer>B, no doubt</answer>", "B", None),
        ("<answer>A. Not A.</answer>", None, AMBIGUOUS_ANSWER),
        # Articles and filler.
        ("<answer>A better response is the second one</answer>", None, UNRECOGNIZED_ANSWER),
        ("<answer>The answer is</answer>", None, UNRECOGNIZED_ANSWER),
        ("<answer>I would say a good one</answer>", None, UNRECOGNIZED_ANSWER),
        ("<answer>Assistant A's answer is better</answer>", "A", None),
        ("<answer>A is clearly better</answer>", "A", None),
        ("<answer>b</answer>", "B", None),
        ("<answer>Neither</answer>", None, AMBIGUOUS_ANSWER),
    ],
)
def test_final_slot_cases(text, label, failure):
    v = parse_verdict(text)
    assert (v.label, v.failure) == (label, failure)


def test_filler_label_words():
    assert parse_verdict("<answer>The better one is two</answer>", label_words=("one", "two")).label == "two"
    assert parse_verdict("<answer>Response one</answer>", label_words=("one", "two")).label == "one"


def test_rationale_of_quoting_output_is_the_think_block():
    v = parse_verdict("<think>The format is <answer>A or B</answer>. B wins.</think><answer>B</answer>")
    assert v.rationale == "The format is <answer>A or B</answer>. B wins."


def _time(text, number=1):
    return min(timeit.repeat(lambda: parse_verdict(text), number=number, repeat=5))


@pytest.mark.parametrize("unit", ["<answer>x ", "</answer>x", "<think><answer>A "])
def test_tag_floods_are_linear(unit):
    """10,000 unclosed ``<answer>`` tags in 100k characters (the issue's case) against ten times as many: linear
    costs about 10x, quadratic 100x (a ratio, not a wall-clock bound; the old parser took 51 s on the first)."""
    small, large = unit * 10_000, unit * 100_000
    assert parse_verdict(small).label in (None, "A")
    assert _time(large) / _time(small) < 40


def test_issue_flood_is_read():
    text = "<answer>x " * 10_000
    assert len(text) == 100_000 and parse_verdict(text).failure == UNRECOGNIZED_ANSWER
    assert parse_verdict(("<think><answer>A " * 5000) + "</think><answer>B").label == "B"


_words = st.lists(st.sampled_from(["response", "the", "is", "better", "a", "good", "one", "I", "think", "so", "x"]))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.sampled_from(["A", "B"]))
def test_quoted_answers_in_rationale_never_override_the_final_slot(decoy, label):
    text = f"<think>{decoy.replace('<', ' ')} <answer>{decoy[:20].replace('<', ' ')}</answer></think><answer>{label}</answer>"
    assert parse_verdict(text).label == label


@settings(max_examples=300, deadline=None)
@given(_words, st.sampled_from(["A", "B"]), _words)
def test_negated_label_is_never_the_verdict(before, label, after):
    text = "<answer>" + " ".join(before + ["not", label] + after) + "</answer>"
    assert parse_verdict(text).label != label


@settings(max_examples=300, deadline=None)
@given(_words)
def test_articles_and_filler_never_become_labels(words):
    assert parse_verdict("<answer>" + " ".join(words + ["a", "response"]) + "</answer>").label is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_inner_parser_never_raises(text):
    """The inner routine itself (not only the guarded public one) never raises."""
    pats = _patterns("<answer>", "</answer>", "<think>", "</think>", ("A", "B"))
    v = _parse(text, ("A", "B"), pats)
    assert (v.label is None) == (v.failure is not None)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="<>/answerthik AB\n[]", max_size=200))
def test_tag_soup_never_raises(text):
    pats = _patterns("<answer>", "</answer>", "<think>", "</think>", ("A", "B"))
    v = _parse(text, ("A", "B"), pats)
    assert v.label in (None, "A", "B")


def test_format_verdict_round_trip_still_holds():
    assert parse_verdict(format_verdict("A is wrong, not B.", "B")).label == "B"


# --- Outputs a careful reader reads without doubt (one property per class), still with no wrong letter ---------------
_label = st.sampled_from(["A", "B"])
_rationale = st.text(alphabet=st.characters(blacklist_characters="<"), max_size=200)
_plain = st.lists(st.sampled_from(["it", "is", "more", "accurate", "and", "clear", "the", "answer", "a", "so"]))


@settings(max_examples=200, deadline=None)
@given(_rationale, _label, st.integers(1, len("</answer>") - 1), st.sampled_from(["", "\n", " "]))
def test_a_closing_tag_cut_off_at_the_end_is_read(rationale, label, cut, space):
    text = f"<think>{rationale}</think>\n<answer>{space}{label}{space}{'</answer>'[:cut]}"
    assert parse_verdict(text).label == label


@settings(max_examples=200, deadline=None)
@given(_label, st.sampled_from(["because", "since", "as", "for", "with", "which", "but", "in"]), _plain)
def test_a_label_followed_by_a_lower_case_word_is_read(label, word, rest):
    assert parse_verdict("<answer>" + " ".join([label, word] + rest) + "</answer>").label == label


_FOREIGN = [
    "La respuesta {} es mejor.",
    "La réponse {} est meilleure",
    "Die Antwort {} ist besser",
    "Ответ {} лучше",
    "答案是{}",
    "{}更好。",
    "回答{}の方が良い",
    "{} es la mejor",
]
_FOREIGN_NEGATED = ["No es {}", "Nicht {}", "pas {}", "不是{}", "не {}"]


@settings(max_examples=200, deadline=None)
@given(_label, st.sampled_from(_FOREIGN))
def test_a_label_in_a_short_sentence_in_another_language_is_read(label, sentence):
    assert parse_verdict(f"<think>...</think><answer>{sentence.format(label)}</answer>").label == label


@settings(max_examples=200, deadline=None)
@given(_label, st.sampled_from(_FOREIGN_NEGATED))
def test_a_label_negated_in_another_language_is_never_the_verdict(label, sentence):
    assert parse_verdict(f"<answer>{sentence.format(label)}</answer>").label != label


@settings(max_examples=200, deadline=None)
@given(_label, st.sampled_from(["Response", "Output", "Option", "Answer", "Assistant", "Candidate"]), _plain)
def test_a_parenthesised_lower_case_label_after_a_noun_is_read(label, noun, rest):
    text = "<answer>" + " ".join([noun, f"({label.lower()})"] + rest) + "</answer>"
    assert parse_verdict(text).label == label
    assert parse_verdict(f"<answer>not {noun} ({label.lower()})</answer>").label != label


@settings(max_examples=200, deadline=None)
@given(
    _label,
    st.sampled_from(["\\boxed{{{}}}", "$\\boxed{{{}}}$", "\\(\\boxed{{\\text{{{}}}}}\\)", "$$\\boxed{{ {} }}$$"]),
)
def test_a_latex_boxed_label_is_read(label, boxed):
    answer = boxed.format(label)
    assert parse_verdict(f"<think>x</think><answer>{answer}</answer>").label == label
    assert parse_verdict(f"So the final answer is {answer}.").label == label  # no answer tag at all


@settings(max_examples=200, deadline=None)
@given(_label, st.lists(st.integers(0, 3), min_size=4, max_size=4))
def test_nul_bytes_around_the_slot_are_ignored(label, counts):
    a, b, c, d = ("\x00" * k for k in counts)
    assert parse_verdict(f"<think>x</think>{a}<answer>{b}{label}{c}</answer>{d}").label == label


@settings(max_examples=300, deadline=None)
@given(_words, _label, _words, st.sampled_from(["{}", "({})", "\\boxed{{{}}}", "{}\x00"]))
def test_negated_label_is_never_the_verdict_in_any_new_form(before, label, after, form):
    text = "<answer>" + " ".join(before + ["not", form.format(label)] + after) + "</answer>"
    assert parse_verdict(text).label != label
