"""The committed report is what its committed results file builds (no run folder needed)."""

import json
from pathlib import Path

from research.rlhf_miniature.report import arm_rows, write_report

HERE = Path(__file__).resolve().parents[1]


def test_committed_report_rebuilds_from_results(tmp_path):
    results = json.loads((HERE / "results.json").read_text())
    out = tmp_path / "report.md"
    write_report(results, out, text_path=HERE / "report_text.md")
    assert out.read_text() == (HERE / "report.md").read_text()
    assert (tmp_path / "rlhf_miniature_curves.png").stat().st_size > 10_000
    assert "{{" not in out.read_text()


def test_every_arm_starts_from_the_same_base_score():
    results = json.loads((HERE / "results.json").read_text())
    rows = arm_rows(results)
    assert {r["before"] for r in rows} == {results["base"]["accuracy"]}
    for arm, seeds in results["arms"].items():
        for seed, s in seeds.items():
            assert s["evals"][0]["rollout"] == 0 and s["evals"][-1]["rollout"] == results["config"]["max_steps"], (
                arm,
                seed,
            )
