"""The whole harness once on a random tiny model (1 rollout per arm): the judge is trained and measured, every arm
trains through its real trainer ([`~trl.GRPOTrainer`], [`~trl_gram.ppo.GramPPOTrainer`]), finished arms are skipped
on rerun, and the report rebuilds identical from its compact results file."""

import json

import pytest

from research.rlhf_miniature.config import ARMS, MiniatureConfig
from research.rlhf_miniature.report import compact, write_report
from research.rlhf_miniature.runner import collect, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tiny_models import tiny_llama, tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny")
    tok = tiny_tokenizer()
    tiny_llama(tok, hidden=32, layers=1).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return str(path)


def test_every_arm_end_to_end(tiny_dir, tmp_path):
    cfg = MiniatureConfig(
        output_dir=str(tmp_path / "run"),
        policy_name_or_path=tiny_dir,
        judge_name_or_path=tiny_dir,
        arms=list(ARMS),
        seeds=[0],
        sizes={"judge_train": 4, "judge_test": 4, "rl": 8, "eval": 3},
        judge_epochs=1,
        judge_batch_size=4,
        judge_max_length=256,
        max_steps=1,
        prompts_per_step=2,
        num_generations=2,
        ppo_epochs=2,
        max_completion_length=4,
        eval_max_new_tokens=4,
        eval_every=1,
    )
    out = run(cfg)
    judge = out["judge"]
    assert judge["test_kinds"] and sum(judge["test_kinds"].values()) == 4
    assert 0.0 <= judge["trained"]["accuracy"] <= 1.0 and 0.0 <= judge["zero_shot"]["accuracy"] <= 1.0
    for arm in ARMS:
        result = out["arms"][arm]["0"]
        per = 2 if arm == "ppo_greedy" else 1
        assert result["steps"] == per and result["steps_per_rollout"] == per
        # every arm starts from the same measured base policy and ends with an oracle evaluation
        assert result["evals"][0]["accuracy"] == out["base"]["accuracy"] and result["evals"][0]["step"] == 0
        assert result["evals"][-1]["step"] == per and result["evals"][-1]["n"] == 3
        assert 0.0 <= result["evals"][-1]["judge_win_vs_base"] <= 1.0 and len(result["evals"][-1]["answers"]) == 3
        assert result["logs"] and all("reward" in row for row in result["logs"])
        assert result["seconds"]["judge"] >= 0.0 and 0.0 <= result["seconds"]["judge_share_of_step"] <= 1.0
    kl_keys = {k for row in out["arms"]["grpo_group"]["0"]["logs"] for k in row}
    assert "kl" in kl_keys and "judge_seconds" in kl_keys

    # a rerun skips every finished arm: nothing is retrained, the results come back as they were
    stamps = {arm: (tmp_path / "run" / "seed0" / arm / "result.json").stat().st_mtime_ns for arm in ARMS}
    again = run(cfg)
    assert {arm: (tmp_path / "run" / "seed0" / arm / "result.json").stat().st_mtime_ns for arm in ARMS} == stamps
    assert again["arms"]["grpo_oracle"]["0"]["evals"] == out["arms"]["grpo_oracle"]["0"]["evals"]

    # the report rebuilds byte-identical from the compact results file
    results = compact(collect(cfg.output_dir))
    results = json.loads(json.dumps(results))
    assert set(results["arms"]) == set(ARMS)
    report = tmp_path / "report" / "report.md"
    write_report(results, report)
    first = report.read_text(), (report.parent / "rlhf_miniature_curves.png").read_bytes()
    write_report(results, report)
    assert (report.read_text(), (report.parent / "rlhf_miniature_curves.png").read_bytes()) == first
    assert "GRPO, oracle reward (upper bound)" in first[0]
