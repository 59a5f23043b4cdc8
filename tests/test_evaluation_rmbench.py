"""RM-Bench's own files (THU-KEG/RM-Bench ``data/``) as its repository ships them, scored from its 3 x 3 matrix as
its README and ``scripts/utils.py`` define it; detection that never guesses between layouts that score differently;
every figure on screen named.

The fixtures are synthetic rows written in the repository's exact layouts: ``chat_filtered.json`` (``id, subset,
prompt, chosen, rejected, error_key, error``), ``code_filtered.json`` (``id, prompt, subset, language, task_id,
chosen, rejected``), ``math_filtered.json`` (as chat), ``safety-refuse_filtered.json`` and
``safety-response_filtered.json`` (``id, prompt, subset, chosen, rejected``): a JSON list, no ``domain`` column, three
responses each (concise, detailed plain, detailed markdown); ``total_dataset.json`` adds ``domain``. The scripted
judge prefers the response with the higher ``q<number>``.
"""

import json

import pytest
from eval_utils import ScriptedJudge, write_rows
from training_utils import make_model, make_tokenizer

from trl_gram import cli
from trl_gram.evaluation import DataError, read_eval_file
from trl_gram.evaluation.cli import evaluate_file
from trl_gram.evaluation.report import format_table
from trl_gram.judge import JudgeRun, combine_runs

# Qualities of (chosen, rejected) per row and domain: each gives a different 3 x 3 matrix.
QUALITIES = {
    "chat": [([2, 3, 4], [1, 3, 5]), ([9, 9, 9], [1, 1, 1])],
    "code": [([1, 2, 3], [4, 5, 6])],
    "math": [([5, 5, 1], [4, 4, 4]), ([3, 1, 6], [2, 2, 7])],
    "safety-refuse": [([7, 8, 9], [1, 2, 3])],
    "safety-response": [([1, 2, 3], [7, 8, 9]), ([2, 6, 4], [3, 5, 5])],
}
STYLES = ("short", "a detailed plain answer", "## a detailed markdown answer")


def _responses(qualities, kind):
    return [f"q{q} {kind} {style}" for q, style in zip(qualities, STYLES)]


def repository_rows(domain):
    """Rows of ``data/<domain>_filtered.json`` in that file's own column order."""
    rows = []
    for k, (c, r) in enumerate(QUALITIES[domain]):
        chosen, rejected, prompt = _responses(c, "right"), _responses(r, "wrong"), f"{domain} question {k}"
        if domain in ("chat", "math"):
            subset = {"chat": "alpacaeval", "math": "math-prm"}[domain]
            row = {"id": str(k), "subset": subset, "prompt": prompt, "chosen": chosen, "rejected": rejected}
            row.update({"error_key": "shoes", "error": "The rejected answer names shoes."})
        elif domain == "code":
            row = {"id": str(k), "prompt": prompt, "subset": "bigcode/humanevalpack", "language": "cpp"}
            row.update({"task_id": f"CPP/{k}", "chosen": chosen, "rejected": rejected})
        else:
            subset = "refusals-dangerous" if domain == "safety-refuse" else "xstest-should-respond"
            row = {"id": str(k), "prompt": prompt, "subset": subset, "chosen": chosen, "rejected": rejected}
        rows.append(row)
    return rows


def reference_accuracy(rows):
    """RM-Bench's rule, written from its README: a matrix of chosen style i beating rejected style j (strictly),
    summed over rows and divided by their number; hard = mean of the upper triangle, normal = the diagonal, easy =
    the lower triangle."""
    matrix = [[0.0] * 3 for _ in range(3)]
    for c, r in rows:
        for i in range(3):
            for j in range(3):
                matrix[i][j] += c[i] > r[j]
    matrix = [[v / len(rows) for v in line] for line in matrix]
    hard = sum(matrix[i][j] for i in range(3) for j in range(3) if i < j) / 3
    normal = sum(matrix[i][i] for i in range(3)) / 3
    easy = sum(matrix[i][j] for i in range(3) for j in range(3) if i > j) / 3
    return {"hard": hard, "normal": normal, "easy": easy}


def domain_of(name):
    return "safety" if name.startswith("safety") else name


def reference_total():
    """Per domain (safety-refuse and safety-response together), then means over the four domains."""
    per = {}
    for name, rows in QUALITIES.items():
        per.setdefault(domain_of(name), []).extend(rows)
    acc = {d: reference_accuracy(rows) for d, rows in per.items()}
    averages = {d: sum(a.values()) / 3 for d, a in acc.items()}
    levels = {k: sum(a[k] for a in acc.values()) / 4 for k in ("hard", "normal", "easy")}
    return acc, averages, levels, sum(averages.values()) / 4


def _evaluate(path, **kwargs):
    data = read_eval_file(str(path), **kwargs)
    return data, evaluate_file(ScriptedJudge(), data)


@pytest.mark.parametrize("domain", list(QUALITIES))
def test_each_per_domain_file_is_rm_bench_scored_from_its_matrix(tmp_path, domain):
    (tmp_path / "data").mkdir()
    path = write_rows(tmp_path / "data" / f"{domain}_filtered.json", repository_rows(domain), "json")
    data, report = _evaluate(path)
    assert data.format == "rm-bench" and len(data.comparisons) == 9 * len(QUALITIES[domain])
    want = reference_accuracy(QUALITIES[domain])
    d = domain_of(domain)
    got = {k: report["metrics"][f"{d}/{k}"] for k in ("hard", "normal", "easy")}
    assert got == pytest.approx(want)
    assert report["score"] == pytest.approx(sum(want.values()) / 3)
    assert report["score_name"] == f"RM-Bench {d} average (mean of its hard, normal and easy accuracies)"
    table = format_table(str(path), report)
    assert "RewardBench" not in table and f"Benchmark score, RM-Bench {d} average" in table


def test_the_total_file_gives_the_overall_and_the_difficulty_averages(tmp_path):
    total = [
        {**row, "domain": name} for name in QUALITIES for row in repository_rows(name)
    ]  # total_dataset.json: the per-domain rows with their domain
    data, report = _evaluate(write_rows(tmp_path / "total_dataset.json", total, "json"))
    acc, averages, levels, overall = reference_total()
    m = report["metrics"]
    assert data.format == "rm-bench"
    for d in averages:
        assert m[f"{d}/average"] == pytest.approx(averages[d])
        assert [m[f"{d}/{k}"] for k in ("hard", "normal", "easy")] == pytest.approx([acc[d][k] for k in acc[d]])
    assert [m[k] for k in ("hard", "normal", "easy")] == pytest.approx([levels[k] for k in levels])
    assert report["score"] == pytest.approx(overall)
    # RM-Bench's README: Overall = Domain Avg = Difficulty Avg.
    assert report["score"] == pytest.approx(sum(levels.values()) / 3)
    assert report["score_name"].startswith("RM-Bench Overall")
    assert "Benchmark score, RM-Bench Overall" in format_table("total_dataset.json", report)


def test_detection_never_guesses_between_layouts_that_score_differently(tmp_path):
    # Lists of responses, no domain, no RewardBench 2 subset name or column, not three and three: ask.
    rows = [{"id": 1, "prompt": "p", "chosen": ["q5"], "rejected": ["q1", "q2", "q3"], "subset": "mine"}]
    path = write_rows(tmp_path / "lists.json", rows, "json")
    with pytest.raises(DataError, match="--format rewardbench2 or --format rm-bench"):
        read_eval_file(str(path))
    assert read_eval_file(str(path), format="rewardbench2").format == "rewardbench2"
    # RewardBench 2's own layout is recognised (its subset names, its columns).
    rb2 = [
        {
            "id": "7",
            "prompt": "p",
            "chosen": ["q5"],
            "rejected": ["q1", "q2", "q3"],
            "num_correct": 1,
            "num_rejected": 3,
            "total_completions": 4,
            "models": ["m"] * 4,
            "subset": "Math",
            "additional_metadata": {},
        }
    ]
    assert read_eval_file(str(write_rows(tmp_path / "rb2.json", rb2, "json"))).format == "rewardbench2"
    # An RM-Bench per-domain file under another name is still RM-Bench; its rows are one domain named after it.
    renamed = write_rows(tmp_path / "my_copy.jsonl", repository_rows("chat"))
    data, report = _evaluate(renamed)
    assert data.format == "rm-bench" and report["score_name"].startswith("RM-Bench my_copy average")
    # A file of three and three whose subsets are RewardBench 2's is RewardBench 2.
    three = [{**repository_rows("chat")[0], "subset": "Focus"}]
    assert read_eval_file(str(write_rows(tmp_path / "focus.json", three, "json"))).format == "rewardbench2"


def test_a_per_domain_file_missing_a_response_names_row_and_column(tmp_path):
    rows = repository_rows("chat")
    rows[1]["rejected"] = rows[1]["rejected"][:2]
    path = write_rows(tmp_path / "chat_filtered.json", rows, "json")
    with pytest.raises(DataError, match="row 1, column `rejected`: has 2 responses; expected 3"):
        read_eval_file(str(path), format="rm-bench")


class LabelAgainstLogitsJudge(ScriptedJudge):
    """Reasoning-mode judge whose parsed labels are always right while its label-token probabilities lean the wrong
    way (0.2 for the better response): LLMBar's rule reads the labels, the pairwise accuracy the probabilities."""

    def judge(self, questions, responses_1, responses_2, swap="both", show_progress=None, **_):
        out = []
        for a in responses_1:
            first_better = "good" in a
            p1 = 0.2 if first_better else 0.8  # P(response_1 better), on the wrong side
            runs = [
                JudgeRun("AB", p1, "A" if first_better else "B"),
                JudgeRun("BA", 1 - p1, "B" if first_better else "A"),
            ]
            out.append(combine_runs(runs, ("A", "B")))
        return out


def test_llmbar_table_and_score_name_their_figures(tmp_path):
    """The issue's screen: the table said `accuracy 0.25` and the footer `LLMBar accuracy (averaged over the two
    orders): 0.5000`. The table's column now holds LLMBar's rule (the footer's figure) and says so; the
    probability-based pairwise figure is printed apart under its own name."""
    rows = [
        {"input": "i", "output_1": "good", "output_2": "bad", "label": 1},
        {"input": "i", "output_1": "bad", "output_2": "good", "label": 2},
    ]
    data = read_eval_file(str(write_rows(tmp_path / "llmbar.jsonl", rows)))
    report = evaluate_file(LabelAgainstLogitsJudge(), data)
    assert report["score"] == pytest.approx(1.0) and report["metrics"]["accuracy"] == pytest.approx(0.0)
    table = format_table("llmbar.jsonl", report).splitlines()
    assert table[1] == "accuracy column: LLMBar's rule (each order's accuracy, averaged over the two orders)"
    assert table[3].split()[:3] == ["all", "2", "1.0000"]
    assert any(line.split() == ["pairwise_accuracy", "0.0000"] for line in table)
    assert table[-1] == "Benchmark score, LLMBar accuracy (averaged over the two orders): 1.0000"


def test_per_domain_file_end_to_end_on_a_tiny_model(tmp_path, capsys):
    tok = make_tokenizer()
    make_model(tok).save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    (tmp_path / "data").mkdir()
    path = write_rows(tmp_path / "data" / "code_filtered.json", repository_rows("code"), "json")
    out_json = tmp_path / "out.json"
    rc = cli.main(
        ["eval", "--data", str(path), "--judge_model", str(tmp_path / "tiny"), "--mode", "direct"]
        + ["--output_json", str(out_json)]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "rm-bench" in out and "Benchmark score, RM-Bench code average" in out
    report = json.loads(out_json.read_text())[str(path)]
    m = report["metrics"]
    assert report["comparisons"] == 9 and report["score"] == pytest.approx(
        (m["code/hard"] + m["code/normal"] + m["code/easy"]) / 3
    )
