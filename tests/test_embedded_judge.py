"""The embedded default judge: reason training with direct examples beside (one adapter for both modes), the default
judge folder built from the shipped adapter, and the shipped adapter itself."""

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from training_utils import SHORT_REASON_TEMPLATE, make_model, make_tokenizer, rule_rows

from trl_gram import default_model
from trl_gram.judge import GramJudge
from trl_gram.training.config import GramRewardConfig
from trl_gram.training.losses import is_slot
from trl_gram.training.trainer import GramRewardTrainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _args(tmp_path, **kw):
    base = dict(report_to=[], use_cpu=True, bf16=False, save_strategy="no", disable_tqdm=True, max_length=1024,
                per_device_train_batch_size=8, learning_rate=1e-3, seed=0, judge_eval=False)
    base.update(kw)
    return GramRewardConfig(str(tmp_path / "out"), **base)


def test_direct_examples_double_the_data_with_the_direct_template(tok, tmp_path):
    rows = rule_rows(12, seed=3, with_rationale=True)
    args = _args(tmp_path, mode="reason", direct_examples=True, max_steps=2)
    trainer = GramRewardTrainer(make_model(tok), args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                                template=SHORT_REASON_TEMPLATE)
    stats = trainer.data_stats["train"]
    assert stats["examples"] == 12 and stats["direct_examples"] == 12
    assert len(trainer.train_dataset) == 24
    n_direct = 0
    for ex in trainer.train_dataset:
        ids, labels = ex["input_ids"], ex["labels"]
        supervised = [i for i, lab in enumerate(labels) if lab != -100]
        text = tok.decode(ids)
        if "#Preferred:" in text:  # GRAM v1 prompt (direct mode's default template): the label token alone
            n_direct += 1
            slots = [i for i in supervised if bool(is_slot(torch.tensor(labels[i])))]
            assert len(slots) == 1 and slots[0] >= len(ids) - 2
            assert supervised == slots  # nothing but the label is trained on
            assert tok.decode(ids[: slots[0]]).rstrip().endswith("assistant")  # right after the generation prompt
        else:
            assert "<think>" in tok.decode([ids[i] for i in supervised])
    assert n_direct == 12
    trainer.train()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


def test_direct_swap_both_shows_every_pair_in_both_orders_with_the_label_following(tok, tmp_path):
    rows = [{"prompt": f"question {i}", "chosen": f"zebra{i}", "rejected": f"quokka{i}",
             "rationale": f"Response A has zebra{i}. Response A is better."} for i in range(10)]
    args = _args(tmp_path, mode="reason", direct_examples=True, direct_swap="both", max_steps=1)
    trainer = GramRewardTrainer(make_model(tok), args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                                template=SHORT_REASON_TEMPLATE)
    assert trainer.data_stats["train"]["examples"] == 10 and trainer.data_stats["train"]["direct_examples"] == 20
    direct = [tok.decode(ex["input_ids"]) for ex in trainer.train_dataset if "#Preferred:" in tok.decode(ex["input_ids"])]
    assert len(direct) == 20
    for row in rows:  # the chosen response is labelled A when shown first and B when shown second
        shown = [t for t in direct if row["chosen"] in t and row["rejected"] in t]
        assert len(shown) == 2
        labels = {("A" if t.index(row["chosen"]) < t.index(row["rejected"]) else "B"): t.rstrip()[-1] for t in shown}
        assert labels == {"A": "A", "B": "B"}


def test_direct_swap_is_checked(tmp_path):
    with pytest.raises(ValueError, match="direct_swap"):
        _args(tmp_path, mode="reason", direct_examples=True, direct_swap="twice")
    with pytest.raises(ValueError, match="direct_examples=True"):
        _args(tmp_path, mode="reason", direct_swap="both")


def test_direct_examples_need_reason_mode(tmp_path):
    with pytest.raises(ValueError, match="direct_examples"):
        _args(tmp_path, mode="direct", direct_examples=True)


def _fake_install(tmp_path, monkeypatch, tok, with_adapter: bool):
    """A tiny 'embedded model' and, optionally, a LoRA adapter shipped beside it (instead of the real ones)."""
    from peft import LoraConfig, get_peft_model

    base = tmp_path / "base"
    make_model(tok).save_pretrained(base)
    tok.save_pretrained(base)
    monkeypatch.setenv("TRL_GRAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(default_model, "default_model_path", lambda: str(base))
    adapter = None
    if with_adapter:
        adapter = tmp_path / "shipped"
        peft_model = get_peft_model(make_model(tok), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
        peft_model.save_pretrained(adapter)
    monkeypatch.setattr(default_model, "embedded_adapter_path", lambda: adapter)
    return base, adapter


def test_default_judge_is_the_base_merged_with_the_shipped_adapter(tok, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, adapter = _fake_install(tmp_path, monkeypatch, tok, with_adapter=True)
    path = default_model.default_judge_path()
    assert Path(path).parent == tmp_path / "cache" and path != str(base)
    assert default_model.default_judge_path() == path  # built once, then reused
    x = torch.tensor([tok("Which is better? apple river", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter))(x).logits
        merged = AutoModelForCausalLM.from_pretrained(path)(x).logits
        plain = AutoModelForCausalLM.from_pretrained(base)(x).logits
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(plain, expected, atol=1e-3)  # the adapter changes the model
    # GramJudge.from_pretrained(None) loads the default judge; naming the base keeps the zero-shot model.
    judge = GramJudge.from_pretrained(None, device="cpu", mode="direct", template=SHORT_REASON_TEMPLATE.replace(
        reasoning=False))
    zero_shot = GramJudge.from_pretrained(str(base), device="cpu", mode="direct", template=SHORT_REASON_TEMPLATE.replace(
        reasoning=False))
    with torch.no_grad():
        assert torch.allclose(judge.model(x).logits, merged, atol=1e-5)
        assert torch.allclose(zero_shot.model(x).logits, plain, atol=1e-5)


def test_without_a_shipped_adapter_the_default_judge_is_the_base(tok, tmp_path, monkeypatch):
    base, _ = _fake_install(tmp_path, monkeypatch, tok, with_adapter=False)
    assert default_model.default_judge_path() == str(base)


SHIPPED = ROOT / "trl_gram" / default_model.EMBEDDED_ADAPTER_DIR


@pytest.mark.skipif(not (SHIPPED / "adapter_config.json").is_file(), reason="this checkout ships no adapter")
def test_the_shipped_adapter_is_small_and_a_lora_on_every_linear_layer():
    config = json.loads((SHIPPED / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= set(config["target_modules"])
    size = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert size <= 15 * 2**20
    assert default_model.embedded_adapter_path() == SHIPPED
