"""``trl-gram eval`` as a user meets it: every bad input of issue 15 gives an error naming file, row and column (exit
2, no traceback, before any model loads); nothing judged exits 1; a real end-to-end run on a tiny model writes the
table, the JSON (skipped rows by reason with row numbers) and the PNG."""

import json

import pytest
from eval_utils import write_rows
from training_utils import make_model, make_tokenizer

from trl_gram import cli
from trl_gram.evaluation import DataError, read_eval_file

MISSING_MODEL = "/nonexistent/judge-model"  # loading it would fail: errors must come before the model loads


def _run(argv, capsys):
    rc = cli.main(["eval", *argv])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out


def _bad(tmp_path, rows, capsys, name="bad.jsonl", kind="jsonl", extra=()):
    path = tmp_path / name
    if kind == "raw":
        path.write_text(rows)
    else:
        write_rows(path, rows, kind)
    rc, out = _run(["--data", str(path), "--judge_model", MISSING_MODEL, *extra], capsys)
    assert rc == 2, out
    assert str(path) in out.err
    return out.err


def test_llmbar_integer_labels_are_read(tmp_path):
    rows = [
        {"input": "i", "output_1": "a", "output_2": "b", "label": 1},
        {"input": "i", "output_1": "c", "output_2": "d", "label": 2},
    ]
    data = read_eval_file(str(write_rows(tmp_path / "llmbar.json", rows, "json")))
    assert data.format == "llmbar" and [c.label for c in data.comparisons] == [0, 1]


def test_bad_llmbar_label_names_row_and_column(tmp_path, capsys):
    rows = [
        {"input": "i", "output_1": "a", "output_2": "b", "label": 1},
        {"input": "i", "output_1": "a", "output_2": "b", "label": 3},
    ]
    err = _bad(tmp_path, rows, capsys)
    assert "row 1" in err and "column `label`" in err and "expected one of 1, 2" in err


def test_csv_whose_chosen_holds_numbers(tmp_path, capsys):
    err = _bad(tmp_path, "prompt,chosen,rejected\nq,1,0\nr,2,1\n", capsys, name="nums.csv", kind="raw")
    assert "column `chosen`" in err and "expected response text" in err


def test_csv_text_is_read(tmp_path):
    (tmp_path / "ok.csv").write_text('prompt,chosen,rejected\nq,"good, long answer",bad\nr,42 apples,none\n')
    data = read_eval_file(str(tmp_path / "ok.csv"))
    assert data.format == "preference" and data.comparisons[1].first == "42 apples"


def test_int_in_one_row(tmp_path, capsys):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": 5, "rejected": "b"}]
    err = _bad(tmp_path, rows, capsys)
    assert "row 1, column `chosen`: is a int (5)" in err and "expected the response text as a string" in err


def test_conversational_row_among_plain_ones_is_fine(tmp_path):
    rows = [
        {"prompt": "p", "chosen": "a", "rejected": "b"},
        {
            "prompt": [{"role": "user", "content": "p"}],
            "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}],
        },
    ]
    assert len(read_eval_file(str(write_rows(tmp_path / "mix.jsonl", rows))).comparisons) == 2


@pytest.mark.parametrize("rejected", [None, "missing"])
def test_hh_rlhf_missing_or_null_rejected(tmp_path, capsys, rejected):
    good = {"chosen": "\n\nHuman: hi\n\nAssistant: yes", "rejected": "\n\nHuman: hi\n\nAssistant: no"}
    bad = {"chosen": "\n\nHuman: hi\n\nAssistant: yes"}
    if rejected is None:
        bad["rejected"] = None
    err = _bad(tmp_path, [good, bad], capsys)
    assert "row 1, column `rejected`" in err and ("is null" in err or "missing" in err)


def test_non_string_prompt(tmp_path, capsys):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": {"text": "p"}, "chosen": "a", "rejected": "b"}]
    err = _bad(tmp_path, rows, capsys)
    assert "row 1, column `prompt`: is a dict" in err and "expected the prompt" in err


def test_every_problem_is_listed_and_skip_counts_them(tmp_path, capsys):
    rows = [
        {"prompt": "p", "chosen": "a", "rejected": None},
        {"prompt": 3, "chosen": "a", "rejected": "b"},
        {"prompt": "p", "chosen": "a", "rejected": "b"},
    ]
    path = write_rows(tmp_path / "many.jsonl", rows)
    with pytest.raises(DataError) as e:
        read_eval_file(str(path))
    assert "2 problem(s)" in str(e.value) and "row 0" in str(e.value) and "row 1" in str(e.value)
    data = read_eval_file(str(path), on_invalid="skip")
    assert data.skipped == {"invalid:rejected": [0], "invalid:prompt": [1]} and len(data.comparisons) == 1


def test_malformed_files_and_arguments(tmp_path, capsys):
    err = _bad(tmp_path, '{"prompt": "p"\n', capsys, name="broken.jsonl", kind="raw")
    assert "line 1 is not valid JSON" in err
    err = _bad(tmp_path, [{"prompt": "p", "chosen": "a"}], capsys, name="cols.jsonl")
    assert "column `rejected`: missing" in err
    rc, out = _run(["--judge_model", MISSING_MODEL], capsys)
    assert rc == 2 and "--data" in out.err
    rc, out = _run(["--data", str(tmp_path / "nope.json"), "--judge_model", MISSING_MODEL], capsys)
    assert rc == 2 and "no such file" in out.err
    good = write_rows(tmp_path / "g.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    rc, out = _run(["--data", str(good), "--preset", "nope", "--judge_model", MISSING_MODEL], capsys)
    assert rc == 2 and "Unknown `preset`" in out.err
    rc, out = _run(["--data", str(good), "--format", "rm-bench", "--judge_model", MISSING_MODEL], capsys)
    assert rc == 2 and "row 0, column `chosen`" in out.err and "list of response strings" in out.err


def test_nothing_to_judge_exits_non_zero(tmp_path, capsys):
    rows = [
        {
            "instruction": "i",
            "input": "",
            "response1": "a",
            "response2": "b",
            "annotator1": 0,
            "annotator2": 0,
            "annotator3": 1,
        }
    ]
    rc, out = _run(
        ["--data", str(write_rows(tmp_path / "ties.json", rows, "json")), "--judge_model", MISSING_MODEL], capsys
    )
    assert rc == 1 and "no pair to judge" in out.err and "'tie': 1" in out.err


def test_help_names_every_format(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for name in (
        "rewardbench",
        "rewardbench2",
        "rm-bench",
        "judgebench",
        "pandalm",
        "llmbar",
        "mt-bench",
        "hh-rlhf",
        "preference",
        "output_1",
        "annotator1",
        "conversation_a",
        "--plot",
        "--output_json",
        "label_scoring",
    ):
        assert name in text


def test_end_to_end_on_a_tiny_model(tmp_path, capsys):
    tok = make_tokenizer()
    make_model(tok).save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    rb = write_rows(
        tmp_path / "rb.jsonl",
        [
            {"prompt": "What is 2 + 3?", "chosen": "5", "rejected": "6", "subset": "alpacaeval-easy"},
            {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Berlin", "subset": "math-prm"},
            {"prompt": "Same?", "chosen": "x", "rejected": "x", "subset": "math-prm"},
        ],
    )
    rm = write_rows(
        tmp_path / "rm.json",
        [
            {
                "id": 1,
                "prompt": "2+2?",
                "chosen": ["4", "It is 4.", "**4**"],
                "rejected": ["5", "It is 5.", "**5**"],
                "domain": "math",
            },
        ],
        "json",
    )
    report, png = tmp_path / "out.json", tmp_path / "out.png"
    rc, out = _run(
        [
            "--data",
            str(rb),
            str(rm),
            "--judge_model",
            str(tmp_path / "tiny"),
            "--mode",
            "direct",
            "--output_json",
            str(report),
            "--plot",
            str(png),
        ],
        capsys,
    )
    assert rc == 0, out.err
    assert "alpacaeval-easy" in out.out and "RewardBench score" in out.out and "RM-Bench math average" in out.out
    assert "skipped (identical_responses): 1 row(s): 2" in out.out
    doc = json.loads(report.read_text())
    r = doc[str(rb)]
    assert r["format"] == "rewardbench" and r["comparisons"] == 2 and r["rows_evaluated"] == 2
    assert r["skipped"] == {"identical_responses": {"count": 1, "rows": [2]}}
    assert set(r["subsets"]) == {"alpacaeval-easy", "math-prm"} and 0.0 <= r["score"] <= 1.0
    m = doc[str(rm)]
    assert m["comparisons"] == 9 and {"hard", "normal", "easy", "math/average"} <= set(m["metrics"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r["judge"]["mode"] == "direct" and r["judge"]["label_scoring"] == "merged"  # no preset for this folder
    # Reasoning mode: the rationale is generated and parsed; unreadable outputs are counted, not fatal.
    rc, out = _run(
        [
            "--data",
            str(rb),
            "--judge_model",
            str(tmp_path / "tiny"),
            "--max_new_tokens",
            "4",
            "--output_json",
            str(report),
        ],
        capsys,
    )
    assert rc == 0, out.err
    r = json.loads(report.read_text())[str(rb)]
    assert r["judge"]["mode"] == "reason" and 0.0 <= r["metrics"]["parse_failure_rate"] <= 1.0


def test_saved_dataset_folder(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [{"input": "i", "output_1": "a", "output_2": "b", "label": 2}]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    assert read_eval_file(str(tmp_path / "one")).format == "llmbar"
    DatasetDict({"dev": Dataset.from_list(rows), "test": Dataset.from_list(rows * 2)}).save_to_disk(
        str(tmp_path / "two")
    )
    with pytest.raises(DataError, match="pick one with --split"):
        read_eval_file(str(tmp_path / "two"))
    assert len(read_eval_file(str(tmp_path / "two"), split="test").comparisons) == 2
