"""The pieces [`GramSelfTrainer`] is built from: the run folder's resume rule, the pseudo-label selection, the
training-process config, and the trainer's own record of its judge's checkpoint (nothing stuck on models)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from training_utils import make_model, make_tokenizer

from trl_gram.training.config import GramRewardConfig
from trl_gram.training.denoise import DenoiseRules
from trl_gram.training.pseudo_label import pair_row, select
from trl_gram.training.run_folder import RunFolder, read_jsonl, write_json, write_jsonl
from trl_gram.training.stage_training import ModelSource, is_trained, keep_start
from trl_gram.training.train_launcher import changed_fields, train_config


def test_run_folder_resume_rule_and_cached_steps(tmp_path):
    folder = RunFolder(tmp_path)
    assert not folder.is_done("round_00")
    calls = []
    value = folder.cached(tmp_path / "eval.json", lambda: calls.append(1) or {"accuracy": 0.5})
    again = folder.cached(tmp_path / "eval.json", lambda: calls.append(1) or {"accuracy": 0.9})
    assert value == again == {"accuracy": 0.5} and calls == [1]  # computed once, then read back
    rows = folder.cached(tmp_path / "p.jsonl", lambda: [{"a": 1}, {"a": 2}], rows=True)
    assert rows == read_jsonl(tmp_path / "p.jsonl") == [{"a": 1}, {"a": 2}]
    folder.finish("round_00", {"stage": "initial", "kept": 3})
    assert folder.is_done("round_00") and folder.summary("round_00")["kept"] == 3
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporary file behind
    write_json(tmp_path / "x.json", {"p": tmp_path})  # paths are written as text
    write_jsonl(tmp_path / "y.jsonl", [])
    assert (
        json.loads((tmp_path / "x.json").read_text()) == {"p": str(tmp_path)}
        and read_jsonl(tmp_path / "y.jsonl") == []
    )


def _record(label, conf, votes, rationale):
    return {
        "prompt": "Q",
        "response_a": "one",
        "response_b": "two",
        "label": label,
        "confidence": conf,
        "votes": votes,
        "judge_rationale": rationale,
    }


def test_select_keeps_agreeing_confident_pairs_and_counts_the_rest():
    records = [
        _record("A", 0.9, ["A", "A"], "Response A is better."),
        _record("B", 0.9, ["A", "B"], "Response B is better."),  # the two orders disagree
        _record("A", 0.55, ["A", "A"], "Response A is better."),  # below the confidence threshold
        _record(None, None, [None, None], None),  # nothing parsed
    ]
    rules = DenoiseRules(confidence_threshold=0.6)
    rows, counts = select(records, rules, ("A", "B"), lambda t: len(t.split()), "judge")
    assert rows == [pair_row("Q", "one", "two", 0, "Response A is better.", ("A", "B"))]
    assert counts["kept"] == 1 and counts["candidates"] == 4
    assert counts["vote_disagreement"] == 1 and counts["low_confidence"] == 1 and counts["malformed"] == 1


def test_select_with_a_prover_drops_pairs_without_a_proof():
    records = [_record("A", 0.9, ["A", "A"], None), _record("B", 0.9, ["B", "B"], None)]
    seen = []

    def prove(questions, firsts, seconds, labels):
        seen.append(labels)
        return [SimpleNamespace(rationale="Response A wins."), SimpleNamespace(rationale=None)]

    rows, counts = select(records, DenoiseRules(require_rationale=False), ("A", "B"), len, "prover", prove=prove)
    assert seen == [["A", "B"]] and counts["no_valid_proof"] == 1 and counts["kept"] == 1
    assert rows[0]["rationale"] == "Response A wins." and rows[0]["label"] == "A"


def test_train_config_holds_the_changed_fields_and_the_stage(tmp_path):
    args = GramRewardConfig(
        output_dir=str(tmp_path / "run"), learning_rate=1e-3, mode="direct", report_to="none", use_cpu=True, bf16=False
    )
    changed = changed_fields(args)
    assert changed["learning_rate"] == 1e-3 and changed["mode"] == "direct" and "output_dir" not in changed
    config = train_config(args, "base-model", tmp_path / "round_01", False, extra={"lora_r": 4})
    assert config["model_name_or_path"] == "base-model" and config["lora_r"] == 4
    assert config["dataset_name"] == str(tmp_path / "round_01" / "train.jsonl")
    assert config["output_dir"] == str(tmp_path / "round_01" / "checkpoint") and config["eval_strategy"] == "no"
    assert config["check_rationale_label"] is False


@pytest.mark.slow
def test_a_stage_without_rows_keeps_its_start_and_reloads_it(tmp_path):
    tok = make_tokenizer()
    args = GramRewardConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    models = ModelSource(make_model(tok), args)
    start = models.fresh()
    assert not is_trained(tmp_path / "round_00")
    keep_start(start, tok, tmp_path / "round_00")
    assert is_trained(tmp_path / "round_00")
    loaded = models.load(tmp_path / "round_00" / "checkpoint")
    assert all((a == b).all() for a, b in zip(start.state_dict().values(), loaded.state_dict().values()))
    assert not any(name.startswith("_gram") for name in vars(loaded))  # no run state stuck on the model


def _lora_state(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def _initial_judge_run(tmp_path, tok, initial_judge, learning_rate=0.0):
    from datasets import Dataset
    from peft import LoraConfig
    from training_utils import SHORT_DIRECT_TEMPLATE, rule_rows

    from trl_gram.training.self_training import GramSelfTrainer, SelfTrainingConfig

    args = GramRewardConfig(
        str(tmp_path / "run"),
        mode="direct",
        num_train_epochs=1,
        per_device_train_batch_size=8,
        learning_rate=learning_rate,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        max_length=256,
    )
    sargs = SelfTrainingConfig(rounds=0, final_finetune=False, initial_judge=initial_judge, plot=False)
    trainer = GramSelfTrainer(
        make_model(tok),
        args,
        sargs,
        labeled_dataset=Dataset.from_list(rule_rows(8, 1)),
        processing_class=tok,
        template=SHORT_DIRECT_TEMPLATE,
        peft_config=LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0),
    )
    trainer.run()
    return _lora_state(tmp_path / "run" / "round_00" / "checkpoint")


def test_the_initial_judge_starts_from_the_given_adapter(tmp_path):
    """A warm-up adapter (random, non-zero B) is trained further by round 0 (learning rate 0: kept exactly); without
    it, round 0 starts from a fresh LoRA (B = 0)."""
    from peft import LoraConfig, get_peft_model

    tok = make_tokenizer()
    warm = tmp_path / "warm"
    get_peft_model(
        make_model(tok), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    ).save_pretrained(warm)
    start = _lora_state(warm)
    trained = _initial_judge_run(tmp_path / "a", tok, str(warm))
    assert set(trained) == set(start)
    b_keys = [k for k in start if "lora_B" in k]
    assert b_keys and all(float(start[k].abs().max()) > 0 for k in b_keys)
    assert all(torch.equal(trained[k], start[k]) for k in start)
    fresh = _initial_judge_run(tmp_path / "b", tok, None)
    assert all(float(fresh[k].abs().max()) == 0 for k in b_keys)


def test_initial_judge_must_be_an_adapter_or_model_folder(tmp_path):
    from trl_gram.training.self_training import SelfTrainingConfig

    with pytest.raises(ValueError, match="initial_judge=.*neither a LoRA adapter"):
        SelfTrainingConfig(initial_judge=str(tmp_path))
    tok = make_tokenizer()
    full = tmp_path / "full"
    make_model(tok).save_pretrained(full)
    with pytest.raises(ValueError, match="is a full model, but the stages train LoRA adapters"):
        _initial_judge_run(tmp_path / "c", tok, str(full))
