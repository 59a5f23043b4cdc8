"""Rendering judge examples: A/B balance, bad rows, rationale rewriting, label words, truncation, loaders."""

import gzip
import json
from collections import Counter

import pytest
from datasets import Dataset
from training_utils import (
    SHORT_DIRECT_TEMPLATE,
    SHORT_REASON_TEMPLATE,
    make_model,
    make_tokenizer,
    reason_trainer,
    rule_rows,
    tiny_training_args,
)

from trl_gram.formats import load_pairs
from trl_gram.templates import GRAM_R2_TEMPLATE
from trl_gram.training.config import resolve_template
from trl_gram.training.judge_examples import (
    PRETRAIN_COMPLETION,
    JudgeExampleBuilder,
    as_unlabeled,
    assign_orders,
    build_judge_dataset,
    render_pairs,
    validate_pairs,
)
from trl_gram.training.trainer import GramRewardTrainer


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _args(tmp_path, **kw):
    return tiny_training_args(tmp_path, **kw)


@pytest.mark.parametrize("n", [1, 7, 40, 101])
def test_random_orders_are_exactly_balanced_and_seeded(n):
    orders = assign_orders(n, "random", seed=3)
    swapped = sum(o[0] for o in orders)
    assert n // 2 <= swapped <= n // 2 + 1
    assert orders == assign_orders(n, "random", seed=3)
    if n >= 40:
        assert orders != assign_orders(n, "random", seed=4)
    assert assign_orders(n, "both", 0) == [(False, True)] * n
    assert assign_orders(n, "none", 0) == [(False,)] * n


def test_rendered_labels_are_balanced(tok, tmp_path):
    rows = rule_rows(51, seed=0, with_rationale=True)
    for swap, expected in (("random", {25, 26}), ("both", {51})):
        trainer = reason_trainer(tok, _args(tmp_path, mode="reason", swap=swap), rows)
        counts = Counter(trainer.rendered_train_dataset["label"])
        assert counts[0] in expected and counts[1] in expected and counts[0] + counts[1] == len(trainer.train_dataset)
        # The chosen response is always the better one, whichever side it is shown on.
        for ex in trainer.rendered_train_dataset:
            row = rows[ex["row"]]
            better = ex["first"] if ex["label"] == 0 else ex["second"]
            assert better == row["chosen"]
            assert f"Response {'AB'[ex['label']]} is better." in ex["rationale"]


def test_balance_does_not_depend_on_the_input_orientation():
    """Rows already shown in a seeded random order (as self-training writes them) stay balanced when the trainer
    assigns orders with the same seed: the assignment targets the labels, not the input orientation."""
    pairs = [
        {"question": "q", "first": f"a{i}", "second": f"b{i}", "label": 0, "rationale": None, "row": i}
        for i in range(40)
    ]
    once = render_pairs(pairs, "random", 0)
    twice = render_pairs([{**p, "label": p["label"]} for p in once], "random", 0)
    assert Counter(p["label"] for p in once) == Counter(p["label"] for p in twice) == {0: 20, 1: 20}
    all_b = [{**p, "label": 1} for p in pairs]
    assert Counter(p["label"] for p in render_pairs(all_b, "random", 0)) == {0: 20, 1: 20}


def test_swapped_rationale_is_rewritten():
    pairs = [
        {
            "question": "q",
            "first": "x",
            "second": "y",
            "label": 0,
            "rationale": "Response A beats Response B. [[A]]",
            "row": 0,
        }
    ]
    shown = render_pairs(pairs, "both", 0)
    assert shown[0]["rationale"] == "Response A beats Response B. [[A]]" and shown[0]["label"] == 0
    assert shown[1]["rationale"] == "Response B beats Response A. [[B]]" and shown[1]["label"] == 1
    assert (shown[1]["first"], shown[1]["second"]) == ("y", "x")


BAD_ROWS = [
    ({"prompt": "q", "chosen": None, "rejected": "b"}, "missing_value", "`chosen` is empty"),
    ({"prompt": "q", "chosen": "  ", "rejected": "b"}, "empty_response", "`chosen` is empty"),
    ({"prompt": "q", "chosen": "a", "rejected": ""}, "empty_response", "`rejected` is empty"),
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "identical_responses", "identical"),
    (
        {"prompt": "q", "chosen": "a", "rejected": "b", "rationale": "Response B is better."},
        "contradicting_rationale",
        "concludes for 'B'",
    ),
]


@pytest.mark.parametrize("row,reason,message", BAD_ROWS)
def test_bad_rows_raise_naming_the_row_or_are_counted(row, reason, message):
    good = {"prompt": "q", "chosen": "a", "rejected": "b", "rationale": "Response A is better."}
    ds = Dataset.from_list([good, good, {**good, **row}])
    with pytest.raises(ValueError, match=rf"Row 2 of the train dataset: .*{message}"):
        validate_pairs(ds, rationale_column="rationale")
    pairs, skipped = validate_pairs(ds, rationale_column="rationale", on_invalid="skip")
    assert len(pairs) == 2 and skipped == {reason: 1}


def test_label_layout_and_bad_labels():
    rows = [
        {"prompt": "q", "response_a": "a", "response_b": "b", "label": "B"},
        {"prompt": "q", "response_a": "a", "response_b": "b", "label": "C"},
    ]
    with pytest.raises(ValueError, match=r"Row 1 .*`label` is 'C'"):
        validate_pairs(Dataset.from_list(rows))
    pairs, skipped = validate_pairs(Dataset.from_list(rows), on_invalid="skip")
    assert [p["label"] for p in pairs] == [1] and skipped == {"bad_label": 1}


def test_missing_columns_and_rationales_are_named():
    with pytest.raises(ValueError, match=r"missing the column\(s\) \['rejected'\]"):
        validate_pairs(Dataset.from_list([{"prompt": "q", "chosen": "a"}]))
    with pytest.raises(ValueError, match="no `label` column"):
        validate_pairs(Dataset.from_list([{"prompt": "q", "response_a": "a", "response_b": "b"}]))
    with pytest.raises(ValueError, match="rationale column `rationale`"):
        validate_pairs(
            Dataset.from_list([{"prompt": "q", "chosen": "a", "rejected": "b"}]),
            rationale_column="rationale",
            need_rationale=True,
        )


def test_conversational_and_implicit_prompt_rows():
    conv = [
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "hello"}],
            "rejected": [{"role": "assistant", "content": "go away"}],
        }
    ]
    pairs, _ = validate_pairs(Dataset.from_list(conv))
    assert pairs[0]["first"] == "hello" and pairs[0]["second"] == "go away"
    implicit = [
        {
            "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "bye"}],
        }
    ]
    pairs, _ = validate_pairs(Dataset.from_list(implicit))
    assert pairs[0]["question"] == [{"role": "user", "content": "hi"}] and pairs[0]["second"] == "bye"


def test_label_words_must_be_single_tokens(tok, tmp_path):
    template = SHORT_DIRECT_TEMPLATE.replace(label_words=("first", "second"))
    with pytest.raises(ValueError, match="single token"):
        GramRewardTrainer(
            make_model(tok),
            _args(tmp_path, mode="direct"),
            train_dataset=Dataset.from_list(rule_rows(4)),
            processing_class=tok,
            template=template,
        )


def test_template_and_mode_must_agree(tmp_path):
    assert resolve_template("gram-r2", "direct").direct_prefix  # the GRAM-R² prompt read directly
    with pytest.raises(ValueError, match="reasoning template"):
        resolve_template(SHORT_REASON_TEMPLATE, "direct")
    path = tmp_path / "t.txt"
    path.write_text("Q {input} A {response_a} B {response_b}")
    assert resolve_template(str(path), "direct").question_field == "input"
    with pytest.raises(ValueError, match="Unknown `template`"):
        resolve_template("no-such-template", "reason")


def test_reason_mode_needs_rationales(tok, tmp_path):
    with pytest.raises(ValueError, match="rationale column"):
        GramRewardTrainer(
            make_model(tok),
            _args(tmp_path, mode="reason"),
            train_dataset=Dataset.from_list(rule_rows(4)),
            processing_class=tok,
            template=SHORT_REASON_TEMPLATE,
        )


def test_rationale_max_sentences_trains_the_first_sentence_only(tok, tmp_path):
    rows = [
        {
            "prompt": f"q{i}",
            "chosen": f"good{i}",
            "rejected": f"bad{i}",
            "rationale": f"Response A is better. Response B is worse because {i}\nResponse A",
        }
        for i in range(4)
    ]
    trainer = reason_trainer(tok, _args(tmp_path, mode="reason", rationale_max_sentences=1), rows)
    for ex in trainer.train_dataset:
        target = tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100])
        assert "is better." in target and "worse" not in target
    rendered = trainer.rendered_train_dataset["rationale"]
    assert sorted(set(rendered)) == ["Response A is better.", "Response B is better."]  # B: a pair shown swapped
    with pytest.raises(ValueError, match="rationale_max_sentences"):
        _args(tmp_path, mode="reason", rationale_max_sentences=0)


def test_rationale_before_reference_leaves_the_choice_to_the_label_slot(tok, tmp_path):
    rationales = ["It is kind. The better response is Response A.", "Response A is better.", "Kind, so A is better."]
    rows = [
        {"prompt": f"q{i}", "chosen": f"good{i}", "rejected": f"bad{i}", "rationale": r}
        for i, r in enumerate(rationales * 2)
    ]
    args = _args(tmp_path, mode="reason", rationale_max_sentences=2, rationale_before_reference=True)
    trainer = reason_trainer(tok, args, rows)
    # The rationale stops before it names a response, in both orders; one opening with a reference is skipped
    assert sorted(set(trainer.rendered_train_dataset["rationale"])) == [
        "It is kind. The better response is",
        "Kind, so",
    ]
    assert trainer.data_stats["train"]["skipped"] == {"rationale_opens_with_reference": 2}
    # An empty rationale stays a bad row (named, or counted as missing), not a rationale that opens with a reference
    empty = [{"prompt": "q", "chosen": "good", "rejected": "bad", "rationale": " "}]
    with pytest.raises(ValueError, match="Row 0 .* `rationale` is empty"):
        validate_pairs(Dataset.from_list(empty), rationale_column="rationale", need_rationale=True,
                       rationale_before_reference=True)  # fmt: skip
    for ex in trainer.train_dataset:
        target = tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100])
        assert "Response" not in target and "better." not in target


def test_long_examples_are_cut_inside_the_responses(tok):
    builder = JudgeExampleBuilder(tok, GRAM_R2_TEMPLATE, "reason", max_length=1200, min_response_tokens=8)
    long = " ".join(["apple river stone"] * 300)
    pairs = [
        {"question": "q", "first": long, "second": "short", "label": 0, "rationale": "Response A is better.", "row": 0}
    ]
    ds, _, stats = build_judge_dataset(pairs, builder, "none", 0)
    assert stats["examples"] == 1 and len(ds[0]["input_ids"]) <= 1200
    text = tok.decode(ds[0]["input_ids"])
    assert "[The End of Assistant A's Response]" in text and text.endswith("</answer><|im_end|>")
    # A rationale that cannot fit even with empty responses is dropped and counted.
    pairs[0]["rationale"] = long
    ds, _, stats = build_judge_dataset(pairs, builder, "none", 0)
    assert stats["examples"] == 0 and stats["too_long"] == 1


def test_pretrain_format(tok):
    builder = JudgeExampleBuilder(tok, None, "pretrain", max_length=512)
    out = builder({"question": "What?", "first": "yes", "second": "no", "label": None, "rationale": None})
    start = next(i for i, lab in enumerate(out["labels"]) if lab != -100)
    assert tok.decode(out["input_ids"][:start]) == "[User Question]\nWhat?\n\n"
    assert tok.decode(out["input_ids"][start:]) == PRETRAIN_COMPLETION.format(first="yes", second="no") + tok.eos_token


def test_loaders(tmp_path):
    hh = tmp_path / "hh.jsonl.gz"
    with gzip.open(hh, "wt") as f:
        f.write(
            json.dumps(
                {
                    "chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant: Sure, one.",
                    "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant: No.",
                }
            )
            + "\n"
        )
    ds, info = load_pairs(str(hh))
    assert info["format"] == "hh-rlhf"
    assert ds[0]["prompt"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "joke?"},
    ]
    assert (ds[0]["chosen"], ds[0]["rejected"]) == ("Sure, one.", "No.")
    panda = tmp_path / "p.json"
    base = {"instruction": "Do", "input": "", "response1": "r1", "response2": "r2"}
    panda.write_text(
        json.dumps(
            [
                {**base, "annotator1": 2, "annotator2": 2, "annotator3": 1},
                {**base, "annotator1": 0, "annotator2": 0, "annotator3": 1},
                {**base, "annotator1": 1, "annotator2": True, "annotator3": 1},
            ]
        )
    )
    ds, info = load_pairs(str(panda))
    assert info["ties"] == 1 and [r["chosen"] for r in ds] == ["r2", "r1"]
    ds, info = load_pairs(str(panda), ties="keep")
    assert ds["tie"] == [False, True, False]
    jb = tmp_path / "jb.json"
    jb.write_text(
        json.dumps(
            [
                {
                    "pair_id": 1,
                    "original_id": 1,
                    "source": "livebench-math",
                    "response_model": "m",
                    "prompt": "p",
                    "chosen": "c",
                    "rejected": "r",
                }
            ]
        )
    )
    ds, info = load_pairs(str(jb), select="0:1")
    assert info["format"] == "judgebench" and ds[0]["subset"] == "math"
    un = as_unlabeled(Dataset.from_list(rule_rows(20)), seed=0)
    assert un.column_names == ["prompt", "response_a", "response_b"]
    with pytest.raises(ValueError, match="does not exist"):
        load_pairs(str(tmp_path / "missing.jsonl"))
