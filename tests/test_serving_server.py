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
from tiny_models import sharp_direct_judge

from trl_gram import pairing
from trl_gram.serving import scoring
from trl_gram.serving.server import BackgroundServer, ServeConfig, create_app

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

QUESTIONS = ["What is 2 + 3?", "Write a poem about the sea."]
GROUPS = [["The answer is 5.", "It is 6.", "5"], ["The sea is big and blue.", "Sea.", "Fine, thanks."]]


@pytest.fixture(scope="module")
def judge(tokenizer):
    return sharp_direct_judge(tokenizer)


@pytest.fixture(scope="module")
def server(judge):
    config = ServeConfig(batch_window_ms=30, max_request_bytes=200_000, max_pairs_per_request=50, group_timeout_s=0.5)
    config.allow_overrides = True
    app = create_app(judge, config)
    with BackgroundServer(app) as url:
        yield url, app


def _flat():
    prompts = [q for q, g in zip(QUESTIONS, GROUPS) for _ in g]
    completions = [c for g in GROUPS for c in g]
    return prompts, completions


def _local_rewards(judge, prompts, completions, references=None, reference="group"):
    comparisons = pairing.plan(prompts, completions, references, reference)
    judgments = judge.judge([c[1] for c in comparisons], [c[2] for c in comparisons], [c[3] for c in comparisons])
    return pairing.score_completions(len(completions), comparisons, judgments).probs


def test_health_ready_and_stats(server):
    url, _ = server
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    ready = httpx.get(f"{url}/ready").json()
    assert ready["ready"] is True and ready["limits"]["max_pairs_per_request"] == 50
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
    assert got["compared"] == [2] * 6 and got["failures"] == [None] * 6
    refs = ["5"] * len(completions)
    got = httpx.post(f"{url}/reward", json={"prompts": prompts, "completions": completions, "references": refs}).json()
    assert got["rewards"] == pytest.approx(_local_rewards(judge, prompts, completions, refs), abs=1e-5)
    pivot = httpx.post(f"{url}/reward", json={"prompts": prompts, "completions": completions, "reference": "pivot"})
    assert pivot.json()["compared"] == [2, 1, 1, 2, 1, 1]  # the pivot of each group of 3 meets the other two
    before = httpx.get(f"{url}/stats").json()["items"]["nothing_to_compare"]
    lone = httpx.post(f"{url}/reward", json={"prompts": ["q"], "completions": ["only one"]}).json()
    assert lone["rewards"] == [None] and lone["compared"] == [0]  # nothing to compare with, and it says so
    assert "nothing to compare with" in lone["failures"][0]
    assert httpx.get(f"{url}/stats").json()["items"]["nothing_to_compare"] == before + 1


def test_openrlhf_get_reward(server, judge):
    url, _ = server
    prompts, completions = _flat()
    chat = [f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n" for p in prompts]
    queries = [f"<pad><pad>{c}{r}<|im_end|>" for c, r in zip(chat, completions)]
    got = httpx.post(f"{url}/get_reward", json={"query": queries, "prompts": chat}).json()
    split = [scoring.split_query(q, c, ServeConfig().strip_tokens, i) for i, (q, c) in enumerate(zip(queries, chat))]
    questions, responses = [s[0] for s in split], [s[1] for s in split]
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
        ("/get_reward", json.dumps({"query": ["abc"], "prompts": ["zzz", "y"]}).encode(), 400, "prompts"),
        ("/reward", json.dumps({"prompts": "q", "completions": ["a"]}).encode(), 400, "prompts"),
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


def test_api_key_in_header_query_or_path(judge):
    app = create_app(judge, ServeConfig(api_key="s3cret"))
    body = {"question": "q", "response_a": "a", "response_b": "b"}
    with BackgroundServer(app) as url:
        assert httpx.get(f"{url}/health").status_code == 200  # health and readiness stay open
        assert httpx.get(f"{url}/ready").status_code == 200
        for method, path in [
            ("GET", "/stats"),
            ("GET", "/docs"),
            ("GET", "/openapi.json"),
            ("POST", "/judge"),
            ("POST", "/reward"),
            ("POST", "/get_reward"),
            ("GET", "/nope"),
        ]:
            missing = httpx.request(method, url + path, json=body if method == "POST" else None)
            assert missing.status_code == 401, path
            assert missing.headers["www-authenticate"] == "Bearer" and "s3cret" not in missing.text
        wrong = httpx.post(f"{url}/judge", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert httpx.post(f"{url}/key/nope/judge", json=body).status_code == 401
        ok = httpx.post(f"{url}/judge", json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and 0.0 <= ok.json()["prob"] <= 1.0
        assert httpx.post(f"{url}/judge?api_key=s3cret", json=body).status_code == 200
        assert httpx.post(f"{url}/key/s3cret/judge", json=body).status_code == 200
        assert httpx.get(f"{url}/key/s3cret/stats").status_code == 200
        assert httpx.get(f"{url}/openapi.json?api_key=s3cret").status_code == 200


def test_api_key_is_removed_from_what_logs_see():
    from trl_gram.serving.auth import KeyMiddleware

    seen = []

    async def app(scope, receive, send):
        seen.append((scope["path"], scope["raw_path"], scope["query_string"]))

    middleware = KeyMiddleware(app, "s3cret")
    for path, query in [("/key/s3cret/get_reward", b""), ("/reward", b"api_key=s3cret&x=1")]:
        scope = {"type": "http", "path": path, "raw_path": path.encode(), "query_string": query, "headers": []}
        asyncio.run(middleware(scope, None, None))
        # uvicorn's access log reads this same scope dict after the app ran.
        assert b"s3cret" not in scope["raw_path"] + scope["query_string"] and "s3cret" not in scope["path"]
    assert seen == [("/get_reward", b"/get_reward", b""), ("/reward", b"/reward", b"x=1")]


def test_limits_protect_other_callers(judge):
    app = create_app(judge, ServeConfig(max_generated_tokens_per_request=10))
    body = {"question": "q", "response_a": "a", "response_b": "b"}
    with BackgroundServer(app) as url:
        refused = httpx.post(f"{url}/judge", json={**body, "mode": "reason"})  # a direct-mode server
        assert refused.status_code == 403 and "allow_overrides" in refused.json()["error"]
        assert httpx.post(f"{url}/judge", json={**body, "mode": "direct"}).status_code == 200  # the server's own
    judge.config.mode = "reason"  # a reasoning server: 2 orders x 1024 new tokens per pair > 10
    try:
        with BackgroundServer(create_app(judge, ServeConfig(max_generated_tokens_per_request=10))) as url:
            capped = httpx.post(f"{url}/judge", json=body)
            assert capped.status_code == 413 and "max_generated_tokens_per_request" in capped.json()["error"]
            assert httpx.get(f"{url}/ready").json()["limits"]["max_pairs_per_request"] == 1
    finally:
        judge.config.mode = "direct"


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


def test_serve_command_uses_trl_parser(monkeypatch, tmp_path):
    from trl_gram.cli import COMMANDS
    from trl_gram.serving.cli import parse_serve_args

    assert (COMMANDS["serve"].module, COMMANDS["serve"].handler) == ("trl_gram.serving.cli", "run")
    monkeypatch.setenv("TG_KEY", "abc")
    judge_args, config = parse_serve_args(
        ["--port", "9001", "--api_key_env", "TG_KEY", "--output", "logit", "--mode", "direct", "--group_size", "4"]
    )
    assert config.port == 9001 and config.api_key == "abc" and config.output == "logit" and config.group_size == 4
    assert judge_args.mode == "direct" and "abc" not in repr(config)
    yaml = tmp_path / "serve.yaml"
    yaml.write_text("group_timeout_s: 5\nreference: pivot\nmode: direct\n")
    judge_args, config = parse_serve_args(["--config", str(yaml)])
    assert config.group_timeout_s == 5 and config.reference == "pivot" and judge_args.mode == "direct"
    with pytest.raises(ValueError, match="api_key_env"):
        parse_serve_args(["--api_key", "abc"])
    monkeypatch.delenv("TG_KEY")
    with pytest.raises(ValueError, match="TG_KEY"):
        parse_serve_args(["--api_key_env", "TG_KEY"])
    with pytest.raises(ValueError, match="output"):
        ServeConfig(output="score")
