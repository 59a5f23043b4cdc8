"""A pair dropped because it cannot fit ``max_length`` is explained by what does not fit: in direct mode there is no
rationale to blame."""

from training_utils import make_tokenizer

from trl_gram.templates import GRAM_R2_TEMPLATE, GRAM_V1_TEMPLATE
from trl_gram.training import judge_examples as data


def _warnings(monkeypatch, builder, rationale=None):
    said = []
    monkeypatch.setattr(data.logger, "warning", lambda msg, *a, **k: said.append(msg))
    pairs = [{"question": "q " * 50, "first": "a", "second": "b", "label": 0, "rationale": rationale, "row": 0}]
    _, _, stats = data.build_judge_dataset(pairs, builder, "none", 0)
    assert stats["too_long"] == 1
    return " ".join(said)


def test_direct_mode_drop_does_not_blame_a_rationale(monkeypatch):
    tok = make_tokenizer()
    builder = data.JudgeExampleBuilder(tok, GRAM_V1_TEMPLATE, "direct", max_length=64, min_response_tokens=1)
    text = _warnings(monkeypatch, builder)
    assert "rationale" not in text and "template and question alone exceed it" in text and "max_length`=64" in text


def test_reason_mode_drop_names_the_rationale(monkeypatch):
    tok = make_tokenizer()
    builder = data.JudgeExampleBuilder(tok, GRAM_R2_TEMPLATE, "reason", max_length=64, min_response_tokens=1)
    assert "rationale" in _warnings(monkeypatch, builder, rationale="Response A is better.")
