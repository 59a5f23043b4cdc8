"""The reward server started in-process on 127.0.0.1 with a real tiny judge: answers equal the local judge's, OpenRLHF
and TRL request shapes, concurrent callers batched together, malformed requests, size limits, auth, readiness, and a
bounded load test."""

import asyncio
import json
import statistics
import threading
import time

import httpx
import pytest
import torch
from tiny_models import tiny_llama

from trl_gram.judge import GramJudge
from trl_gram.serving import scoring
from trl_gram.serving.server import BackgroundServer, ServeConfig, create_app, split_openrlhf

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

QUESTIONS = ["What is 2 + 3?", "Write a poem about the sea."]
GROUPS = [["The answer is 5.", "It is 6.", "5"], ["The sea is big and blue.", "Sea.", "Fine, thanks."]]


@pytest.fixture(scope="module")
def judge(tokenizer):
    model = tiny_llama(tokenizer, seed=1, hidden=64)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    return GramJudge(model, tokenizer, mode="direct", cache_size=0)


@pytest.fixture(scope="module")
def server(judge):
    app = create_app(judge, ServeConfig(batch_window_ms=30, max_request_bytes=200_000, max_pairs_per_request=50))
    with BackgroundServer(app) as url:
        yield url, app


def _flat():
    prompts = [q for q, g in zip(QUESTIONS, GROUPS) for _ in g]
    completions = [c for g in GROUPS for c in g]
    return prompts, completions


def _local_rewards(judge, prompts, completions, references=None, reference="group"):
    comparisons = scoring.plan(prompts, completions, references, reference)
    judgments = judge.judge([c[1] for c in comparisons], [c[2] for c in comparisons], [c[3] for c in comparisons])
    return scoring.aggregate(len(completions), comparisons, judgments)[0]


def test_health_ready_and_stats(server):
    url, _ = server
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    assert httpx.get(f"{url}/ready").json() == {"ready": True}
    assert "batcher" in httpx.get(f"{url}/stats").json()


def test_judge_endpoint_matches_local_judge(server, judge):
    url, _ = server
    local = judge.judge(["What is 2 + 3?"], ["5"], ["6"])[0]
    one = httpx.post(f"{url}/judge", json={"question": "What is 2 + 3?", "response_a": "5", "response_b": "6"}).json()
    assert one["prob"] == pytest.approx(local.prob, abs=1e-5) and one["label"] == local.label
    assert one["agreement"] == local.agreement and one["failure"] is None
    pairs = [{"question": q, "response_a": g[0], "response_b": g[1]} for q, g in zip(QUESTIONS, GROUPS)]
    many = httpx.post(f"{url}/judge", json={"pairs": pairs, "swap": "none"}).json()["results"]
    local = judge.judge(QUESTIONS, [g[0] for g in GROUPS], [g[1] for g in GROUPS], swap="none")
    assert [r["prob"] for r in many] == pytest.approx([jd.prob for jd in local], abs=1e-5)
    # Conversations are accepted as questions and responses.
    conv = {"question": [{"role": "user", "content": "Hi"}], "response_a": "Hello", "response_b": "Go away"}
    assert 0.0 <= httpx.post(f"{url}/judge", json=conv).json()["prob"] <= 1.0


def test_reward_endpoint_matches_local_scoring(server, judge):
    url, _ = server
    prompts, completions = _flat()
    got = httpx.post(f"{url}/reward", json={"prompts": prompts, "completions": completions}).json()
    assert got["rewards"] == pytest.approx(_local_rewards(judge, prompts, completions), abs=1e-5)
    assert got["stats"]["pairs"] == 6
    refs = ["5"] * len(completions)
    got = httpx.post(f"{url}/reward", json={"prompts": prompts, "completions": completions, "references": refs}).json()
    assert got["rewards"] == pytest.approx(_local_rewards(judge, prompts, completions, refs), abs=1e-5)
    pivot = httpx.post(f"{url}/reward", json={"prompts": prompts, "completions": completions, "reference": "pivot"})
    assert pivot.json()["stats"]["pairs"] == 4
    lone = httpx.post(f"{url}/reward", json={"prompts": ["q"], "completions": ["only one"]}).json()
    assert lone["rewards"] == [None]  # nothing to compare with


def test_openrlhf_get_reward(server, judge):
    url, _ = server
    prompts, completions = _flat()
    chat = [f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n" for p in prompts]
    queries = [f"<pad><pad>{c}{r}<|im_end|>" for c, r in zip(chat, completions)]
    got = httpx.post(f"{url}/get_reward", json={"query": queries, "prompts": chat}).json()
    questions, responses = split_openrlhf(queries, chat, ServeConfig().strip_tokens)
    assert responses == completions
    assert got["rewards"] == pytest.approx(_local_rewards(judge, questions, responses), abs=1e-5)
    assert got["scores"] == got["rewards"]
    labels = ["5"] * len(queries)
    with_labels = httpx.post(f"{url}/get_reward", json={"query": queries, "prompts": chat, "labels": labels}).json()
    assert with_labels["rewards"] == pytest.approx(_local_rewards(judge, questions, responses, labels), abs=1e-5)
    # A lone response without a label gets the neutral reward (OpenRLHF needs a number).
    lone = httpx.post(f"{url}/get_reward", json={"query": ["q and a"], "prompts": ["q"], "labels": [""]}).json()
    assert lone["rewards"] == [0.5]


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/judge", b"{not json", 400, "Malformed JSON"),
        ("/judge", b"[1, 2]", 400, "JSON object"),
        ("/judge", json.dumps({"question": "q", "response_a": "a"}).encode(), 400, "response_b"),
        ("/judge", json.dumps({"question": 3, "response_a": "a", "response_b": "b"}).encode(), 400, "question"),
        ("/judge", json.dumps({"pairs": "nope"}).encode(), 400, "pairs"),
        ("/reward", json.dumps({"prompts": ["q"], "completions": ["a", "b"]}).encode(), 400, "prompts"),
        (
            "/reward",
            json.dumps({"prompts": ["q", "q"], "completions": ["a", "b"], "reference": "x"}).encode(),
            400,
            "reference",
        ),
        ("/get_reward", json.dumps({"query": ["abc"]}).encode(), 400, "prompts"),
        ("/get_reward", json.dumps({"query": ["abc"], "prompts": ["zzz"]}).encode(), 400, "does not contain"),
        (
            "/judge",
            json.dumps({"question": "q" * 300_000, "response_a": "a", "response_b": "b"}).encode(),
            413,
            "bytes",
        ),
        (
            "/reward",
            json.dumps({"prompts": ["q"] * 12, "completions": [str(i) for i in range(12)]}).encode(),
            413,
            "max_pairs_per_request",
        ),
    ],
)
def test_malformed_requests_get_clear_4xx(server, path, body, status, message):
    url, _ = server
    response = httpx.post(url + path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert message in response.json()["error"]


def test_bearer_token(judge):
    app = create_app(judge, ServeConfig(api_key="s3cret"))
    body = {"question": "q", "response_a": "a", "response_b": "b"}
    with BackgroundServer(app) as url:
        assert httpx.get(f"{url}/health").status_code == 200  # health and readiness stay open
        missing = httpx.post(f"{url}/judge", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        wrong = httpx.post(f"{url}/judge", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = httpx.post(f"{url}/judge", json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and 0.0 <= ok.json()["prob"] <= 1.0


def test_not_ready_until_loaded(judge):
    release = threading.Event()

    def slow_factory():
        release.wait(10)
        return judge

    app = create_app(config=ServeConfig(), judge_factory=slow_factory)
    with BackgroundServer(app) as url:
        assert httpx.get(f"{url}/ready").status_code == 503
        body = {"question": "q", "response_a": "a", "response_b": "b"}
        assert httpx.post(f"{url}/judge", json=body).status_code == 503
        release.set()
        for _ in range(200):  # bounded wait for the loader thread
            if httpx.get(f"{url}/ready").status_code == 200:
                break
            time.sleep(0.02)
        assert httpx.post(f"{url}/judge", json=body).status_code == 200


async def _clients(url, requests, concurrency):
    """Send ``requests`` (path, body) with ``concurrency`` clients; returns (responses, latencies)."""
    queue = list(enumerate(requests))
    results, latencies = [None] * len(requests), []

    async def client(http):
        while queue:
            k, (path, body) = queue.pop(0)
            t = time.perf_counter()
            results[k] = await http.post(url + path, json=body, timeout=60)
            latencies.append(time.perf_counter() - t)

    async with httpx.AsyncClient() as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    return results, latencies


def test_concurrent_clients_are_batched_and_correct(judge):
    app = create_app(judge, ServeConfig(batch_window_ms=200))
    pairs = [(q, a, b) for q, g in zip(QUESTIONS, GROUPS) for a in g for b in g if a != b]
    requests = [("/judge", {"question": q, "response_a": a, "response_b": b}) for q, a, b in pairs]
    with BackgroundServer(app) as url:
        responses, _ = asyncio.run(_clients(url, requests, concurrency=len(requests)))
        stats = httpx.get(f"{url}/stats").json()["batcher"]
    local = judge.judge([p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs])
    assert [r.json()["prob"] for r in responses] == pytest.approx([jd.prob for jd in local], abs=1e-5)
    assert stats["max_requests_per_batch"] > 1 and stats["batches"] < len(requests)


def test_bounded_load(server, capsys):
    url, _ = server
    prompts, completions = _flat()
    requests = []
    for k in range(200):
        if k % 4 == 0:
            requests.append(("/reward", {"prompts": prompts, "completions": completions}))
        else:
            g = GROUPS[k % 2]
            requests.append(("/judge", {"question": QUESTIONS[k % 2], "response_a": g[k % 3], "response_b": g[0]}))
    t = time.perf_counter()
    responses, latencies = asyncio.run(_clients(url, requests, concurrency=8))
    elapsed = time.perf_counter() - t
    assert all(r.status_code == 200 for r in responses)
    assert len(latencies) == 200
    q = statistics.quantiles(latencies, n=100)
    with capsys.disabled():
        print(
            f"\nload: 200 requests, 8 clients, {200 / elapsed:.0f} req/s; latency p50 {1000 * q[49]:.1f} ms, "
            f"p90 {1000 * q[89]:.1f} ms, p99 {1000 * q[98]:.1f} ms"
        )


def test_serve_command_is_registered(monkeypatch):
    from trl_gram.cli import build_parser
    from trl_gram.serving.cli import build_config

    args = build_parser().parse_args(["serve", "--port", "9001", "--api-key-env", "TG_KEY", "--output", "logit"])
    monkeypatch.setenv("TG_KEY", "abc")
    config = build_config(args)
    assert config.port == 9001 and config.api_key == "abc" and config.output == "logit"
    monkeypatch.delenv("TG_KEY")
    with pytest.raises(ValueError, match="TG_KEY"):
        build_config(args)
    with pytest.raises(ValueError, match="output"):
        ServeConfig(output="score")
