"""One judge spec: every surface that configures a judge shows the same defaults, and `load_judge` is the one
dispatcher of the `backend` choice, resolved after a released checkpoint's preset."""

import dataclasses

import pytest
from trl import TrlParser

from trl_gram.judge import GramJudge, GramJudgeConfig, JudgeSpec, judge_arguments, load_judge, loading
from trl_gram.judge.spec import PRESET_FIELDS, judge_default


def _spec_fields(spec: JudgeSpec) -> dict:
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(JudgeSpec)}


def test_every_config_field_has_help_and_is_in_the_spec():
    spec_names = {f.name for f in dataclasses.fields(JudgeSpec)}
    for f in dataclasses.fields(GramJudgeConfig):
        assert f.metadata.get("help"), f"GramJudgeConfig.{f.name} has no help"
        assert f.name in spec_names
    for f in dataclasses.fields(JudgeSpec):
        assert f.metadata.get("help"), f"JudgeSpec.{f.name} has no help"
    assert "engine" not in spec_names  # one engine field: `backend`


def test_every_surface_shows_the_same_judge_defaults(monkeypatch):
    from trl_gram.evaluation.cli import parse_eval_args
    from trl_gram.script_utils import JudgeArguments
    from trl_gram.serving.cli import parse_serve_args
    from trl_gram.training.config import GramRewardConfig
    from trl_gram.training.self_training_config import SelfTrainingConfig

    default = JudgeSpec()
    assert default.judge_config() == GramJudgeConfig()  # preset fields left None take the config's defaults
    serve_spec, _ = parse_serve_args([])
    _, eval_spec = parse_eval_args(["--data", "x.json"])
    (script_args,) = TrlParser((JudgeArguments,)).parse_args_and_config([])
    for spec in (serve_spec, eval_spec, script_args.spec()):
        assert _spec_fields(spec) == _spec_fields(default)
    train = GramRewardConfig(output_dir="unused", use_cpu=True, bf16=False)
    assert (train.judge_eval_swap, train.judge_eval_votes, train.judge_eval_max_new_tokens) == (
        judge_default("swap"),
        judge_default("votes"),
        judge_default("max_new_tokens"),
    )
    loop = SelfTrainingConfig()
    assert (loop.pseudo_label_swap, loop.pseudo_label_votes, loop.pseudo_label_temperature) == (
        judge_default("swap"),
        judge_default("votes"),
        judge_default("temperature"),
    )
    assert (loop.vllm_tensor_parallel_size, loop.vllm_gpu_memory_utilization) == (
        judge_default("tensor_parallel_size"),
        judge_default("gpu_memory_utilization"),
    )
    # each default is the config's: changing it there changes every surface
    for name in PRESET_FIELDS:
        assert getattr(default, name) is None
        assert getattr(default.judge_config(), name) == judge_default(name)


def test_prefixed_arguments_round_trip_and_old_flag_names():
    args_cls = judge_arguments()
    argv = ["--judge_model_name_or_path", "some/judge", "--judge_mode", "direct", "--judge_backend", "openai"]
    argv += [
        "--judge_chat_template_kwargs",
        '{"enable_thinking": false}',
        "--judge_engine_urls",
        "http://a",
        "http://b",
    ]
    (args,) = TrlParser((args_cls,)).parse_args_and_config(argv)
    spec = args.spec()
    assert (spec.model, spec.mode, spec.backend) == ("some/judge", "direct", "openai")
    assert spec.chat_template_kwargs == {"enable_thinking": False}
    assert spec.engine_urls == ["http://a", "http://b"]
    assert args_cls(**spec.to_prefixed()).spec() == spec
    (args,) = TrlParser((JudgeSpec,)).parse_args_and_config(["--judge_model", "x", "--swap", "none"])
    assert (args.model, args.swap) == ("x", "none")
    with pytest.raises(ValueError, match="backend"):
        JudgeSpec(backend="fast")
    with pytest.raises(ValueError, match="preset"):
        JudgeSpec(preset="nope")
    with pytest.raises(ValueError, match="engine_urls"):
        JudgeSpec(backend="openai")
    with pytest.raises(ValueError, match="engine_urls"):
        JudgeSpec(backend="transformers", engine_urls=["http://127.0.0.1:1/v1"])


def _record_loads(monkeypatch):
    calls = []

    def fake(kind):
        def load(cls, model, **kwargs):
            calls.append((kind, model, kwargs))
            return kind

        return classmethod(load)

    monkeypatch.setattr(GramJudge, "from_pretrained", fake("transformers"))
    monkeypatch.setattr(GramJudge, "from_vllm", fake("vllm"))
    return calls


def test_backend_is_resolved_after_the_preset(monkeypatch):
    """`backend="auto"` with vLLM installed: a GRAM v1 checkpoint (the preset makes it a direct judge) loads on
    transformers (the prefix engine on CPU), a GRAM-R² checkpoint (a reasoning judge) on vLLM."""
    calls = _record_loads(monkeypatch)
    monkeypatch.setattr(loading, "vllm_available", lambda: True)
    assert load_judge(JudgeSpec(model="wangclnlp/GRAM-Qwen3-8B-RewardModel")) == "transformers"
    kind, model, kwargs = calls[-1]
    assert kwargs["mode"] == "direct" and kwargs["label_scoring"] == "official" and kwargs["preset"] is None
    assert kwargs["chat_template_kwargs"] == {"enable_thinking": False} and kwargs["backend"] == "auto"
    assert load_judge("wangclnlp/GRAM-RR-LLaMA-3.2-3B-RewardModel") == "vllm"
    assert calls[-1][2]["mode"] == "reason"
    # an explicit field wins over the preset, and decides the backend
    assert load_judge("wangclnlp/GRAM-RR-LLaMA-3.2-3B-RewardModel", mode="direct") == "transformers"
    assert calls[-1][2]["mode"] == "direct" and "template" not in calls[-1][2]
    assert load_judge(JudgeSpec(model="m", backend="prefix")) == "transformers"
    assert calls[-1][2]["backend"] == "prefix"
    monkeypatch.setattr(loading, "vllm_available", lambda: False)
    assert load_judge("wangclnlp/GRAM-RR-LLaMA-3.2-3B-RewardModel") == "transformers"


def test_openai_backend_needs_from_openai(monkeypatch):
    if hasattr(GramJudge, "from_openai"):
        pytest.skip("GramJudge.from_openai exists: tested with the engine fleet")
    with pytest.raises(ValueError, match="from_openai"):
        load_judge(JudgeSpec(model="m", backend="openai", engine_urls=["http://127.0.0.1:1/v1"]))


def test_spec_loads_a_real_tiny_judge(tokenizer, tmp_path):
    from tiny_models import tiny_llama

    path = tmp_path / "judge"
    tiny_llama(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    judge = JudgeSpec(model=str(path), mode="direct", backend="transformers", dtype="float32", device="cpu").load()
    assert judge.backend.name == "transformers" and judge.config.mode == "direct"
    (verdict,) = judge.judge(["q"], ["a"], ["b"])
    assert 0.0 <= verdict.prob <= 1.0
