"""The vLLM backend: request building and result parsing without vLLM, and the whole adapter against a stand-in for
``vllm.LLM`` that runs a real tiny transformers model (same results as the transformers engine). A real vLLM run is
skipped cleanly when vLLM (or a GPU) is absent."""

import importlib.util
import math
from types import SimpleNamespace

import pytest
import speed_utils
import torch
from tiny_models import tiny_llama

from trl_gram.backends import vllm_backend as vb
from trl_gram.judge import GramJudge

QUESTIONS = speed_utils.QUESTIONS
FIRST = [g[0] for g in speed_utils.RESPONSES]
SECOND = [g[1] for g in speed_utils.RESPONSES]
HAS_VLLM = importlib.util.find_spec("vllm") is not None


class FakeParams(SimpleNamespace):
    """Stands in for ``vllm.SamplingParams`` (keyword arguments kept as attributes)."""


class FakeLLM:
    """Implements the part of ``vllm.LLM.generate`` the adapter uses, with a transformers model."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.requests = []

    def get_tokenizer(self):
        return self.tokenizer

    @torch.no_grad()
    def generate(self, prompts, params, use_tqdm=True):
        return [self._one(p["prompt_token_ids"], sp) for p, sp in zip(prompts, params)]

    def _one(self, ids, sp):
        self.requests.append((list(ids), sp))
        prompt_logprobs = None
        if getattr(sp, "prompt_logprobs", None) is not None:
            logp = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), -1)
            prompt_logprobs = [None] + [
                {ids[k]: SimpleNamespace(logprob=float(logp[k - 1, ids[k]]))} for k in range(1, len(ids))
            ]
        gen, steps, finish, text = [], [], "length", ""
        rng = torch.Generator().manual_seed(getattr(sp, "seed", None) or 0)
        for _ in range(sp.max_tokens):
            logits = self.model(torch.tensor([ids + gen])).logits[0, -1].float()
            logp = torch.log_softmax(logits, -1)
            if sp.temperature == 0:
                token = int(logits.argmax())
            else:
                token = int(torch.multinomial(torch.softmax(logits / sp.temperature, -1), 1, generator=rng))
            gen.append(token)
            if getattr(sp, "logprobs", None):
                top = torch.topk(logp, sp.logprobs).indices.tolist()
                steps.append({t: SimpleNamespace(logprob=float(logp[t])) for t in top + [token]})
            text = self.tokenizer.decode(gen, skip_special_tokens=True)
            stops = [s for s in getattr(sp, "stop", None) or [] if s in text]
            if stops:
                cut = text.index(stops[0]) + (len(stops[0]) if sp.include_stop_str_in_output else 0)
                text, finish = text[:cut], "stop"
                break
            if token == self.tokenizer.eos_token_id:
                finish = "stop"
                break
        out = SimpleNamespace(text=text, token_ids=gen, finish_reason=finish, logprobs=steps or None)
        return SimpleNamespace(outputs=[out], prompt_logprobs=prompt_logprobs)


def test_request_builders_and_parsers():
    r = vb.rationale_request(
        [1, 2], answer_open="<answer>", max_new_tokens=9, sample=False, temperature=0.7, top_p=0.9, seed=3
    )
    assert r.prompt_token_ids == [1, 2] and r.params["stop"] == ["<answer>"] and r.params["temperature"] == 0.0
    assert r.params["include_stop_str_in_output"] and "seed" not in r.params
    r = vb.rationale_request([1], answer_open="<a>", max_new_tokens=9, sample=True, temperature=0.7, top_p=0.9, seed=3)
    assert r.params["temperature"] == 0.7 and r.params["top_p"] == 0.9 and r.params["seed"] == 3
    assert vb.slot_request([5]).params == dict(max_tokens=1, temperature=0.0, logprobs=20, detokenize=True)
    lr = vb.label_request([5, 6], 9)
    assert lr.prompt_token_ids == [5, 6, 9] and lr.params["prompt_logprobs"] == 0
    out = SimpleNamespace(
        outputs=[
            SimpleNamespace(
                text="x",
                token_ids=[7],
                finish_reason="stop",
                logprobs=[{7: SimpleNamespace(logprob=-0.1), 8: SimpleNamespace(logprob=-2.5)}],
            )
        ],
        prompt_logprobs=[None, {9: SimpleNamespace(logprob=-1.25)}],
    )
    assert vb.label_logprobs(out, [8, 7, 3]) == [-2.5, -0.1, None]
    assert vb.prompt_label_logprob(out, 9) == -1.25
    assert vb.generated(out) == ("x", [7], "stop")


@pytest.fixture(scope="module")
def sharp_model(tokenizer):
    model = tiny_llama(tokenizer, seed=1, hidden=64)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    return model


def test_direct_mode_matches_transformers_engine(sharp_model, tokenizer):
    llm = FakeLLM(sharp_model, tokenizer)
    judge = vb.VLLMGramJudge(llm, mode="direct", sampling_params_cls=FakeParams, cache_size=0)
    plain = GramJudge(sharp_model, tokenizer, mode="direct", engine="plain", cache_size=0)
    got, ref = judge.judge(QUESTIONS, FIRST, SECOND), plain.judge(QUESTIONS, FIRST, SECOND)
    for g, r in zip(got, ref):
        assert g.prob == pytest.approx(r.prob, abs=1e-4) and g.label == r.label
        assert [x.prob_first for x in g.runs] == pytest.approx([x.prob_first for x in r.runs], abs=1e-4)
    # With a top-1 cut-off most label tokens are missing there and are read exactly with prompt-logprob requests.
    exact = vb.VLLMGramJudge(llm, mode="direct", sampling_params_cls=FakeParams, cache_size=0)
    llm.requests.clear()
    original = vb.TOP_LOGPROBS
    try:
        vb.TOP_LOGPROBS = 1
        vb.slot_request.__defaults__ = (1,)
        got = exact.judge(QUESTIONS, FIRST, SECOND)
    finally:
        vb.TOP_LOGPROBS = original
        vb.slot_request.__defaults__ = (original,)
    assert any(getattr(sp, "prompt_logprobs", None) == 0 for _, sp in llm.requests)
    assert [g.prob for g in got] == pytest.approx([r.prob for r in ref], abs=1e-4)


@pytest.fixture(scope="module")
def verdict_model(tokenizer):
    return speed_utils.verdict_model(tokenizer)


def test_reason_mode_matches_transformers_engine(verdict_model, tokenizer):
    llm = FakeLLM(verdict_model, tokenizer)
    judge = vb.VLLMGramJudge(llm, sampling_params_cls=FakeParams, max_new_tokens=40, cache_size=0)
    plain = GramJudge(verdict_model, tokenizer, engine="plain", max_new_tokens=40, cache_size=0)
    got, ref = judge.judge(QUESTIONS, FIRST, SECOND), plain.judge(QUESTIONS, FIRST, SECOND)
    for g, r in zip(got, ref):
        for x, y in zip(g.runs, r.runs):
            assert x.text == y.text and x.label == y.label == "B" and x.failure is None
            assert x.prob_first == pytest.approx(y.prob_first, abs=1e-4)
    # Phase 1 stops at the answer tag.
    phase1 = [sp for _, sp in llm.requests if getattr(sp, "stop", None)]
    assert phase1 and all(sp.stop == ["<answer>"] and sp.max_tokens == 40 for sp in phase1)


def test_reason_mode_forced_and_votes(tokenizer):
    raw = tiny_llama(tokenizer, seed=5)
    llm = FakeLLM(raw, tokenizer)
    judge = vb.VLLMGramJudge(llm, sampling_params_cls=FakeParams, max_new_tokens=6, cache_size=0)
    plain = GramJudge(raw, tokenizer, engine="plain", max_new_tokens=6, cache_size=0)
    got, ref = judge.judge(QUESTIONS[:1], FIRST[:1], SECOND[:1]), plain.judge(QUESTIONS[:1], FIRST[:1], SECOND[:1])
    assert got[0].failure is not None and not math.isnan(got[0].prob)
    assert got[0].prob == pytest.approx(ref[0].prob, abs=1e-4)  # the same forced read
    unforced = vb.VLLMGramJudge(llm, sampling_params_cls=FakeParams, max_new_tokens=6, force_answer=False)
    assert math.isnan(unforced.judge(QUESTIONS[:1], FIRST[:1], SECOND[:1], swap="none")[0].prob)
    voted = judge.judge(QUESTIONS[:1], FIRST[:1], SECOND[:1], votes=3, seed=2)
    assert len(voted[0].runs) == 6
    seeds = [sp.seed for _, sp in llm.requests if getattr(sp, "stop", None) and sp.temperature > 0]
    assert len(set(seeds)) == 6  # one seeded request per vote and order


def test_from_pretrained_without_vllm_is_a_clear_error():
    if HAS_VLLM:
        pytest.skip("vLLM is installed")
    with pytest.raises(ImportError, match=r"trl-gram\[vllm\]"):
        vb.VLLMGramJudge.from_pretrained("some/model")


@pytest.mark.slow
@pytest.mark.skipif(not (HAS_VLLM and torch.cuda.is_available()), reason="needs vLLM and a GPU")
def test_real_vllm_on_the_default_model():  # pragma: no cover  (runs where vLLM and a GPU exist)
    judge = vb.VLLMGramJudge.from_pretrained(None, mode="direct", gpu_memory_utilization=0.3)
    out = judge.judge(QUESTIONS, FIRST, SECOND)
    assert all(0.0 <= jd.prob <= 1.0 for jd in out)
