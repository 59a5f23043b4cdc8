"""Each benchmark's official aggregate on a hand-computed case (scripted judge: the math, not a model)."""

import pytest
from eval_utils import ScriptedJudge, write_rows

from trl_gram.evaluation import read_eval_file
from trl_gram.evaluation.cli import evaluate_file


def _eval(tmp_path, rows, name="data.jsonl", **kwargs):
    data = read_eval_file(str(write_rows(tmp_path / name, rows)), **kwargs)
    return data, evaluate_file(ScriptedJudge(), data)


def test_rewardbench_sections_use_the_official_weights(tmp_path):
    def row(subset, c, r):
        return {"prompt": "p", "chosen": f"q{c}", "rejected": f"q{r}", "subset": subset}

    rows = [
        row("alpacaeval-easy", 5, 1),
        row("alpacaeval-easy", 1, 5),
        row("mt-bench-easy", 5, 1),
        row("math-prm", 5, 1),
        row("hep-python", 1, 5),
        row("hep-python", 2, 5),
    ]
    data, rep = _eval(tmp_path, rows)
    assert data.format == "rewardbench"
    assert rep["subsets"]["alpacaeval-easy"]["accuracy"] == 0.5
    chat = (0.5 * 100 + 1.0 * 28) / 128
    reasoning = (1.0 * 984 + 0.0 * 164) / (984 + 164)
    assert rep["metrics"]["section/Chat"] == pytest.approx(chat)
    assert rep["metrics"]["section/Reasoning"] == pytest.approx(reasoning)
    assert rep["score"] == pytest.approx((chat + reasoning) / 2)


def test_rewardbench2_best_of_n_and_ties(tmp_path):
    rows = [
        {"id": "1", "prompt": "p", "chosen": ["q5"], "rejected": ["q1", "q2", "q3"], "subset": "Math"},
        {"id": "2", "prompt": "p", "chosen": ["q2"], "rejected": ["q1", "q3", "q0"], "subset": "Math"},
        {"id": "3", "prompt": "p", "chosen": ["q3 a"], "rejected": ["q3 b", "q1"], "subset": "Math"},  # a tie: 1/2
        {"id": "ref:1", "prompt": "p", "chosen": ["q5"], "rejected": ["q1", "q2"], "subset": "Ties"},
        {"id": "tied:1", "prompt": "p", "chosen": ["q5", "q4"], "rejected": ["q3", "q1"], "subset": "Ties"},
        {"id": "tied:2", "prompt": "p", "chosen": ["q5", "q1"], "rejected": ["q2"], "subset": "Ties"},
    ]
    data, rep = _eval(tmp_path, rows)
    assert data.format == "rewardbench2" and len(data.comparisons) == 3 + 3 + 2 + 2 + 4 + 2
    assert rep["subsets"]["Math"]["accuracy"] == pytest.approx(0.5)  # (1 + 0 + 1/2) / 3
    assert rep["metrics"]["ties/ref_accuracy"] == 1.0 and rep["metrics"]["ties/tied_accuracy"] == 0.5
    assert rep["subsets"]["Ties"]["accuracy"] == pytest.approx(0.75)
    assert rep["score"] == pytest.approx(0.625)


def test_rmbench_hard_normal_easy(tmp_path):
    def row(domain, c, r):
        return {
            "id": 0,
            "prompt": "p",
            "chosen": [f"q{x} c" for x in c],
            "rejected": [f"q{x} r" for x in r],
            "domain": domain,
        }

    rows = [
        row("chat", [2, 3, 4], [1, 3, 5]),
        row("safety-refuse", [7, 8, 9], [1, 2, 3]),
        row("safety-response", [1, 2, 3], [7, 8, 9]),
    ]
    data, rep = _eval(tmp_path, rows)
    m = rep["metrics"]
    # chat matrix (chosen i beats rejected j, strictly): [[1,0,0],[1,0,0],[1,1,0]]
    assert (m["chat/hard"], m["chat/normal"], m["chat/easy"]) == pytest.approx((0.0, 1 / 3, 1.0))
    assert m["safety/average"] == pytest.approx(0.5)  # safety-refuse and safety-response together
    assert (m["hard"], m["normal"], m["easy"]) == pytest.approx((0.25, 5 / 12, 0.75))
    assert rep["score"] == pytest.approx((4 / 9 + 0.5) / 2)
    # GRAM's flattened copy (one row per cell, matrix_id "i-j") gives the same figures.
    flat = [
        {
            "id": k,
            "prompt": "p",
            "chosen": r["chosen"][i],
            "rejected": r["rejected"][j],
            "domain": r["domain"],
            "matrix_id": f"{i}-{j}",
        }
        for k, r in enumerate(rows)
        for i in range(3)
        for j in range(3)
    ]
    data, flat_rep = _eval(tmp_path, flat, name="flat.jsonl")
    assert data.format == "rm-bench" and flat_rep["score"] == pytest.approx(rep["score"])
    assert flat_rep["metrics"]["hard"] == pytest.approx(0.25)


def test_judgebench_counts_decisions_of_both_orders(tmp_path):
    rows = [
        {
            "pair_id": "1",
            "source": "mmlu-pro-law",
            "question": "q",
            "response_A": "q5",
            "response_B": "q1",
            "label": "A>B",
        },
        {
            "pair_id": "2",
            "source": "livebench-math",
            "question": "q",
            "response_A": "q5",
            "response_B": "q1",
            "label": "B>A",
        },
        {
            "pair_id": "3",
            "source": "mmlu-pro-x",
            "question": "q",
            "response_A": "q5 biased",
            "response_B": "q1",
            "label": "A>B",
        },
    ]
    data, rep = _eval(tmp_path, rows)
    assert data.format == "judgebench"
    assert rep["subsets"]["knowledge"]["accuracy"] == 0.5 and rep["subsets"]["math"]["accuracy"] == 0.0
    assert rep["score"] == pytest.approx(1 / 3)  # the biased pair (+1 - 1 = 0) is not right
    assert rep["metrics"]["accuracy"] == pytest.approx(0.5)  # by probability it would count half
    gram = [{"pair_id": "1", "source": "livecodebench", "prompt": "q", "chosen": "q3", "rejected": "q2"}]
    data, rep = _eval(tmp_path, gram, name="gram.json")
    assert data.format == "judgebench" and rep["subsets"]["coding"]["accuracy"] == 1.0


def test_pandalm_accuracy_and_macro_f1(tmp_path):
    def row(r1, r2, votes):
        return {
            "idx": 0,
            "instruction": "i",
            "input": "",
            "response1": f"q{r1}",
            "response2": f"q{r2}",
            **{f"annotator{k + 1}": v for k, v in enumerate(votes)},
        }

    rows = [row(5, 1, [1, 1, 2]), row(5, 1, [2, 2, 0]), row(5, 1, [1, 2, 0]), row(1, 5, [2, 2, 2])]
    data, rep = _eval(tmp_path, rows)
    assert data.skipped == {"tie": [2]}
    m = rep["metrics"]
    assert m["pandalm/accuracy"] == pytest.approx(2 / 3)
    assert (m["pandalm/precision"], m["pandalm/recall"], m["pandalm/f1"]) == pytest.approx((0.75, 0.75, 2 / 3))
    kept, rep = _eval(tmp_path, rows, name="k.jsonl", ties="keep")
    assert len(kept.comparisons) == 4 and rep["metrics"]["pandalm/accuracy"] == pytest.approx(0.5)


def test_llmbar_accuracy_averaged_over_orders(tmp_path):
    rows = [
        {"input": "i", "output_1": "q5", "output_2": "q1", "label": 1},
        {"input": "i", "output_1": "q5 biased", "output_2": "q9", "label": 2},
    ]
    data, rep = _eval(tmp_path, rows)
    assert data.format == "llmbar" and [c.label for c in data.comparisons] == [0, 1]
    assert rep["score"] == pytest.approx(0.75)  # order AB: 1/2, order BA: 2/2
    assert rep["metrics"]["positional_agreement"] == pytest.approx(0.5)
    assert rep["metrics"]["llmbar/correct_both"] == pytest.approx(0.5)


def test_mtbench_agreement_without_ties(tmp_path):
    def conv(a1, a2):
        return [
            {"role": "user", "content": "u1"},
            {"role": "assistant", "content": a1},
            {"role": "user", "content": "u2"},
            {"role": "assistant", "content": a2},
        ]

    rows = [
        {
            "question_id": 1,
            "turn": 1,
            "winner": "model_a",
            "conversation_a": conv("q5", "x"),
            "conversation_b": conv("q1", "y"),
        },
        {
            "question_id": 1,
            "turn": 2,
            "winner": "model_b",
            "conversation_a": conv("x", "q5"),
            "conversation_b": conv("y", "q1"),
        },
        {
            "question_id": 2,
            "turn": 1,
            "winner": "tie",
            "conversation_a": conv("q5", "x"),
            "conversation_b": conv("q1", "y"),
        },
        {
            "question_id": 3,
            "turn": 2,
            "winner": "model_b",
            "conversation_a": conv("x", "q1"),
            "conversation_b": conv("y", "q5"),
        },
    ]
    data, rep = _eval(tmp_path, rows)
    assert data.format == "mt-bench" and data.skipped == {"tie": [2]}
    assert len(data.comparisons[1].question) == 3  # turn 2 is judged with the first turn as context
    assert rep["subsets"]["turn 1"]["accuracy"] == 1.0 and rep["subsets"]["turn 2"]["accuracy"] == 0.5
    assert rep["score"] == pytest.approx(2 / 3)


def test_hh_rlhf_and_preference_accuracy(tmp_path):
    hh = [
        {"chosen": "\n\nHuman: hi\n\nAssistant: q5 yes", "rejected": "\n\nHuman: hi\n\nAssistant: q1 no"},
        {"chosen": "\n\nHuman: hi\n\nAssistant: q1 no", "rejected": "\n\nHuman: hi\n\nAssistant: q5 yes"},
    ]
    data, rep = _eval(tmp_path, hh)
    assert data.format == "hh-rlhf" and data.comparisons[0].question == [{"role": "user", "content": "hi"}]
    assert rep["score"] == 0.5
    conv = [
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "q3"}],
            "rejected": [{"role": "assistant", "content": "q2"}],
            "subset": "s1",
        },
        {"prompt": "plain", "chosen": "q1 a", "rejected": "q1 b", "subset": "s2"},  # equal quality: half
    ]
    data, rep = _eval(tmp_path, conv, name="c.jsonl")
    assert data.format == "preference" and rep["subsets"]["s1"]["accuracy"] == 1.0
    assert rep["subsets"]["s2"]["accuracy"] == 0.5 and rep["score"] == 0.75
