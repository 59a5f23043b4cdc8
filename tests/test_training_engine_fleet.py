"""`judge_backend="openai"` in GramSelfTrainer: the generating stages (evaluation, seed rationales, proofs,
pseudo-labels) run on running OpenAI-compatible engines that serve the base model, each stage's LoRA adapter loaded
into every engine at runtime and unloaded after it. The engines here are the stub servers of ``openai_stub.py`` (a
real tiny transformers model); ``test_openai_vllm.py`` runs the same loop on real ``vllm serve`` engines."""

import contextlib
import json

import pytest
from datasets import Dataset
from openai_stub import stub_app
from peft import LoraConfig
from training_utils import SHORT_REASON_TEMPLATE, make_model, make_tokenizer, rule_rows

from trl_gram.judge.backends.openai import EngineConnectionError, load_adapter
from trl_gram.serving.server import BackgroundServer
from trl_gram.training.config import GramRewardConfig
from trl_gram.training.pseudo_label import pseudo_label
from trl_gram.training.self_training import GramSelfTrainer, SelfTrainingConfig
from trl_gram.training.stage_engines import adapter_model_name


@contextlib.contextmanager
def stub_engines(model, tok, count=2, **kw):
    apps = [stub_app(model, tok, name="base", **kw) for _ in range(count)]
    with contextlib.ExitStack() as stack:
        yield apps, [stack.enter_context(BackgroundServer(app)) for app in apps]


def _loop(base, tok, out, urls, peft=True, **sargs):
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
        check_support=False,
        max_rationale_tokens=None,
        self_train_eval_max_samples=4,
        plot=False,
        judge_backend="openai",
        engine_urls=urls,
        served_model_name="base",
        **sargs,
    )
    unlabeled = [{"prompt": r["prompt"], "response_a": r["chosen"], "response_b": r["rejected"]} for r in rule_rows(4, 3)]
    return GramSelfTrainer(
        str(base),
        args,
        sargs,
        labeled_dataset=Dataset.from_list(rule_rows(4, 1)),
        unlabeled_dataset=Dataset.from_list(unlabeled),
        seed_dataset=Dataset.from_list(rule_rows(4, 5)),
        eval_dataset=Dataset.from_list(rule_rows(4, 9)),
        processing_class=tok,
        template=SHORT_REASON_TEMPLATE,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]) if peft else None,
    )


@pytest.fixture
def base(tmp_path):
    tok = make_tokenizer()
    path = tmp_path / "base"
    make_model(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path, tok


def test_self_training_generates_on_an_engine_fleet(base, tmp_path):
    path, tok = base
    out = tmp_path / "run"
    with stub_engines(make_model(tok), tok) as (apps, urls):
        trainer = _loop(path, tok, out, urls)
        history = trainer.run()
        assert [h["stage"] for h in history] == ["base", "initial", "self-train", "final"]
        # every adapter stage was loaded into both engines, then unloaded: the engines serve the base alone again
        # prover (proofs), round 0's judge (pseudo-labels), each judge (evaluation), under their weights' names
        stages = [out / "prover" / "model"] + [out / s / "checkpoint" for s in ("round_00", "round_01", "final")]
        for app in apps:
            assert {adapter_model_name(s) for s in stages} <= set(app.state.adapter_loads)
            assert sorted(app.state.models) == ["base"]
            assert app.state.prompts  # both engines judged (questions are spread by load)
        # the pseudo-labels are the round-0 judge's: the same probabilities as its checkpoint in memory
        predictions = [json.loads(line) for line in (out / "round_01" / "predictions.jsonl").open()]
        trainer._engines.release()
        trainer._engines = None
        sargs = trainer.sargs
        judge = trainer._judge(
            trainer.models.load(out / "round_00" / "checkpoint"),
            seed=trainer.args.seed + 1,
            swap=sargs.pseudo_label_swap,
            votes=sargs.pseudo_label_votes,
            temperature=sargs.pseudo_label_temperature,
        )
        ref = pseudo_label(judge, trainer._unlabeled_batch(1), trainer.label_words)
        assert [p["label"] for p in predictions] == [r["label"] for r in ref]
        assert [p["confidence"] for p in predictions] == pytest.approx([r["confidence"] for r in ref], abs=1e-4)
        # and the figures equal those of the transformers models
        ref_eval = trainer._evaluate(trainer.models.load(out / "final" / "checkpoint"))
        assert history[-1]["eval"]["mean_prob_better"] == pytest.approx(ref_eval["mean_prob_better"], abs=1e-4)


def test_the_fleet_needs_adapters_engine_urls_and_runtime_lora(base, tmp_path):
    path, tok = base
    with pytest.raises(ValueError, match="PEFT"):
        _loop(path, tok, tmp_path / "run", ["http://127.0.0.1:9"], peft=False)
    with pytest.raises(ValueError, match="engine_urls"):
        SelfTrainingConfig(judge_backend="openai")
    with pytest.raises(ValueError, match="engine_urls"):
        SelfTrainingConfig(engine_urls=["http://127.0.0.1:9"])
    adapter = tmp_path / "adapter"
    from peft import get_peft_model

    get_peft_model(make_model(tok), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    with stub_engines(make_model(tok), tok, count=1, lora=False) as (_, urls):
        with pytest.raises(EngineConnectionError, match=rf"{urls[0]}.*--enable-lora.*VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            load_adapter(urls, "x", str(adapter))
