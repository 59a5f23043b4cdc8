"""Each denoising rule drops exactly what it should; reading and rewriting rationale conclusions."""

import pytest

from trl_gram.training.denoise import (
    RULES,
    Candidate,
    DenoiseRules,
    before_first_reference,
    check_candidate,
    denoise,
    first_sentences,
    rationale_label,
    swap_label_mentions,
)

GOOD = "Feedback: A is clear, B is vague.\nComparision: A answers.\nConclusion: Response A is better."


@pytest.mark.parametrize(
    "text,expected",
    [
        (GOOD, "A"),
        ("Comparision: Response A is short.\nConclusion: Response B is better.", "B"),
        ("Conclusion: I prefer Assistant B.", "B"),
        ("Response A is clearly better than Response B.", "A"),
        ("Output (b) is more helpful than output (a). Conclusion: [[B]]", "B"),
        ("Both are fine. Conclusion: it depends.", None),
        ("Conclusion: Response A and Response B are similar.", None),
        ("A good answer was given by both.", None),
        ("The better response is provided by the second response.", "B"),
        ("Conclusion: the first one is more helpful.", "A"),
        ("Both answer the question. The better response is B.", "B"),  # the bare verdict
        ("Conclusion: the better one is A, clearly.", "A"),
        ("Is A good one? It is a fair answer.", None),  # a bare letter that is no verdict
        ("", None),
    ],
)
def test_rationale_label(text, expected):
    assert rationale_label(text) == expected


def test_swap_label_mentions_keeps_articles():
    text = "Response A is a good answer, but Assistant B is better. B is better. [[B]]"
    assert swap_label_mentions(text) == "Response B is a good answer, but Assistant A is better. A is better. [[A]]"
    assert swap_label_mentions(swap_label_mentions(text)) == text
    assert swap_label_mentions("Response 1 wins", ("1", "2")) == "Response 2 wins"
    # the bare verdict names a response too; a letter that is no verdict stays
    verdict = "Is A good one? The better response is A."
    assert swap_label_mentions(verdict) == "Is A good one? The better response is B."
    assert swap_label_mentions("The winner is 2.", ("1", "2")) == "The winner is 1."
    assert (
        swap_label_mentions("The first response beats the second one.") == "The second response beats the first one."
    )


def count_words(text):
    return len(text.split())


RULES_CFG = DenoiseRules(min_vote_agreement=0.75, confidence_threshold=0.7, max_rationale_tokens=20)

CASES = {
    "kept": Candidate("A", 0.9, ["A", "A", "A", "A"], GOOD),
    "no label": Candidate(None, None, [None, None], None),
    "empty rationale": Candidate("A", 0.9, ["A", "A"], "   "),
    "tags left in the rationale": Candidate("A", 0.9, ["A", "A"], "ok </think> <answer>A"),
    "3 of 4 agree, one failed run": Candidate("A", 0.9, ["A", "A", "A", None], GOOD),
    "2 of 4 agree": Candidate("A", 0.9, ["A", "A", "B", None], GOOD),
    "tied vote": Candidate("A", 0.9, ["A", "B"], GOOD),
    "label is not the majority": Candidate("B", 0.9, ["A", "A", "A", "B"], GOOD),
    "low confidence": Candidate("A", 0.65, ["A", "A"], GOOD),
    "long rationale": Candidate("A", 0.9, ["A", "A"], GOOD + " more" * 10),
    "contradiction": Candidate("B", 0.9, ["B", "B"], GOOD),
    "concludes both ways": Candidate("B", 0.9, ["B", "B"], "B has cloud. Response B is better. Response A is better."),
    "no votes recorded, unknown confidence": Candidate("A", None, [], GOOD),
}
EXPECTED = {
    "kept": None,
    "no label": "malformed",
    "empty rationale": "malformed",
    "tags left in the rationale": "malformed",
    "3 of 4 agree, one failed run": None,
    "2 of 4 agree": "vote_disagreement",
    "tied vote": "vote_disagreement",
    "label is not the majority": "vote_disagreement",
    "low confidence": "low_confidence",
    "long rationale": "too_long",
    "contradiction": "unsupported",
    "concludes both ways": "unsupported",
    "no votes recorded, unknown confidence": None,
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_rule(name):
    assert check_candidate(CASES[name], RULES_CFG, count_tokens=count_words) == EXPECTED[name]


def test_denoise_counts_every_rule():
    reasons, counts = denoise(list(CASES.values()), RULES_CFG, count_tokens=count_words)
    assert reasons == list(EXPECTED.values())
    assert set(counts) == set(RULES) | {"kept"}
    assert counts == {
        "malformed": 3,
        "vote_disagreement": 3,
        "low_confidence": 1,
        "too_long": 1,
        "unsupported": 2,
        "kept": 3,
    }


def test_disabled_rules_pass():
    off = DenoiseRules(
        min_vote_agreement=0.0,
        confidence_threshold=None,
        max_rationale_tokens=None,
        check_support=False,
        require_rationale=False,
    )
    assert check_candidate(CASES["low confidence"], off) is None
    assert check_candidate(CASES["long rationale"], off) is None
    assert check_candidate(CASES["contradiction"], off) is None
    assert check_candidate(Candidate("A", 0.9, ["A"], None), off) is None
    assert check_candidate(CASES["tied vote"], off) == "vote_disagreement"  # by default a tie is never a label
    everything_off = DenoiseRules(**{**off.__dict__, "drop_tied_votes": False})
    assert check_candidate(CASES["tied vote"], everything_off) is None
    assert check_candidate(CASES["label is not the majority"], everything_off) is None
    assert check_candidate(CASES["no label"], everything_off) == "malformed"  # no label is still no label
    # drop_tied_votes=False only matters with the agreement share off
    half = DenoiseRules(**{**everything_off.__dict__, "min_vote_agreement": 0.5})
    assert check_candidate(CASES["tied vote"], half) == "vote_disagreement"


@pytest.mark.parametrize(
    "text,n,expected",
    [
        ("Response A is better. It is kind!  More.", 1, "Response A is better."),
        ("Response A is better. It is kind!  More.", 2, "Response A is better. It is kind!"),
        ("The better response is:\n\nThe better response is:\n\nThe", 1, "The better response is:"),
        ("\n\nHi there. Bye.", 1, "Hi there."),
        ("Version 1.2 is out. Next", 1, "Version 1.2 is out."),  # a period inside a word ends nothing
        ("No end here", 3, "No end here"),
        ("Two. Only", 5, "Two. Only"),
    ],
)
def test_first_sentences(text, n, expected):
    assert first_sentences(text, n) == expected


def test_first_sentences_needs_a_positive_count():
    with pytest.raises(ValueError, match="must be >= 1"):
        first_sentences("A.", 0)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The better response is Response B.", "The better response is"),
        ("It is polite, so the first response wins.", "It is polite, so"),
        ("Clearer and kind: [[A]] is better.", "Clearer and kind:"),
        ("Polite and correct. B is better.", "Polite and correct."),  # a bare label word in a preference phrase
        ("A good answer has a reason.", "A good answer has a reason."),  # the article "A" names nothing
        ("Response A is better.", ""),
        ("The better response is A.", "The better response is"),  # a bare label word given as the verdict
        ("The answer is A good one.", "The answer is A good one."),  # ... not an article
        ("No response named here.", "No response named here."),
    ],
)
def test_before_first_reference(text, expected):
    assert before_first_reference(text) == expected


def test_before_first_reference_reads_the_template_label_words():
    assert before_first_reference("Both are fine, but Output (2) is kinder.", ("1", "2")) == "Both are fine, but"
