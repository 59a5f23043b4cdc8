"""Presets of the released GRAM checkpoints: detected from the id, folder name or config; the GRAM v1 preset judges
exactly as the authors' evaluation does (Qwen3-style chat template with ``enable_thinking=False``, bare label tokens,
both orders averaged); explicit arguments win."""

import json

import pytest
import torch
from tiny_models import tiny_llama, tiny_tokenizer
from transformers import Qwen3Config, Qwen3ForCausalLM

from trl_gram.judge import GramJudge
from trl_gram.presets import PRESETS, detect_preset, get_preset, resolve_preset
from trl_gram.templates import GRAM_V1_PROMPT

# The structure of Qwen3's chat template: with enable_thinking=False the generation prompt ends with an empty
# think block (which is what the official GRAM v1 evaluation reads the label after).
QWEN3_STYLE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
    "{% endif %}"
)


def _tiny_qwen3(tok):
    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=4096,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    return Qwen3ForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def qwen3_gram(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "GRAM-Qwen3-1.7B-RewardModel"
    tok = tiny_tokenizer()
    tok.chat_template = QWEN3_STYLE
    _tiny_qwen3(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llama_r2(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "GRAM-RR-LLaMA-3.2-3B-RewardModel"
    tok = tiny_tokenizer()
    tiny_llama(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_table_lists_the_released_checkpoints():
    short = {name.split("/")[1] for name in PRESETS}
    assert short == {
        "GRAM-RR-LLaMA-3.1-8B-RewardModel",
        "GRAM-RR-LLaMA-3.2-3B-RewardModel",
        "GRAM-Qwen3-14B-RewardModel",
        "GRAM-Qwen3-8B-RewardModel",
        "GRAM-Qwen3-4B-RewardModel",
        "GRAM-Qwen3-1.7B-RewardModel",
        "GRAM-LLaMA3.2-3B-RewardModel",
    }
    for p in PRESETS.values():
        if p.family == "gram-v1":
            assert (p.mode, p.template, p.chat_template_kwargs) == ("direct", "gram-v1", {"enable_thinking": False})
        else:
            assert (p.mode, p.template, p.chat_template_kwargs) == ("reason", "gram-r2", {})
        assert p.label_scoring == "official"


@pytest.mark.parametrize(
    "name,expected",
    [
        ("wangclnlp/GRAM-Qwen3-8B-RewardModel", "wangclnlp/GRAM-Qwen3-8B-RewardModel"),
        ("/models/gram-qwen3-14b-rewardmodel/", "wangclnlp/GRAM-Qwen3-14B-RewardModel"),
        ("wangclnlp/GRAM-RR-LLaMA-3.1-8B-RewardModel", "wangclnlp/GRAM-RR-LLaMA-3.1-8B-RewardModel"),
        ("wangclnlp/GRAM-LLaMA3.2-3B-RewardModel", "wangclnlp/GRAM-LLaMA3.2-3B-RewardModel"),
        ("my-org/GRAM-RR-LLaMA-3.1-8B-RewardModel-ft", "wangclnlp/GRAM-RR-LLaMA-3.1-8B-RewardModel"),
        ("runs/gram-qwen3-32b-finetune", "gram-v1"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", None),
        ("runs/gram_v1_judge", None),
    ],
)
def test_detection_from_the_name(name, expected):
    preset = detect_preset(name)
    assert (preset.name if preset else None) == expected


def test_detection_from_the_config_file(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"_name_or_path": "wangclnlp/GRAM-Qwen3-4B-RewardModel", "architectures": ["Qwen3ForCausalLM"]})
    )
    assert detect_preset(str(tmp_path)).name == "wangclnlp/GRAM-Qwen3-4B-RewardModel"

    class Cfg:
        _name_or_path = "x/GRAM-Qwen-custom"
        architectures = ["Qwen3ForCausalLM"]

    fam = detect_preset("some/folder", Cfg())
    assert fam.family == "gram-v1" and fam.architecture == "Qwen3ForCausalLM"
    assert resolve_preset(None, "wangclnlp/GRAM-Qwen3-8B-RewardModel") is None
    assert get_preset("GRAM-Qwen3-8B-RewardModel").name == "wangclnlp/GRAM-Qwen3-8B-RewardModel"
    with pytest.raises(ValueError, match="Unknown `preset`"):
        get_preset("nope")


def test_v1_preset_judges_as_the_official_evaluation(qwen3_gram):
    judge = GramJudge.from_pretrained(str(qwen3_gram), device="cpu", dtype="float32", backend="transformers")
    cfg = judge.config
    assert (cfg.mode, cfg.template, cfg.chat_template_kwargs, cfg.label_scoring) == (
        "direct",
        "gram-v1",
        {"enable_thinking": False},
        "official",
    )
    prompt = judge.render_prompt("What is 2 + 3?", "5", "6")
    assert prompt.endswith("#Preferred: <|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    a_ids, b_ids = judge._label_token_ids(judge.template)
    tok = judge.tokenizer
    assert (a_ids, b_ids) == (
        tok("A", add_special_tokens=False).input_ids,
        tok("B", add_special_tokens=False).input_ids,
    )

    # The authors' computation: the v1 prompt as one user message, chat template with enable_thinking=False, softmax
    # over the bare A/B logits at the last position, averaged over both orders.
    q, r1, r2 = "What is 2 + 3?", "The answer is 5.", "It is 15."
    probs = []
    for first, second, index in ((r1, r2, 0), (r2, r1, 1)):
        content = GRAM_V1_PROMPT.replace("{input}", q).replace("{response_a}", first).replace("{response_b}", second)
        text = tok.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        ids = torch.tensor([tok(text).input_ids])
        with torch.no_grad():
            logits = judge.model(input_ids=ids).logits[0, -1, [a_ids[0], b_ids[0]]]
        probs.append(torch.softmax(logits.float(), -1)[index].item())
    official = sum(probs) / 2
    (judgment,) = judge.judge([q], [r1], [r2])
    assert judgment.prob == pytest.approx(official, abs=1e-5)


def test_explicit_arguments_win(qwen3_gram):
    judge = GramJudge.from_pretrained(str(qwen3_gram), device="cpu", label_scoring="merged", chat_template_kwargs={})
    assert judge.config.label_scoring == "merged" and judge.config.chat_template_kwargs == {}
    assert not judge.render_prompt("q", "a", "b").endswith("</think>\n\n")
    reason = GramJudge.from_pretrained(str(qwen3_gram), device="cpu", mode="reason", max_new_tokens=4)
    assert reason.config.mode == "reason" and reason.template.reasoning  # the preset's direct template is not forced
    plain = GramJudge.from_pretrained(str(qwen3_gram), device="cpu", preset=None)
    assert (plain.config.mode, plain.config.label_scoring, plain.config.chat_template_kwargs) == (
        "reason",
        "merged",
        {},
    )


def test_r2_preset_and_label_scoring(llama_r2):
    judge = GramJudge.from_pretrained(str(llama_r2), device="cpu", max_new_tokens=4)
    assert (judge.config.mode, judge.config.template, judge.config.chat_template_kwargs) == ("reason", "gram-r2", {})
    (j,) = judge.judge(["q"], ["a"], ["b"], swap="none")
    assert 0.0 <= j.prob <= 1.0
    tok = judge.tokenizer
    merged = GramJudge(judge.model, tok, label_scoring="merged")
    official = GramJudge(judge.model, tok, label_scoring="official")
    spaced = tok(" A", add_special_tokens=False).input_ids
    m_ids, o_ids = merged._label_token_ids(merged.template), official._label_token_ids(official.template)
    assert o_ids == (tok("A", add_special_tokens=False).input_ids, tok("B", add_special_tokens=False).input_ids)
    if len(spaced) == 1:
        assert m_ids[0] == o_ids[0] + spaced
    with pytest.raises(ValueError, match="label_scoring"):
        GramJudge(judge.model, tok, label_scoring="sum")


def test_eval_command_uses_the_preset(qwen3_gram, tmp_path, capsys):
    from trl_gram import cli

    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "What is 2 + 3?", "chosen": "5", "rejected": "6"}) + "\n")
    out = tmp_path / "out.json"
    assert cli.main(["eval", "--data", str(data), "--judge_model", str(qwen3_gram), "--output_json", str(out)]) == 0
    judge = json.loads(out.read_text())[str(data)]["judge"]
    assert (judge["mode"], judge["template"], judge["chat_template_kwargs"], judge["label_scoring"]) == (
        "direct",
        "gram-v1",
        {"enable_thinking": False},
        "official",
    )
    assert "label_scoring=official" in capsys.readouterr().out
