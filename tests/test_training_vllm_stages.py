"""`judge_backend="vllm"` in GramSelfTrainer: every generating stage runs on a vLLM engine loaded from the stage's
checkpoint, no engine is alive while a stage trains, and the figures equal those of the transformers models. vLLM
itself is replaced by the stand-in of ``fake_vllm`` (the real engine is covered by ``test_vllm_real.py``)."""

import json

import pytest
from datasets import Dataset
from fake_vllm import FakeLLM, FakeParams
from training_utils import SHORT_REASON_TEMPLATE, make_model, make_tokenizer, rule_rows
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_gram.judge.backends import vllm as vb
from trl_gram.training.config import GramRewardConfig
from trl_gram.training.self_training import GramSelfTrainer, SelfTrainingConfig
from trl_gram.training.stage_engines import merged_checkpoint


@pytest.fixture
def engines(monkeypatch):
    """Record every engine load and release; `live` is the number of engines not yet released."""
    events = {"loads": [], "live": 0, "trained": [], "trained_with_live_engine": []}

    def load(cls, path, **kwargs):
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        events["loads"].append((str(path), kwargs))
        events["live"] += 1
        return cls(FakeLLM(model, AutoTokenizer.from_pretrained(path)), sampling_params_cls=FakeParams)

    real_release = vb.VLLMBackend.release

    def release(self):
        if self.llm is not None:
            events["live"] -= 1
        real_release(self)

    monkeypatch.setattr(vb.VLLMBackend, "load", classmethod(load))
    monkeypatch.setattr(vb.VLLMBackend, "release", release)
    from trl import SFTTrainer

    from trl_gram.training.trainer import GramRewardTrainer

    for cls in (GramRewardTrainer, SFTTrainer):  # the judge's stages and the prover's
        real_train = cls.train

        def train(self, *args, _real=real_train, **kwargs):
            events["trained"].append(type(self).__name__)
            if events["live"]:
                events["trained_with_live_engine"].append(type(self).__name__)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, "train", train)
    return events


def test_self_training_generates_on_vllm(engines, tmp_path):
    tok = make_tokenizer()
    base = tmp_path / "base"
    make_model(tok).save_pretrained(base)
    tok.save_pretrained(base)
    out = tmp_path / "run"
    args = GramRewardConfig(
        str(out),
        mode="reason",
        max_steps=1,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        disable_tqdm=True,
        judge_eval_max_new_tokens=8,
        max_length=512,
        seed=0,
    )
    sargs = SelfTrainingConfig(
        rounds=1,
        unlabeled_per_round=4,
        bootstrap_seed_rationales=True,
        proof_samples=2,
        proof_max_new_tokens=12,
        proof_require_finished=False,
        prover_num_train_epochs=1,
        check_support=False,
        max_rationale_tokens=None,
        self_train_eval_max_samples=4,
        plot=False,
        judge_backend="vllm",
    )
    unlabeled = [
        {"prompt": r["prompt"], "response_a": r["chosen"], "response_b": r["rejected"]} for r in rule_rows(4, 3)
    ]
    trainer = GramSelfTrainer(
        str(base),
        args,
        sargs,
        labeled_dataset=Dataset.from_list(rule_rows(4, 1)),
        unlabeled_dataset=Dataset.from_list(unlabeled),
        seed_dataset=Dataset.from_list(rule_rows(4, 5)),
        eval_dataset=Dataset.from_list(rule_rows(4, 9)),
        processing_class=tok,
        template=SHORT_REASON_TEMPLATE,
    )
    history = trainer.run()
    assert [h["stage"] for h in history] == ["base", "initial", "self-train", "final"]
    # Each generating stage on the checkpoint it needs, reloaded after each training stage, in order.
    loaded = [path for path, _ in engines["loads"]]
    assert loaded[0] == str(base)  # base evaluation and bootstrapped seed rationales
    assert str(out / "prover" / "model") in loaded  # proofs for the labeled pairs and the pseudo-labels
    for stage in ("round_00", "round_01", "final"):
        assert str(out / stage / "checkpoint") in loaded
    assert loaded.index(str(out / "round_00" / "checkpoint")) < loaded.index(str(out / "round_01" / "checkpoint"))
    assert len(engines["trained"]) == 4 and engines["trained_with_live_engine"] == []  # prover, 2 rounds, final
    # The same figures as the transformers models (greedy evaluation of the same checkpoints).
    trainer._engines.release()
    trainer._engines = None
    for stage, model in (
        ("base", trainer.models.fresh()),
        ("final", trainer.models.load(out / "final" / "checkpoint")),
    ):
        ref = trainer._evaluate(model)
        got = history[0]["eval"] if stage == "base" else history[-1]["eval"]
        assert got["accuracy"] == pytest.approx(ref["accuracy"])
        assert got["mean_prob_better"] == pytest.approx(ref["mean_prob_better"], abs=1e-4)
    seed = json.loads((out / "seed" / "summary.json").read_text())
    assert seed["source"].startswith("bootstrapped") and seed["rows"] == 4


def test_adapters_are_merged_once_for_vllm(tmp_path):
    from peft import LoraConfig, get_peft_model

    tok = make_tokenizer()
    base_model = make_model(tok)
    adapter = tmp_path / "adapter"
    get_peft_model(make_model(tok), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    tok.save_pretrained(adapter)
    merged = merged_checkpoint(adapter, lambda: base_model)
    assert merged == adapter / "merged_for_vllm" and (merged / "model.safetensors").is_file()
    assert merged_checkpoint(adapter, lambda: pytest.fail("merged twice")) == merged
    assert merged_checkpoint(merged, None) == merged  # a whole checkpoint is used as it is
