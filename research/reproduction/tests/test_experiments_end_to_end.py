"""The whole reproduction experiment on a random tiny model and hand-made files: every arm runs through the real
training code, all arms read the same test slice, a rerun skips finished arms, and the report is written."""

from __future__ import annotations

import json

import pytest
from experiments_utils import tiny_model_dir, write_hh, write_judgebench, write_pandalm

from research.reproduction.harness.config import ARMS, ReproductionConfig
from research.reproduction.harness.report import write_report
from research.reproduction.harness.runner import run_experiment


@pytest.mark.slow
def test_every_arm_end_to_end_and_resume(tmp_path):
    cfg = ReproductionConfig(
        output_dir=str(tmp_path / "run"),
        model_name_or_path=tiny_model_dir(tmp_path / "model"),
        hh_path=str(write_hh(tmp_path / "hh.jsonl.gz", 40)),
        pandalm_path=str(write_pandalm(tmp_path / "pandalm.json", 30)),
        judgebench_path=str(write_judgebench(tmp_path / "jb.json", 8)),
        tasks=["hh", "synthetic"],
        arms=list(ARMS),
        seeds=[0],
        labeled=6,
        unlabeled_per_round=4,
        rounds=2,
        test=6,
        max_chars=None,
        ood_max_pairs=4,
        synthetic={"labeled": 6, "unlabeled_per_round": 4, "test": 6},
        adapt_budgets=[4, 6],
        adapt_test=4,
        per_device_train_batch_size=4,
        num_train_epochs=1,
        max_length=768,
        judge_max_new_tokens=6,
        proof_samples=1,
        proof_max_new_tokens=6,
        max_rationale_tokens=None,
        confidence_threshold=None,
        token_budget=4096,
    )
    results = run_experiment(cfg)
    arms_hh = {r["arm"] for r in results if r["task"] == "hh"}
    arms_syn = {r["arm"] for r in results if r["task"] == "synthetic"}
    assert arms_hh == set(ARMS) - {"reason_oracle", "reason_oracle_st"} and arms_syn == set(ARMS) - {"adapt"}
    by = {(r["task"], r["arm"]): r for r in results}
    for task in ("hh", "synthetic"):
        fps = {r["test_fingerprint"] for r in results if r["task"] == task}
        assert len(fps) == 1  # every arm read the same test slice
        splits = json.loads((tmp_path / "run" / task / "seed0" / "splits.json").read_text())
        assert splits["test_fingerprint"] in fps
        for arm in ("zero_shot_direct", "direct", "reason"):
            assert by[(task, arm)]["test"]["num_pairs"] == 6
    # the oracle arm trains on the rule's rationales, not on the prover's
    kept = (tmp_path / "run" / "synthetic" / "reason_oracle" / "seed0" / "round_00" / "kept.jsonl").read_text()
    rows = [json.loads(line) for line in kept.splitlines()]
    assert len(rows) == 6 and all(r["rationale"].startswith("Response A says: ") for r in rows)
    assert [r["label"] for r in rows].count("B") == 3
    for r in rows:  # trained with swap="none": each rationale still reads in the order its row shows
        assert r["rationale"].index(r["response_a"]) < r["rationale"].index(r["response_b"])
    oracle = by[("synthetic", "reason_oracle")]
    assert oracle["oracle_rationale"] == "per_response" and oracle["test"]["num_pairs"] == 6
    oracle_st = by[("synthetic", "reason_oracle_st")]  # round 0 is the oracle judge, copied
    assert [s["round"] for s in oracle_st["stages"] if s["round"] is not None] == [0, 1, 2]
    assert oracle_st["stages"][1]["eval"] == oracle["test"]
    st = by[("hh", "reason_st")]
    assert [s["round"] for s in st["stages"] if s["round"] is not None] == [0, 1, 2]
    assert all(s["candidates"] == 4 for s in st["stages"] if s["round"])
    # round 0 of the self-training arms is the `reason` arm's judge (copied, identical metrics)
    assert st["stages"][1]["eval"] == by[("hh", "reason")]["test"]
    assert set(by[("hh", "direct")]["ood"]) == {"pandalm", "judgebench"}
    curves = by[("hh", "adapt")]["curves"]
    assert set(curves) == {"base", "self_trained"}
    assert [p["labels"] for p in curves["base"]][0] == 0 and len(curves["base"]) == 3

    done = sorted((tmp_path / "run").glob("*/*/seed0/DONE"))
    stamps = [p.stat().st_mtime_ns for p in done]
    again = run_experiment(cfg)  # resumable: nothing is recomputed
    assert [p.stat().st_mtime_ns for p in done] == stamps
    assert sorted(json.dumps(r, sort_keys=True) for r in again) == sorted(
        json.dumps(r, sort_keys=True) for r in results
    )

    path = write_report(
        cfg,
        str(tmp_path / "docs" / "reproduction.md"),
        command="python -m research.reproduction.harness --config r.yaml",
        recipe="r.yaml",
    )
    text = open(path).read()
    assert (
        "| hh | reason_st (round 2) |" in text
        and "Produced by `python -m research.reproduction.harness --config r.yaml`" in text
    )
    assert (tmp_path / "docs" / "reproduction" / "r_rounds.png").is_file()
    assert (tmp_path / "docs" / "reproduction" / "r_adaptation.png").is_file()


@pytest.mark.slow
def test_direct_adaptation_to_a_new_control_rule(tmp_path):
    """The adaptation arm as a direct judge from a self-trained `direct_st` source: one curve per start point (the
    base model, the labeled-only judge, the self-trained judge), all judged on the `smaller` rule's test slice."""
    cfg = ReproductionConfig(
        output_dir=str(tmp_path / "run"),
        model_name_or_path=tiny_model_dir(tmp_path / "model"),
        pandalm_path=None,
        judgebench_path=None,
        tasks=["synthetic"],
        arms=["direct", "direct_st", "adapt"],
        seeds=[0],
        rounds=1,
        synthetic_rule="compare",
        synthetic={"labeled": 6, "unlabeled_per_round": 4, "test": 6},
        adapt_domain="synthetic",
        adapt_rule="smaller",
        adapt_source_task="synthetic",
        adapt_source_arm="direct_st",
        adapt_starts=["base", "labeled_only", "self_trained"],
        adapt_budgets=[4, 6],
        adapt_test=5,
        adapt_num_train_epochs=1,
        per_device_train_batch_size=4,
        num_train_epochs=1,
        max_length=256,
        confidence_threshold=None,
        token_budget=4096,
    )
    by = {r["arm"]: r for r in run_experiment(cfg)}
    adapt = by["adapt"]
    assert adapt["mode"] == "direct" and adapt["train_rows"] == 6 and adapt["test_pairs"] == 5
    assert set(adapt["curves"]) == {"base", "labeled_only", "self_trained"}
    for points in adapt["curves"].values():
        assert [p["labels"] for p in points] == [0, 4, 6]
        assert all(p["eval"]["num_pairs"] == 5 for p in points)
    merged = sorted(p.name for p in (tmp_path / "run" / "synthetic" / "adapt" / "seed0").glob("*_merged"))
    assert merged == ["labeled_only_merged", "self_trained_merged"]
    path = write_report(
        cfg,
        str(tmp_path / "docs" / "r.md"),
        command="python -m research.reproduction.harness --config r.yaml",
        recipe="r.yaml",
    )
    text = open(path).read()
    assert "| labeled_only | 6 | 1 |" in text and "synthetic `smaller` rule" in text
    assert (tmp_path / "docs" / "r" / "r_adaptation.png").is_file()
