"""Templates are byte-identical to the released ones; the parser reads the usual variants, rejects ambiguity and
never raises."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trl_gram.parsing import (
    AMBIGUOUS_ANSWER,
    CONFLICTING_ANSWERS,
    EMPTY_ANSWER,
    NO_ANSWER,
    NOT_TEXT,
    UNRECOGNIZED_ANSWER,
    format_verdict,
    parse_verdict,
)
from trl_gram.templates import (
    GRAM_R2_PROMPT,
    GRAM_R2_TEMPLATE,
    GRAM_V1_PROMPT,
    GRAM_V1_TEMPLATE,
    JudgeTemplate,
    get_template,
    question_to_text,
    response_to_text,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "reference"

# Fingerprints of the released files, so the check holds without ../shared too.
R2_LEN, V1_LEN = 1925, 1010


def test_released_templates_are_byte_identical():
    assert len(GRAM_R2_PROMPT.encode()) == R2_LEN and len(GRAM_V1_PROMPT.encode()) == V1_LEN
    assert "Comparision:" in GRAM_R2_PROMPT  # the original spelling matters
    assert GRAM_V1_PROMPT.endswith("#Preferred: ")
    assert GRAM_R2_PROMPT.endswith("[The End of Assistant B's Response]")
    if SHARED.is_dir():
        assert (SHARED / "gram_r2_pairwise_prompt.txt").read_bytes() == GRAM_R2_PROMPT.encode()
        assert (SHARED / "gram_v1_direct_prompt.txt").read_bytes() == GRAM_V1_PROMPT.encode()


def test_fill_substitutes_each_placeholder_once_and_literally():
    text = GRAM_R2_TEMPLATE.fill("Q {response_2}", "first {user_input}", "second")
    expected = (
        GRAM_R2_PROMPT.replace("{user_input}", "\0q")
        .replace("{response_1}", "\0a")
        .replace("{response_2}", "\0b")
        .replace("\0q", "Q {response_2}")
        .replace("\0a", "first {user_input}")
        .replace("\0b", "second")
    )
    assert text == expected
    v1 = GRAM_V1_TEMPLATE.fill("q", "a", "b")
    assert v1.endswith("[The Start of Assistant B's Answer]\nb\n[The End of Assistant B's Answer]\n\n#Preferred: ")


def test_chat_template_wraps_prompt_as_one_user_message(tiny_judge, tokenizer):
    rendered = tiny_judge.render_prompt("What is 2+3?", "5", "6", mode="reason")
    filled = GRAM_R2_TEMPLATE.fill("What is 2+3?", "5", "6")
    assert rendered == tokenizer.apply_chat_template(
        [{"role": "user", "content": filled}], tokenize=False, add_generation_prompt=True
    )
    direct = tiny_judge.render_prompt("q", "a", "b", mode="direct")
    assert direct.startswith("<|im_start|>user\n" + GRAM_V1_TEMPLATE.fill("q", "a", "b"))
    assert direct.endswith("<|im_start|>assistant\n")


def test_custom_template_validation():
    with pytest.raises(ValueError, match="response_b"):
        JudgeTemplate(
            text="{input} {response_a}", question_field="input", first_field="response_a", second_field="response_b"
        )
    with pytest.raises(ValueError, match="label_words"):
        GRAM_R2_TEMPLATE.replace(label_words=("X", "X"))
    with pytest.raises(ValueError, match="template"):
        get_template("nope")
    custom = JudgeTemplate(
        text="Q:{q}\n1:{x}\n2:{y}\nBetter:",
        question_field="q",
        first_field="x",
        second_field="y",
        label_words=("1", "2"),
        reasoning=False,
    )
    assert custom.fill("a", "b", "c") == "Q:a\n1:b\n2:c\nBetter:"


def test_label_word_must_be_single_token(tiny_model, tokenizer):
    from trl_gram.judge import GramJudge

    template = GRAM_V1_TEMPLATE.replace(label_words=("Assistant-Alpha-Response", "B"))
    with pytest.raises(ValueError, match="single tokens"):
        GramJudge(tiny_model, tokenizer, mode="direct", template=template)


def test_conversational_rendering():
    conv = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is 2+2?"},
    ]
    text = question_to_text(conv)
    assert text == "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: What is 2+2?"
    assert question_to_text([{"role": "system", "content": "s"}, {"role": "user", "content": "only"}]) == "only"
    assert response_to_text([{"role": "assistant", "content": "4"}]) == "4"
    assert response_to_text([{"role": "assistant", "content": [{"type": "text", "text": "x"}]}]) == "x"
    with pytest.raises(ValueError, match="question"):
        question_to_text([{"role": "assistant", "content": "no user"}])
    with pytest.raises(ValueError, match="response"):
        response_to_text([{"content": "no role"}])


@pytest.mark.parametrize(
    "text,label,failure",
    [
        ("<think>\nok\n</think>\n<answer>\nA\n</answer>", "A", None),
        ("<think>x</think><answer>b</answer>", "B", None),
        ("<answer> Response A </answer>", "A", None),
        ("<ANSWER>\n**B**\n</ANSWER>", "B", None),
        ("<answer>[[A]]</answer>", "A", None),
        ("<answer>The better response is B.</answer>", "B", None),
        ("<answer>Response B is a better one</answer>", "B", None),
        ("reasoning...\n<answer>\nA", "A", None),  # missing closing tag at the end
        ("My verdict: [[B]]", "B", None),
        ("<answer>A</answer> ... <answer>A</answer>", "A", None),
        ("<answer>A or B</answer>", None, AMBIGUOUS_ANSWER),
        ("<answer>Both are good</answer>", None, AMBIGUOUS_ANSWER),
        ("<answer>A</answer><answer>B</answer>", None, CONFLICTING_ANSWERS),
        ("[[A]] then [[B]]", None, CONFLICTING_ANSWERS),
        ("<answer>\n</answer>", None, EMPTY_ANSWER),
        ("<answer>maybe</answer>", None, UNRECOGNIZED_ANSWER),
        ("no verdict at all", None, NO_ANSWER),
        ("", None, NO_ANSWER),
    ],
)
def test_parse_cases(text, label, failure):
    v = parse_verdict(text)
    assert (v.label, v.failure) == (label, failure)


def test_parse_rationale_and_non_text():
    v = parse_verdict("<think>\nFeedback: good\n</think>\n<answer>\nB\n</answer>")
    assert v.rationale == "Feedback: good"
    assert parse_verdict("plain reasoning <answer>A</answer>").rationale == "plain reasoning"
    assert parse_verdict(None).failure == NOT_TEXT
    assert parse_verdict(b"<answer>A</answer>").failure == NOT_TEXT


def test_custom_label_words():
    assert parse_verdict("<answer>2</answer>", label_words=("1", "2")).label == "2"
    assert parse_verdict("<answer>Output (a)</answer>", label_words=("a", "b")).label == "a"


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_parser_never_raises(text):
    v = parse_verdict(text)
    assert v.label in (None, "A", "B")
    assert (v.label is None) == (v.failure is not None)


_rationale = st.text(min_size=0, max_size=200).filter(lambda s: "<" not in s and ">" not in s and "[[" not in s)


@settings(max_examples=300, deadline=None)
@given(_rationale, st.sampled_from(["A", "B"]))
def test_parser_round_trips_well_formed_outputs(rationale, label):
    v = parse_verdict(format_verdict(rationale, label))
    assert v.label == label and v.failure is None
    assert v.rationale == rationale.strip()


def test_parser_scales_linearly():
    """A ratio, not a wall-clock bound: parsing 16x more text costs well under 16² = 256x the time."""
    import timeit

    unit = "Some long reasoning sentence with <tags> and [[brackets]]. "
    short = "<think>\n" + unit * 50 + "\n</think>\n<answer>\nA\n</answer>"
    long = "<think>\n" + unit * 800 + "\n</think>\n<answer>\nA\n</answer>"
    t_short = min(timeit.repeat(lambda: parse_verdict(short), number=20, repeat=5))
    t_long = min(timeit.repeat(lambda: parse_verdict(long), number=20, repeat=5))
    assert parse_verdict(long).label == "A"
    assert t_long / t_short < 64
