"""Plumbing of the reproduction experiment: splits, the synthetic task, configuration, metrics, resumability and the
report, on hand-made data (no model is trained here)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from datasets import Dataset
from experiments_utils import write_hh, write_pandalm

from research.reproduction.harness import arms, report, runner
from research.reproduction.harness.config import ARMS, ReproductionConfig, compact_template
from research.reproduction.harness.splits import fingerprint, load_pool, make_splits, pair_chars, sample_eval
from research.reproduction.harness.synthetic import (
    is_correct,
    make_arithmetic_pairs,
    make_synthetic_pairs,
    synthetic_pool,
    with_oracle_rationales,
)
from trl_gram.judge import JudgeRun, PairJudgment
from trl_gram.training.denoise import rationale_label
from trl_gram.training.judge_examples import validate_pairs


@pytest.fixture
def hh(tmp_path):
    return load_pool(str(write_hh(tmp_path / "hh.jsonl.gz", 60)))


def _cut(ds, seed, **kw):
    sizes = dict(labeled=8, unlabeled_per_round=6, rounds=2, test=10, seed=seed)
    sizes.update(kw)
    return make_splits(ds, **sizes)


def test_splits_are_disjoint_seeded_and_share_the_test_slice(hh):
    a, a2, b = _cut(hh, 0), _cut(hh, 0), _cut(hh, 1)
    ids = a.ids()
    flat = [i for v in ids.values() for i in v]
    assert len(flat) == len(set(flat)) == 8 + 12 + 10  # disjoint
    assert ids == a2.ids()  # seeded: same seed, same split
    assert b.ids()["test"] == ids["test"]  # the test slice ignores the run seed
    assert b.ids()["labeled"] != ids["labeled"]
    assert a.info["test_fingerprint"] == fingerprint(ids["test"])
    # rows really are the source rows of their ids
    for row in a.labeled:
        assert row["chosen"] == hh[row["pair_id"]]["chosen"]


def test_unlabeled_slices_carry_no_label(hh):
    s = _cut(hh, 0)
    assert len(s.unlabeled) == 2
    for u in s.unlabeled:
        assert set(u.column_names) == {"prompt", "response_a", "response_b", "pair_id"}
    pool = s.unlabeled_pool()
    assert len(pool) == 12 and list(pool["pair_id"]) == s.ids()["unlabeled_1"] + s.ids()["unlabeled_2"]
    # both positions are used for the polite (chosen) response: the order carries no signal
    firsts = [hh[r["pair_id"]]["chosen"] == r["response_a"] for r in pool]
    assert 0 < sum(firsts) < len(firsts)


def test_length_filter_and_too_small_pool(hh):
    limit = sorted(pair_chars(r) for r in hh)[30]
    s = _cut(hh, 0, max_chars=limit, labeled=4, unlabeled_per_round=4, test=6)
    assert all(pair_chars(r) <= limit for r in s.labeled) and all(pair_chars(r) <= limit for r in s.test)
    with pytest.raises(ValueError, match="max_chars"):
        _cut(hh, 0, max_chars=limit, test=40)
    with pytest.raises(ValueError, match="labeled"):
        _cut(hh, 0, labeled=-1)


def test_ood_sample_drops_pandalm_ties(tmp_path):
    ds = load_pool(str(write_pandalm(tmp_path / "p.json", 30)))
    assert len(ds) == 24  # 6 ties removed
    s1, s2 = sample_eval(ds, 10, seed=3), sample_eval(ds, 10, seed=3)
    assert s1["pair_id"] == s2["pair_id"] and len(s1) == 10


def test_synthetic_task_rule():
    ds = make_arithmetic_pairs(50, seed=1)
    assert ds["prompt"] == make_arithmetic_pairs(50, seed=1)["prompt"]
    for row in ds:
        assert is_correct(row["chosen"]) is True
        assert is_correct(row["rejected"]) is False
    assert is_correct("no equation") is None
    pool = synthetic_pool(40, seed=0)
    assert len(set(pool["prompt"])) == 40
    with pytest.raises(ValueError, match="digits"):
        make_arithmetic_pairs(3, digits=9)


@pytest.mark.parametrize("style", ["per_response", "fact"])
@pytest.mark.parametrize("rule", ["arithmetic", "compare", "smaller"])
def test_oracle_rationales_are_right_for_the_order_shown(rule, style):
    """The `reason_oracle` arm's rows: a balanced order, and a rationale written for that order that states the true
    response's claim as true and concludes for the label, so the trainer's own label check accepts every row."""
    source = make_synthetic_pairs(20, seed=3, rule=rule)
    ds = with_oracle_rationales(source, style, seed=5)
    assert ds["label"].count("B") == 10 and ds["prompt"] == source["prompt"]
    assert ds["rationale"] == with_oracle_rationales(source, style, seed=5)["rationale"]  # seeded
    for row, src in zip(ds, source):
        first, second = (
            (row["response_a"], row["response_b"]) if row["label"] == "A" else (row["response_b"], row["response_a"])
        )
        assert (first, second) == (src["chosen"], src["rejected"])
        assert rationale_label(row["rationale"]) == row["label"]
        if style == "per_response":  # each response checked in the order shown
            a, b = row["rationale"].index(row["response_a"]), row["rationale"].index(row["response_b"])
            assert a < b and row["rationale"].startswith("Response A says: ")
            verdicts = ("true", "false") if row["label"] == "A" else ("false", "true")
            assert row["rationale"].count(" This is ") == 2 and [
                row["rationale"].split(" This is ")[i + 1].split(".")[0] for i in (0, 1)
            ] == list(verdicts)
        else:
            assert is_correct(row["rationale"]) is True
    pairs, skipped = validate_pairs(ds, rationale_column="rationale", need_rationale=True)
    assert len(pairs) == 20 and not skipped
    with pytest.raises(ValueError, match="chosen"):
        with_oracle_rationales(Dataset.from_list([{"prompt": "q", "response_a": "x", "response_b": "y"}]))


@pytest.mark.parametrize("arm", ["reason_oracle", "reason_oracle_st"])
def test_oracle_arms_are_skipped_outside_the_control_task(tmp_path, monkeypatch, arm):
    """On hh-rlhf there is no rule to write correct rationales from: the oracle arms return no result there."""
    monkeypatch.setattr(runner, "run_trained", lambda *a, **k: pytest.fail(f"{arm} trained on hh"))
    ctx = SimpleNamespace(task="hh", seed=0, arm_dir=lambda name: tmp_path / name)
    assert runner.run_arm(ctx, arm) is None
    assert not (tmp_path / arm).exists()


def test_compare_control_rule(tmp_path):
    """The `compare` control: the chosen response names the larger number, both responses hold the same tokens, the
    oracle agrees, and a recipe can select the rule."""
    from research.reproduction.harness.synthetic import make_comparison_pairs, make_synthetic_pairs

    ds = make_comparison_pairs(60, seed=3)
    assert ds["prompt"] == make_synthetic_pairs(60, seed=3, rule="compare")["prompt"]
    firsts = 0
    for row in ds:
        a, b = (int(x) for x in row["prompt"].removeprefix("Which number is larger, ").rstrip("?").split(" or "))
        assert a != b and 10 <= min(a, b) and max(a, b) <= 99
        assert row["chosen"] == f"{max(a, b)} is larger than {min(a, b)}."
        assert sorted(row["chosen"].rstrip(".").split()) == sorted(row["rejected"].rstrip(".").split())
        assert is_correct(row["chosen"]) is True and is_correct(row["rejected"]) is False
        firsts += a > b
    assert 15 < firsts < 45  # the larger number is not always in the same place of the question
    pool = synthetic_pool(300, seed=0, rule="compare")
    assert len(set(pool["prompt"])) == 300
    with pytest.raises(ValueError, match="rule"):
        make_synthetic_pairs(3, rule="spelling")
    with pytest.raises(ValueError, match="synthetic_rule"):
        ReproductionConfig(output_dir="x", synthetic_rule="spelling")
    cfg = ReproductionConfig(output_dir="x", synthetic_rule="compare", synthetic={"labeled": 8, "test": 10})
    assert runner.task_pool(cfg, "synthetic")[0]["prompt"].startswith("Which number is larger")


def test_smaller_rule_and_adaptation_domain(tmp_path):
    """The `smaller` rule mirrors `compare` (same number pairs, the other number chosen); a synthetic adaptation
    domain draws its own pool with `adapt_rule`, cut by the run seed with a seed-independent test slice."""
    from research.reproduction.harness.synthetic import make_comparison_pairs, make_synthetic_pairs

    larger, smaller = make_comparison_pairs(40, seed=5), make_synthetic_pairs(40, seed=5, rule="smaller")
    for big, small in zip(larger, smaller):
        assert small["prompt"] == big["prompt"].replace("larger", "smaller")
        a, b = (int(x) for x in small["prompt"].removeprefix("Which number is smaller, ").rstrip("?").split(" or "))
        assert small["chosen"] == f"{min(a, b)} is smaller than {max(a, b)}."
        assert is_correct(small["chosen"]) is True and is_correct(small["rejected"]) is False
    with pytest.raises(ValueError, match="relation"):
        make_comparison_pairs(3, relation="equal")

    kw = dict(output_dir="x", synthetic_rule="compare", adapt_domain="synthetic", adapt_budgets=[4, 8], adapt_test=10)
    cfg = ReproductionConfig(**kw, adapt_rule="smaller")
    lab0, test0 = runner.adaptation_data(cfg, 0)
    lab1, test1 = runner.adaptation_data(cfg, 1)
    assert len(lab0) == 8 and len(test0) == 10 and list(test0["pair_id"]) == list(test1["pair_id"])
    assert list(lab0["pair_id"]) != list(lab1["pair_id"]) and not set(lab0["pair_id"]) & set(test0["pair_id"])
    assert all(q.startswith("Which number is smaller") for q in list(lab0["prompt"]) + list(test0["prompt"]))
    in_domain, _ = runner.adaptation_data(ReproductionConfig(**kw), 0)  # no adapt_rule: the source task's rule
    assert in_domain[0]["prompt"].startswith("Which number is larger")


def test_adaptation_settings(tmp_path):
    """Adaptation epochs override the domain's own; starts are validated and resolved from finished source arms."""
    cfg = ReproductionConfig(
        output_dir=str(tmp_path),
        adapt_domain="synthetic",
        synthetic={"learning_rate": 1e-3, "num_train_epochs": 8},
        adapt_num_train_epochs=1,
        adapt_source_arm="direct_st",
        adapt_starts=["base", "labeled_only", "self_trained"],
    )
    assert cfg.adapt_training() == {"learning_rate": 1e-3, "num_train_epochs": 1}
    assert ReproductionConfig(output_dir="x", num_train_epochs=3).adapt_training()["num_train_epochs"] == 3
    for bad, match in (
        ({"adapt_rule": "spelling"}, "adapt_rule"),
        ({"adapt_source_arm": "reason"}, "adapt_source_arm"),
        ({"adapt_starts": ["prover"]}, "adapt_starts"),
        ({"adapt_starts": []}, "adapt_starts"),
    ):
        with pytest.raises(ValueError, match=match):
            ReproductionConfig(output_dir="x", **bad)
    ctx = arms.ArmContext(cfg, "synthetic", 0, "base", tmp_path / "synthetic", None, None, None, test_fingerprint="")
    assert runner.adaptation_starts(ctx) == {"base": "base"}  # the source arms are not finished: base only
    for arm in ("direct", "direct_st"):
        d = ctx.arm_dir(arm)
        d.mkdir(parents=True)
        arms.write_json(d / "result.json", {"checkpoint": f"/ckpt/{arm}"})
        (d / runner.DONE).write_text("finished\n")
    assert runner.adaptation_starts(ctx) == {
        "base": "base",
        "labeled_only": "/ckpt/direct",
        "self_trained": "/ckpt/direct_st",
    }


def test_config_validation(tmp_path):
    (tmp_path / "r.yaml").write_text("output_dir: x\nbogus: 1\n")
    with pytest.raises(ValueError, match="bogus"):
        ReproductionConfig.from_yaml(tmp_path / "r.yaml")
    with pytest.raises(ValueError, match="arms"):
        ReproductionConfig(output_dir="x", arms=["nope"])
    with pytest.raises(ValueError, match="finetune"):
        ReproductionConfig(output_dir="x", finetune="qlora")
    (tmp_path / "ok.yaml").write_text("output_dir: x\nseeds: [3]\n")
    cfg = ReproductionConfig.from_yaml(tmp_path / "ok.yaml", seeds=[5], arms=None)
    assert cfg.seeds == [5] and cfg.arms == list(ARMS)
    reason, direct = compact_template(True), compact_template(False)
    assert reason.text == direct.text and reason.reasoning and not direct.reasoning
    assert "Q?" in reason.fill("Q?", "one", "two")


def test_synthetic_task_training_overrides(tmp_path):
    """The control task may train with its own learning rate and epochs; sizes and the hh task are unaffected."""
    cfg = ReproductionConfig(
        output_dir="x", learning_rate=2e-4, num_train_epochs=1, synthetic={"labeled": 8, "learning_rate": 1e-3}
    )
    assert cfg.task_sizes("synthetic") == {
        "labeled": 8,
        "unlabeled_per_round": cfg.unlabeled_per_round,
        "test": cfg.test,
    }
    assert cfg.task_training("synthetic") == {"learning_rate": 1e-3, "num_train_epochs": 1}
    assert cfg.task_training("hh") == cfg.task_training(None) == {"learning_rate": 2e-4, "num_train_epochs": 1}
    args = arms.train_args(cfg, tmp_path / "a", "direct", 0, task="synthetic")
    assert args.learning_rate == 1e-3 and args.num_train_epochs == 1
    assert arms.train_args(cfg, tmp_path / "b", "direct", 0, task="hh").learning_rate == 2e-4
    with pytest.raises(ValueError, match="synthetic"):
        ReproductionConfig(output_dir="x", synthetic={"warmup_steps": 3})


class _FakeJudge:
    """Returns hand-made judgments (P(response_1 better), orders' labels) for the pairs in order."""

    def __init__(self, judgments):
        self.judgments = judgments

    def judge(self, questions, first, second, **kwargs):
        assert len(questions) == len(self.judgments)
        return self.judgments


def _j(prob, labels, failures=(None, None)):
    runs = [
        JudgeRun(order=o, prob_first=0.5, label=lab, rationale="", failure=f, text="")
        for o, lab, f in zip(("AB", "BA"), labels, failures)
    ]
    read = [lab for lab in labels if lab is not None]
    agreement = None if len(read) < 2 else (labels[0] == ("B" if labels[1] == "A" else "A"))
    return PairJudgment(prob=prob, label=("A" if prob > 0.5 else "B"), agreement=agreement, runs=runs)


def test_nodenoise_arm_turns_every_rule_off():
    """`reason_st_nodenoise` keeps every labelled pair (ties included); `reason_st` uses the recipe's thresholds."""
    from trl_gram.training.denoise import Candidate, DenoiseRules, check_candidate
    from trl_gram.training.self_training_config import SelfTrainingConfig

    cfg = SimpleNamespace(
        min_vote_agreement=0.5, drop_tied_votes=True, confidence_threshold=0.6, max_rationale_tokens=64
    )
    off, on = arms.denoise_settings(cfg, denoise=False), arms.denoise_settings(cfg, denoise=True)
    SelfTrainingConfig(**off), SelfTrainingConfig(**on)  # both are valid trainer settings
    tied = Candidate("A", 0.51, ["A", "B"], "Response B is better.")
    assert check_candidate(tied, DenoiseRules(**off)) is None
    assert check_candidate(tied, DenoiseRules(**on)) == "vote_disagreement"
    assert on["confidence_threshold"] == 0.6 and on["max_rationale_tokens"] == 64
    # order-agreement off, the other rules on: a tie keeps its averaged-probability label if it is confident enough
    conf_only = arms.denoise_settings(
        ReproductionConfig(output_dir="x", min_vote_agreement=0.0, drop_tied_votes=False, confidence_threshold=0.6),
        denoise=True,
    )
    rules = DenoiseRules(**conf_only)
    assert check_candidate(Candidate("A", 0.8, ["A", "B"], "Response A is better."), rules) is None
    assert check_candidate(tied, rules) == "low_confidence"


def test_metrics_on_a_hand_made_case(monkeypatch):
    # 4 pairs, chosen shown first: correct when P(first better) > 0.5; 0.5 counts half.
    judgments = [
        _j(0.9, ("A", "B")),  # right, orders agree (BA label "B" = first response wins)
        _j(0.2, ("B", "A")),  # wrong, orders agree
        _j(0.5, ("A", "A")),  # tie: half, orders disagree
        _j(0.7, ("A", None), (None, "no_answer")),  # right, one failed run, agreement unknown
    ]
    monkeypatch.setattr(arms, "make_judge", lambda *a, **k: _FakeJudge(judgments))
    ds = Dataset.from_list([{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(4)])
    ctx = SimpleNamespace(tokenizer=None, cfg=None, seed=0)
    m = arms.evaluate(None, ctx, "reason", {"test": ds})["test"]
    assert m["num_pairs"] == 4
    assert m["accuracy"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert m["swap_agreement"] == pytest.approx(2 / 3)
    assert m["parse_failure_rate"] == pytest.approx(1 / 8)


def test_run_arm_skips_finished_arms(tmp_path, monkeypatch):
    calls = []

    def fake_zero_shot(ctx, mode, d):
        calls.append(mode)
        return {"mode": mode, "test": {"accuracy": 0.5}, "ood": {}, "stages": []}

    monkeypatch.setattr(runner, "run_zero_shot", fake_zero_shot)
    cfg = ReproductionConfig(output_dir=str(tmp_path))
    ctx = arms.ArmContext(cfg, "hh", 0, "base", tmp_path / "hh", None, None, None, test_fingerprint="fp")
    first = runner.run_arm(ctx, "zero_shot_direct")
    again = runner.run_arm(ctx, "zero_shot_direct")
    assert calls == ["direct"] and first == again
    assert (tmp_path / "hh" / "zero_shot_direct" / "seed0" / "DONE").is_file()
    assert first["test_fingerprint"] == "fp"
    # an unfinished folder (no DONE) is run again
    (tmp_path / "hh" / "zero_shot_direct" / "seed0" / "DONE").unlink()
    runner.run_arm(ctx, "zero_shot_direct")
    assert calls == ["direct", "direct"]


def _result(arm, seed, acc, task="hh", stages=(), **kw):
    return {
        "arm": arm,
        "task": task,
        "seed": seed,
        "test": {"accuracy": acc, "num_pairs": 10},
        "ood": {},
        "stages": list(stages),
        "wall_s": 1.0,
        "test_fingerprint": "fp",
        **kw,
    }


def test_report_table_and_plots(tmp_path):
    def st(r, acc, kept):
        return {
            "round": r,
            "eval": {"accuracy": acc},
            "candidates": 10,
            "kept": kept,
            "dropped": {"low_confidence": 10 - kept},
        }

    results = [
        _result("direct", 0, 0.6),
        _result("direct", 1, 0.8),
        _result("reason_st", 0, 0.7, stages=[st(0, 0.6, 0), st(1, 0.65, 5), st(2, 0.7, 6)]),
        {
            "arm": "adapt",
            "task": "hh",
            "seed": 0,
            "wall_s": 1.0,
            "test_fingerprint": "fp",
            "curves": {"base": [{"labels": 0, "eval": {"accuracy": 0.5}}, {"labels": 8, "eval": {"accuracy": 0.6}}]},
        },
    ]
    rows = {r["arm"]: r for r in report.table_rows(results)}
    assert set(rows) == {"direct", "reason_st (round 1)", "reason_st (round 2)"}
    mean, spread, n = report.mean_spread(rows["direct"]["accuracy"])
    assert (mean, n) == (pytest.approx(0.7), 2) and spread == pytest.approx(math.sqrt(0.02))
    assert "70.0 ± 14.1" in report.markdown_table(report.table_rows(results))
    assert report.plot_rounds(results, tmp_path / "r.png") and (tmp_path / "r.png").stat().st_size > 0
    assert report.plot_denoising(results, tmp_path / "d.png")
    assert report.plot_adaptation(results, tmp_path / "a.png")
    assert "| base | 8 | 1 | 60.0 |" in report.adaptation_table(results)
    assert not report.plot_rounds([results[0]], tmp_path / "none.png")
    # load_results only reads finished arms
    d = tmp_path / "run" / "hh" / "direct" / "seed0"
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(results[0]))
    assert report.load_results(tmp_path / "run") == []
    (d / "DONE").write_text("finished\n")
    assert report.load_results(tmp_path / "run") == [results[0]]
    # a hand-written notes.md beside the figures is kept under the title across rebuilds
    cfg = ReproductionConfig(output_dir=str(tmp_path / "run"), seeds=[0])
    (tmp_path / "docs" / "rep").mkdir(parents=True)
    (tmp_path / "docs" / "rep" / "notes.md").write_text("> **Status:** partial.\n")
    page = tmp_path / "docs" / "rep.md"
    for _ in range(2):
        report.write_report(cfg, str(page), command="c", recipe="r.yaml")
        text = page.read_text()
        assert text.count("> **Status:** partial.") == 1 and text.index("Status") < text.index("## Commands")


def test_harness_command_line_parses_overrides():
    from research.reproduction.harness.cli import build_parser

    args = build_parser().parse_args(["--config", "x.yaml", "--seeds", "0,1", "--arms", "direct,reason"])
    assert args.seeds == [0, 1] and args.arms == ["direct", "reason"] and not args.report_only


def test_harness_is_not_a_trl_gram_command(capsys):
    from trl_gram.cli import COMMANDS, main

    assert "reproduce" not in COMMANDS
    assert main(["reproduce", "--config", "x.yaml"]) == 2
    assert "unknown command 'reproduce'" in capsys.readouterr().err


def test_hh_task_needs_its_data_path():
    cfg = ReproductionConfig(output_dir="x", tasks=["hh"])
    with pytest.raises(ValueError, match="hh_path"):
        runner.task_pool(cfg, "hh")


def test_each_recipe_has_its_own_default_report():
    """No recipe's report overwrites another's or the hand-written summary docs/reproduction.md."""
    from research.reproduction.harness.cli import default_report_path

    assert (
        default_report_path("research/reproduction/configs/reproduce_gpu.yaml")
        == "research/reproduction/reports/reproduction_gpu.md"
    )
    assert (
        default_report_path("research/reproduction/configs/reproduce_smoke.yaml")
        == "research/reproduction/reports/reproduction_smoke.md"
    )
    assert default_report_path("/tmp/my_run.yaml") == "research/reproduction/reports/reproduction_my_run.md"


def test_report_only_rebuild_names_the_run_command(tmp_path):
    """A --report-only page says which recipe computed its figures, and gives the rebuild command once."""
    from research.reproduction.harness.report_text import render

    cfg = ReproductionConfig(output_dir=str(tmp_path / "run"))
    common = dict(results=[], table="", adaptation="", figures={}, speed=None)
    rebuilt = render(
        cfg,
        "recipes/r.yaml",
        "python -m research.reproduction.harness --config recipes/r.yaml --report-only",
        wall_s=None,
        **common,
    )
    assert (
        "computed by `python -m research.reproduction.harness --config recipes/r.yaml`" in rebuilt
        and "this command ran" not in rebuilt
    )
    assert rebuilt.count("--report-only") == 1
    elsewhere = "python -m research.reproduction.harness --config recipes/r.yaml --output_dir docs/x/results --report docs/x.md --report-only"
    moved = render(cfg, "recipes/r.yaml", elsewhere, wall_s=None, **common)
    assert elsewhere in moved and moved.count("--report-only") == 1  # no rebuild hint that drops --output_dir
    ran = render(
        cfg,
        "recipes/r.yaml",
        "python -m research.reproduction.harness --config recipes/r.yaml",
        wall_s=120.0,
        **common,
    )
    assert "was produced by" in ran and "this command ran 2.0 min" in ran and "--report-only` rebuilds" in ran


@pytest.mark.parametrize(
    "name",
    [
        "reproduce_smoke",
        "reproduce_cpu",
        "reproduce_gpu",
        "reproduce_cpu_compare",
        "reproduce_cpu_compare_small",
        "reproduce_cpu_compare_small_conf",
        "reproduce_cpu_compare_small_steps",
        "reproduce_cpu_compare_small_oracle_long",
        "reproduce_cpu_compare_adapt",
    ],
)
def test_shipped_reproduce_recipes_parse_and_their_control_pool_fits(name):
    """Each shipped recipe is a valid configuration, and the synthetic control's pool holds every slice it cuts."""
    from pathlib import Path

    cfg = ReproductionConfig.from_yaml(Path(__file__).parents[1] / "configs" / f"{name}.yaml")
    sizes = cfg.task_sizes("synthetic")
    pool = runner.task_pool(cfg, "synthetic")
    s = make_splits(
        pool,
        labeled=sizes["labeled"],
        unlabeled_per_round=sizes["unlabeled_per_round"],
        rounds=cfg.rounds,
        test=sizes["test"],
        seed=cfg.seeds[-1],
        test_seed=cfg.test_seed,
    )
    assert len(s.test) == sizes["test"] and len(s.labeled) == sizes["labeled"]
    if name == "reproduce_gpu":  # the judge has room for a whole proof-length rationale and its answer
        assert cfg.judge_max_new_tokens > cfg.proof_max_new_tokens
