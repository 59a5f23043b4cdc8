"""The analysis scripts of the reproduction report (research/reproduction/analysis/*_quality.py) on hand-made rows."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ANALYSIS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_rationale_quality_counts_conclusions_and_facts(tmp_path):
    pair = {"prompt": "Which number is larger, 84 or 78?", "response_a": "78 is larger than 84."}
    rows = [
        {**pair, "label": "B", "rationale": "84 is larger than 78. Response B is better."},  # label, true
        {**pair, "label": "B", "rationale": "78 is larger than 84, so Response A is better."},  # other, false
        {**pair, "label": "A", "rationale": "Abc, nothing to say."},  # neither, none
    ]
    path = _write(tmp_path / "kept.jsonl", rows)
    counts = _script("rationale_quality").main([path])[path]
    assert counts == {
        "rows": 3,
        "concludes_label": 1,
        "concludes_other": 1,
        "concludes_neither": 1,
        "fact_true": 1,
        "fact_false": 1,
        "fact_none": 1,
    }
    bad = _write(tmp_path / "bad.jsonl", [{**pair, "label": "B"}])
    with pytest.raises(ValueError, match="row 0"):
        _script("rationale_quality").main([bad])


def test_pseudo_label_quality_scores_labels_with_the_oracle(tmp_path):
    a, b = "84 is larger than 78.", "78 is larger than 84."
    rows = [
        {"response_a": a, "response_b": b, "label": "A", "confidence": 0.9, "votes": ["A", "A"]},  # right, agree
        {"response_a": b, "response_b": a, "label": "A", "confidence": 0.6, "votes": ["A", "B"]},  # wrong
        {"response_a": b, "response_b": a, "label": "B", "confidence": 0.55, "votes": ["B", "B"]},  # right, agree
        {"response_a": a, "response_b": b, "label": "B", "confidence": 0.52, "votes": ["A", "B"]},  # wrong
    ]
    out = _script("pseudo_label_quality").main([_write(tmp_path / "p.jsonl", rows), "--fractions", "0.5,1"])
    assert out["candidates"] == 4 and out["right"] == 2
    assert out["orders_agree"] == {"n": 2, "right": 2}
    assert out["top_0.5"]["n"] == 2 and out["top_0.5"]["right"] == 1  # margins 0.4 (right) and 0.1 (wrong)


def test_oracle_judge_check_scores_copies_and_verdicts():
    score = _script("oracle_judge_check").score_rationale
    shown = ("78 is larger than 84.", "84 is larger than 78.")
    right = (
        "Response A says: 78 is larger than 84. This is false. Response B says: 84 is larger than 78. This is true."
    )
    assert score(right, shown) == {
        "format": True,
        "copied": True,
        "verdicts_right": True,
        "verdicts": ("false", "true"),
    }
    flipped = right.replace("This is false", "This is X").replace("This is true", "This is false")
    flipped = flipped.replace("This is X", "This is true")
    assert score(flipped, shown)["verdicts_right"] is False and score(flipped, shown)["copied"] is True
    miscopied = right.replace("says: 84 is larger than 78.", "says: 48 is larger than 78.")
    assert score(miscopied, shown)["copied"] is False
    assert score("Response B is better.", shown)["format"] is False
