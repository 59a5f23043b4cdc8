"""The vLLM backend without vLLM: request building and result parsing, and the whole backend against a stand-in for
``vllm.LLM`` that runs a real tiny transformers model (same results as the transformers backend). The same backend
against real vLLM is in ``test_vllm_real.py`` (marker ``vllm``)."""

import importlib.util
import math
from types import SimpleNamespace

import pytest
import speed_utils
import torch
from fake_vllm import FakeLLM, FakeParams
from tiny_models import tiny_llama

from trl_gram.judge import GramJudge, load_judge
from trl_gram.judge.backends import GenerationSettings, JudgeBackend
from trl_gram.judge.backends import vllm as vb

QUESTIONS = speed_utils.QUESTIONS
FIRST = [g[0] for g in speed_utils.RESPONSES]
SECOND = [g[1] for g in speed_utils.RESPONSES]
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_request_builders_and_parsers():
    greedy = GenerationSettings(max_new_tokens=9)
    r = vb.rationale_request([1, 2], answer_open="<answer>", settings=greedy, seed=3)
    assert r.prompt_token_ids == [1, 2] and r.params["stop"] == ["<answer>"] and r.params["temperature"] == 0.0
    assert r.params["include_stop_str_in_output"] and "seed" not in r.params and r.params["max_tokens"] == 9
    sampled = GenerationSettings(max_new_tokens=9, sample=True, temperature=0.7, top_p=0.9)
    r = vb.rationale_request([1], answer_open="<a>", settings=sampled, seed=3)
    assert r.params["temperature"] == 0.7 and r.params["top_p"] == 0.9 and r.params["seed"] == 3
    assert vb.slot_request([5], [8, 7]).params == dict(max_tokens=1, temperature=0.0, logprob_token_ids=[8, 7])
    ahead = vb.lookahead_request([5, 6], [8, 7], settings=greedy, seed=0, max_tokens=4)
    assert ahead.prompt_token_ids == [5, 6] and ahead.params["logprob_token_ids"] == [8, 7]
    step = {7: SimpleNamespace(logprob=-0.1), 8: SimpleNamespace(logprob=-2.5)}
    assert vb.label_logprobs(step, [8, 7]).tolist() == pytest.approx([-2.5, -0.1])
    with pytest.raises(RuntimeError, match=r"label token\(s\) \[3\]"):
        vb.label_logprobs(step, [8, 3])
    out = SimpleNamespace(outputs=[SimpleNamespace(text="x", token_ids=[7], finish_reason="stop", logprobs=[step])])
    assert vb.generated(out) == ("x", [7], "stop")


@pytest.fixture(scope="module")
def sharp_model(tokenizer):
    model = tiny_llama(tokenizer, seed=1, hidden=64)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    return model


def _vllm_judge(llm, seeded_requests=True, **kw):
    backend = vb.VLLMBackend(llm, sampling_params_cls=FakeParams, seeded_requests=seeded_requests)
    return GramJudge(backend=backend, **kw)


def test_direct_mode_matches_transformers_backend(sharp_model, tokenizer):
    llm = FakeLLM(sharp_model, tokenizer)
    judge = _vllm_judge(llm, mode="direct", cache_size=0)
    assert judge.backend.name == "vllm" and isinstance(judge.backend, JudgeBackend)
    plain = GramJudge(sharp_model, tokenizer, mode="direct", backend="transformers", cache_size=0)
    got, ref = judge.judge(QUESTIONS, FIRST, SECOND), plain.judge(QUESTIONS, FIRST, SECOND)
    for g, r in zip(got, ref):
        assert g.prob == pytest.approx(r.prob, abs=1e-4) and g.label == r.label
        assert [x.prob_first for x in g.runs] == pytest.approx([x.prob_first for x in r.runs], abs=1e-4)
    # One request per prompt, never a prompt-logprob request (those skip vLLM's prefix cache).
    assert len(llm.requests) == 2 * len(QUESTIONS)
    assert all(getattr(sp, "prompt_logprobs", None) is None for _, sp in llm.requests)


@pytest.fixture(scope="module")
def verdict_model(tokenizer):
    return speed_utils.verdict_model(tokenizer)


def test_reason_mode_matches_transformers_backend(verdict_model, tokenizer):
    llm = FakeLLM(verdict_model, tokenizer)
    judge = _vllm_judge(llm, max_new_tokens=40, cache_size=0)
    plain = GramJudge(verdict_model, tokenizer, backend="transformers", max_new_tokens=40, cache_size=0)
    got, ref = judge.judge(QUESTIONS, FIRST, SECOND), plain.judge(QUESTIONS, FIRST, SECOND)
    for g, r in zip(got, ref):
        for x, y in zip(g.runs, r.runs):
            assert x.text == y.text and x.label == y.label == "B" and x.failure is None
            assert x.prob_first == pytest.approx(y.prob_first, abs=1e-4)
    # Phase 1 stops at the answer tag; phase 2 continues the very same token ids.
    phase1 = [(ids, sp) for ids, sp in llm.requests if getattr(sp, "stop", None)]
    assert phase1 and all(sp.stop == ["<answer>"] and sp.max_tokens == 40 for _, sp in phase1)
    phase2 = [ids for ids, sp in llm.requests if getattr(sp, "logprob_token_ids", None) and sp.max_tokens > 1]
    assert len(phase2) == len(phase1)
    assert all(any(ids[: len(p)] == p for p, _ in phase1) for ids in phase2)


def test_reason_mode_forced_and_votes(tokenizer):
    raw = tiny_llama(tokenizer, seed=5)
    llm = FakeLLM(raw, tokenizer)
    judge = _vllm_judge(llm, max_new_tokens=6, cache_size=0)
    plain = GramJudge(raw, tokenizer, backend="transformers", max_new_tokens=6, cache_size=0)
    got, ref = judge.judge(QUESTIONS[:1], FIRST[:1], SECOND[:1]), plain.judge(QUESTIONS[:1], FIRST[:1], SECOND[:1])
    assert got[0].failure is not None and not math.isnan(got[0].prob)
    assert got[0].prob == pytest.approx(ref[0].prob, abs=1e-4)  # the same forced read
    unforced = _vllm_judge(llm, max_new_tokens=6, force_answer=False)
    assert math.isnan(unforced.judge(QUESTIONS[:1], FIRST[:1], SECOND[:1], swap="none")[0].prob)
    llm.requests.clear()
    voted = judge.judge(QUESTIONS[:1], FIRST[:1], SECOND[:1], votes=3, seed=2)
    assert len(voted[0].runs) == 6
    seeds = [sp.seed for _, sp in llm.requests if getattr(sp, "stop", None) and sp.temperature > 0]
    assert len(set(seeds)) == 6  # one seeded request per vote and order
    # Unseeded requests (the CPU default: vLLM 0.32 cannot offset a CPU generator under chunked prefill).
    llm.requests.clear()
    _vllm_judge(llm, seeded_requests=False, max_new_tokens=6).judge(QUESTIONS[:1], FIRST[:1], SECOND[:1], votes=2)
    sampled = [sp for _, sp in llm.requests if getattr(sp, "temperature", 0) > 0]
    assert sampled and all(not hasattr(sp, "seed") for sp in sampled)


def test_sequence_logprobs_match_a_forward(sharp_model, tokenizer):
    backend = vb.VLLMBackend(FakeLLM(sharp_model, tokenizer), sampling_params_cls=FakeParams)
    prompts, completions = [[5, 6, 7], [9, 10]], [[11, 12], [13]]
    got = backend.sequence_logprobs(prompts, completions)
    for p, c, value in zip(prompts, completions, got):
        with torch.no_grad():
            logp = torch.log_softmax(sharp_model(torch.tensor([p + c])).logits[0].float(), -1)
        assert value == pytest.approx(sum(float(logp[len(p) + i - 1, t]) for i, t in enumerate(c)), abs=1e-4)


def test_release_and_load_errors(sharp_model, tokenizer):
    backend = vb.VLLMBackend(FakeLLM(sharp_model, tokenizer), sampling_params_cls=FakeParams)
    backend.release()
    with pytest.raises(RuntimeError, match="released"):
        backend.slot_logits([[1, 2]], [3])
    if HAS_VLLM:
        pytest.skip("vLLM is installed")
    with pytest.raises(ImportError, match=r"trl-gram\[vllm\]"):
        GramJudge.from_vllm("some/model")
    with pytest.raises(ValueError, match="adapter"):
        load_judge("some/model", backend="vllm", adapter="x")


def test_auto_backend_rule(monkeypatch):
    from trl_gram.judge import loading

    monkeypatch.setattr(loading, "vllm_available", lambda: True)
    assert loading.resolve_backend("auto", "reason") == "vllm"
    assert loading.resolve_backend("auto", "direct") == "transformers"  # the prefix engine measured faster there
    monkeypatch.setattr(loading, "vllm_available", lambda: False)
    assert loading.resolve_backend("auto", "reason") == "transformers"
    assert loading.resolve_backend("vllm", "direct") == "vllm"
    with pytest.raises(ValueError, match="backend"):
        loading.resolve_backend("tensorrt")
