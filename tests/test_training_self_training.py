"""GramSelfTrainer: a 2-round run end to end (direct and reason), and kill-and-resume."""

import json
import sys

import pytest
import torch
import yaml
from datasets import Dataset
from training_utils import SHORT_DIRECT_TEMPLATE, SHORT_REASON_TEMPLATE, make_model, make_tokenizer, rule_rows
from transformers import AutoModelForCausalLM, TrainerCallback

from trl_gram.training.config import GramRewardConfig
from trl_gram.training.self_training import GramSelfTrainer, SelfTrainingConfig


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _unlabeled(n, seed):
    rows = rule_rows(n, seed)
    return [
        {"prompt": r["prompt"], "response_a": r["chosen"], "response_b": r["rejected"]}
        if i % 2
        else {"prompt": r["prompt"], "response_a": r["rejected"], "response_b": r["chosen"]}
        for i, r in enumerate(rows)
    ]


def _args(out, mode, **kw):
    base = dict(
        mode=mode,
        num_train_epochs=8,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        report_to=[],
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        max_length=512,
        judge_eval_max_new_tokens=40,
        save_strategy="no",
        lr_scheduler_type="constant",
        logging_steps=50,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
    )
    base.update(kw)
    return GramRewardConfig(str(out), **base)


def _direct_run(tok, out, model, callbacks=None):
    sargs = SelfTrainingConfig(rounds=2, unlabeled_per_round=60, self_train_eval_max_samples=30)
    trainer = GramSelfTrainer(
        model,
        _args(out, "direct"),
        sargs,
        labeled_dataset=Dataset.from_list(rule_rows(200, 1)),
        unlabeled_dataset=Dataset.from_list(_unlabeled(120, 3)),
        eval_dataset=Dataset.from_list(rule_rows(30, 9)),
        processing_class=tok,
        template=SHORT_DIRECT_TEMPLATE,
        callbacks=callbacks,
    )
    return trainer, trainer.run()


def _strip(history):
    return [{k: v for k, v in h.items() if k != "checkpoint"} for h in history]


@pytest.fixture(scope="module")
def reference_run(tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    _, history = _direct_run(tok, out, make_model(tok))
    return out, history


@pytest.mark.slow
def test_two_rounds_end_to_end_direct(reference_run):
    root, history = reference_run
    assert [h["stage"] for h in history] == ["base", "initial", "self-train", "self-train"]
    for r in range(3):
        d = root / f"round_{r:02d}"
        summary = json.loads((d / "summary.json").read_text())
        kept = [json.loads(line) for line in (d / "kept.jsonl").read_text().splitlines()]
        assert summary["kept"] == len(kept) and (d / "checkpoint" / "model.safetensors").is_file()
        assert summary["kept"] + sum(summary["dropped"].values()) == summary["candidates"]
        assert sum(summary["label_balance"].values()) == len(kept)
        assert set(json.loads((d / "eval.json").read_text())) >= {"accuracy", "swap_agreement", "parse_failure_rate"}
        if r > 0:
            assert summary["candidates"] == 60
            predictions = (d / "predictions.jsonl").read_text().splitlines()
            assert len(predictions) == 60 and "votes" in json.loads(predictions[0])
            assert set(summary["dropped"]) >= {"malformed", "vote_disagreement", "low_confidence"}
    # Every round trains on all the data kept so far.
    assert history[3]["train_rows"] == history[1]["kept"] + history[2]["kept"] + history[3]["kept"]
    assert history[0]["eval"]["accuracy"] < 0.8 <= history[1]["eval"]["accuracy"]
    assert history[3]["eval"]["accuracy"] >= 0.9 and history[3]["kept_fraction"] > 0.5
    assert len((root / "summary.jsonl").read_text().splitlines()) == 4
    assert (root / "self_training.png").stat().st_size > 1000
    assert json.loads((root / "summary.jsonl").read_text().splitlines()[-1])["checkpoint"] == str(
        root / "round_02" / "checkpoint"
    )


class CrashAt(TrainerCallback):
    """Simulates a crash after `step` optimizer steps of the training whose output_dir contains `where`."""

    def __init__(self, where, step):
        self.where, self.step = where, step

    def on_step_end(self, args, state, control, **kwargs):
        if self.where in args.output_dir and state.global_step == self.step:
            raise RuntimeError("simulated crash")


@pytest.mark.slow
@pytest.mark.parametrize("crash", ["training", "after_pseudo_labels"])
def test_kill_and_resume_matches_an_uninterrupted_run(tok, tmp_path, monkeypatch, reference_run, crash):
    ref_dir, reference = reference_run
    base = make_model(tok)
    out = tmp_path / "crashy"
    if crash == "training":  # killed in the middle of round 2's training
        with pytest.raises(RuntimeError, match="simulated crash"):
            _direct_run(tok, out, base, callbacks=[CrashAt("round_02", 3)])
        assert (out / "round_02" / "kept.jsonl").is_file()
    else:  # killed after round 2's pseudo-labels were written, before they were filtered
        original_select = GramSelfTrainer._select

        def crashing_select(self, records, batch):
            if (out / "round_02" / "predictions.jsonl").is_file():
                raise RuntimeError("simulated crash")
            return original_select(self, records, batch)

        with monkeypatch.context() as m:
            m.setattr(GramSelfTrainer, "_select", crashing_select)
            with pytest.raises(RuntimeError, match="simulated crash"):
                _direct_run(tok, out, base)
        assert not (out / "round_02" / "kept.jsonl").exists()
    assert (out / "round_01" / "summary.json").is_file() and not (out / "round_02" / "summary.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "round_02" not in str(p)}
    predictions_mtime = (out / "round_02" / "predictions.jsonl").stat().st_mtime_ns

    calls = {"pseudo_label": 0, "train": 0, "evaluate": 0}
    for name, attr in (("pseudo_label", "_pseudo_label"), ("train", "_train"), ("evaluate", "_evaluate")):
        original = getattr(GramSelfTrainer, attr)

        def spy(self, *a, _name=name, _original=original, **k):
            calls[_name] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(GramSelfTrainer, attr, spy)
    _, resumed = _direct_run(tok, out, base)
    # Only round 2's unfinished steps ran again; its stored pseudo-labels were reused (read back, not re-judged).
    assert calls == {"pseudo_label": 0 if crash == "training" else 1, "train": 1, "evaluate": 1}
    assert (out / "round_02" / "predictions.jsonl").stat().st_mtime_ns == predictions_mtime
    assert all(
        p.stat().st_mtime_ns == t
        for p, t in finished.items()
        if p.name not in ("summary.jsonl",) and not p.name.endswith(".png")
    )
    assert _strip(resumed) == _strip(reference)
    for r in range(3):
        name = f"round_{r:02d}/kept.jsonl"
        assert (out / name).read_text() == (ref_dir / name).read_text()
    final = AutoModelForCausalLM.from_pretrained(out / "round_02" / "checkpoint").state_dict()
    ref = AutoModelForCausalLM.from_pretrained(ref_dir / "round_02" / "checkpoint").state_dict()
    assert all(torch.allclose(final[k], ref[k], atol=1e-6) for k in ref)


@pytest.mark.slow
def test_reason_pipeline_with_prover_end_to_end(tok, tmp_path):
    seed = rule_rows(64, 5, with_rationale=True)
    sargs = SelfTrainingConfig(
        rounds=2,
        unlabeled_per_round=30,
        proof_samples=2,
        # A whole proof here is 49 tokens (the proof header is spelled out nearly character by character by the tiny
        # tokenizer) plus EOS; cut-off proofs are not selectable (proof_require_finished).
        proof_max_new_tokens=64,
        proof_temperature=0.3,
        prover_num_train_epochs=10,
        max_rationale_tokens=60,
        self_train_eval_max_samples=12,
    )
    out = tmp_path / "reason"
    trainer = GramSelfTrainer(
        make_model(tok),
        _args(out, "reason", num_train_epochs=12, judge_eval_max_new_tokens=64),
        sargs,
        labeled_dataset=Dataset.from_list(rule_rows(60, 1)),
        unlabeled_dataset=Dataset.from_list(_unlabeled(60, 3)),
        seed_dataset=Dataset.from_list(seed),
        eval_dataset=Dataset.from_list(rule_rows(12, 9)),
        processing_class=tok,
        template=SHORT_REASON_TEMPLATE,
    )
    history = trainer.run()
    assert [h["stage"] for h in history] == ["base", "initial", "self-train", "self-train", "final"]
    assert json.loads((out / "seed" / "summary.json").read_text())["rows"] == 64
    assert (out / "prover" / "model" / "model.safetensors").is_file()
    kept0 = [json.loads(line) for line in (out / "round_00" / "kept.jsonl").read_text().splitlines()]
    assert kept0 and all(row["rationale"] and row["label"] in ("A", "B") for row in kept0)
    summary0 = json.loads((out / "round_00" / "summary.json").read_text())
    assert summary0["kept"] + summary0["dropped"]["no_valid_proof"] == 60
    for r in (1, 2):
        summary = json.loads((out / f"round_{r:02d}" / "summary.json").read_text())
        assert summary["kept"] + sum(summary["dropped"].values()) == 30
        assert "no_valid_proof" in summary["dropped"] or summary["kept"] == 0
    assert (out / "final" / "checkpoint" / "model.safetensors").is_file()
    assert trainer.final_model_path == str(out / "final" / "checkpoint")


@pytest.mark.slow
def test_training_stages_in_a_separate_process(tok, tmp_path):
    """`train_command` runs each training as `<command> -m trl_gram.cli train --config <stage>/train.yaml`."""
    base = tmp_path / "base"
    make_model(tok).save_pretrained(base)
    tok.save_pretrained(base)
    template = tmp_path / "prompt.txt"
    template.write_text("Which is better?\nQ: {input}\nA: {response_a}\nB: {response_b}\nBetter: ")
    out = tmp_path / "sub"
    args = _args(out, "direct", template=str(template), max_steps=3, num_train_epochs=1)
    sargs = SelfTrainingConfig(
        rounds=1, unlabeled_per_round=10, self_train_eval_max_samples=6, plot=False, train_command=sys.executable
    )
    history = GramSelfTrainer(
        str(base),
        args,
        sargs,
        labeled_dataset=Dataset.from_list(rule_rows(20, 1)),
        unlabeled_dataset=Dataset.from_list(_unlabeled(10, 3)),
        eval_dataset=Dataset.from_list(rule_rows(6, 9)),
        processing_class=tok,
    ).run()
    assert [h["stage"] for h in history] == ["base", "initial", "self-train"]
    config = yaml.safe_load((out / "round_00" / "train.yaml").read_text())
    assert config["mode"] == "direct" and config["max_steps"] == 3 and config["template"] == str(template)
    assert config["model_name_or_path"] == str(base) and config["dataset_name"].endswith("round_00/train.jsonl")
    for r in (0, 1):
        ckpt = out / f"round_{r:02d}" / "checkpoint"
        assert (ckpt / "model.safetensors").is_file() and (ckpt / ".done").is_file()


def test_bootstrapped_seeds_train_the_prover(tok, tmp_path):
    """Without human rationales, the base model (as prover, told the label) writes the seed rationales; the prover
    is then trained on them before it writes any proof."""
    out = tmp_path / "boot"
    sargs = SelfTrainingConfig(
        rounds=0,
        bootstrap_seed_rationales=True,
        proof_samples=2,
        proof_max_new_tokens=12,
        prover_num_train_epochs=1,
        final_finetune=False,
        plot=False,
        check_support=False,
        max_rationale_tokens=None,
    )
    trainer = GramSelfTrainer(
        make_model(tok),
        _args(out, "reason", max_steps=1, judge_eval_max_new_tokens=8),
        sargs,
        labeled_dataset=Dataset.from_list(rule_rows(4, 1)),
        seed_dataset=Dataset.from_list(rule_rows(6, 5)),
        processing_class=tok,
        template=SHORT_REASON_TEMPLATE,
    )
    prover = trainer._get_prover()
    assert prover.config.require_finished
    prover.config.require_finished = False  # a random tiny model rarely stops within 12 tokens
    trainer.run()
    seed = json.loads((out / "seed" / "summary.json").read_text())
    assert seed["source"].startswith("bootstrapped") and seed["rows"] == 6
    assert json.loads((out / "prover" / "summary.json").read_text())["train_rows"] == 6
    assert (out / "prover" / "model" / "model.safetensors").is_file()
    assert (out / "round_00" / "summary.json").is_file()


@pytest.mark.parametrize("check_support", [True, False])
def test_support_rule_off_trains_on_contradicting_rationales(tok, tmp_path, check_support):
    """A judge's rationale can conclude against its own answer tag. The support rule drops such a pseudo-label; with
    the rule off (the denoising-off arm) the row is kept, and its training must accept it rather than raise."""
    out = tmp_path / "support"
    sargs = SelfTrainingConfig(
        rounds=1,
        unlabeled_per_round=2,
        rationale_source="judge",
        confidence_threshold=None,
        max_rationale_tokens=None,
        check_support=check_support,
        final_finetune=False,
        plot=False,
    )
    unlabeled = _unlabeled(2, 3)
    predictions = [
        {
            "prompt": row["prompt"],
            "response_a": row["response_a"],
            "response_b": row["response_b"],
            "label": "B",
            "confidence": 0.9,
            "votes": ["B", "B"],
            "judge_rationale": rationale,
        }
        for row, rationale in zip(unlabeled, ["Response B is better.", "Response A is better."])
    ]
    (out / "round_01").mkdir(parents=True)
    (out / "round_01" / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    history = GramSelfTrainer(
        make_model(tok),
        _args(out, "reason", max_steps=1, judge_eval_max_new_tokens=8),
        sargs,
        labeled_dataset=Dataset.from_list(rule_rows(4, 1, with_rationale=True)),
        unlabeled_dataset=Dataset.from_list(unlabeled),
        processing_class=tok,
        template=SHORT_REASON_TEMPLATE,
    ).run()
    round1 = history[-1]
    assert round1["stage"] == "self-train"
    assert round1["kept"] == (1 if check_support else 2)
    assert round1["dropped"].get("unsupported", 0) == (1 if check_support else 0)
    assert round1["train_rows"] == 4 + round1["kept"]
    assert (out / "round_01" / "checkpoint" / ".done").is_file()
