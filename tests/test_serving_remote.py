"""RemoteGenerativeRewardFunction against a real in-process server (127.0.0.1): same rewards as the local
GenerativeRewardFunction, groups kept whole across concurrent requests, retries, timeouts and final failure → None;
plus the verl reward functions."""

import asyncio
import socket
import time

import httpx
import pytest
from tiny_models import sharp_direct_judge

from trl_gram.reward import GenerativeRewardFunction
from trl_gram.serving.remote_reward import RemoteGenerativeRewardFunction
from trl_gram.serving.server import BackgroundServer, ServeConfig, create_app

pytest.importorskip("fastapi")

PROMPTS = ["What is 2 + 3?"] * 3 + ["Write a poem about the sea."] * 3 + ["Say hi."] * 2
COMPLETIONS = ["5", "It is 6.", "The answer is 5.", "The sea is blue.", "Sea.", "Waves and wind.", "Hi!", "Bye."]


@pytest.fixture(scope="module")
def judge(tokenizer):
    return sharp_direct_judge(tokenizer)


@pytest.fixture(scope="module")
def url(judge):
    with BackgroundServer(create_app(judge, ServeConfig(batch_window_ms=20))) as url:
        yield url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_matches_local_reward_function(url, judge):
    local = GenerativeRewardFunction(judge, reference="group")(prompts=PROMPTS, completions=COMPLETIONS)
    remote = RemoteGenerativeRewardFunction(url, max_completions_per_request=4)
    logged = {}
    got = asyncio.run(remote(prompts=PROMPTS, completions=COMPLETIONS, log_metric=logged.__setitem__))
    assert got == pytest.approx(local, abs=1e-5)
    # Groups of 3, 3 and 2 with at most 4 per request: three requests, none splitting a group.
    assert remote.last_stats["requests"] == 3 and remote.last_stats["failed_requests"] == 0
    assert logged["gram_remote_reward/failed_requests"] == 0.0
    refs = ["5"] * len(COMPLETIONS)
    local = GenerativeRewardFunction(judge)(prompts=PROMPTS, completions=COMPLETIONS, references=refs)
    got = asyncio.run(remote(prompts=PROMPTS, completions=COMPLETIONS, references=refs))
    assert got == pytest.approx(local, abs=1e-5)
    by_column = RemoteGenerativeRewardFunction(url, reference_column="answer")
    got = asyncio.run(by_column(prompts=PROMPTS, completions=COMPLETIONS, answer=refs))
    assert got == pytest.approx(local, abs=1e-5)
    with pytest.raises(ValueError, match="answer"):
        asyncio.run(by_column(prompts=PROMPTS, completions=COMPLETIONS))


def test_is_an_async_trl_reward(url):
    from trl.trainer.utils import is_async_callable

    remote = RemoteGenerativeRewardFunction(url + "/")
    assert is_async_callable(remote) and remote.url == url + "/reward" and remote.__name__ == "gram_remote_reward"
    with pytest.raises(ValueError, match="url"):
        RemoteGenerativeRewardFunction("judge-host:8000")


def test_retries_then_succeeds(judge):
    """The first two attempts of each request get a 503; the third goes through."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    inner = create_app(judge, ServeConfig())
    calls = {"n": 0}
    app = FastAPI()

    @app.post("/reward")
    async def flaky(request: Request):
        calls["n"] += 1
        if calls["n"] <= 2:
            return JSONResponse({"error": "busy"}, status_code=503)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=inner), base_url="http://inner") as c:
            r = await c.post("/reward", content=await request.body(), headers={"content-type": "application/json"})
        return JSONResponse(r.json(), status_code=r.status_code)

    with BackgroundServer(app) as url:
        remote = RemoteGenerativeRewardFunction(url, retries=3, backoff=0.01, max_completions_per_request=100)
        got = asyncio.run(remote(prompts=PROMPTS, completions=COMPLETIONS))
    assert calls["n"] == 3 and all(isinstance(r, float) for r in got)


def test_final_failure_and_timeout_give_none():
    dead = RemoteGenerativeRewardFunction(f"http://127.0.0.1:{_free_port()}", retries=1, backoff=0.0)
    assert asyncio.run(dead(prompts=PROMPTS, completions=COMPLETIONS)) == [None] * len(COMPLETIONS)
    assert dead.last_stats["failed_requests"] == dead.last_stats["requests"] > 0

    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/reward")
    async def slow():
        await asyncio.sleep(2.0)
        return {"rewards": [1.0] * len(COMPLETIONS)}

    with BackgroundServer(app) as url:
        remote = RemoteGenerativeRewardFunction(
            url, timeout=0.2, retries=1, backoff=0.0, max_completions_per_request=100
        )
        t = time.perf_counter()
        assert asyncio.run(remote(prompts=PROMPTS, completions=COMPLETIONS)) == [None] * len(COMPLETIONS)
        assert time.perf_counter() - t < 60  # bounded: two short attempts, not the slow answer


def test_client_errors_are_not_retried(url):
    calls = []
    remote = RemoteGenerativeRewardFunction(url, retries=3, backoff=0.0)
    original = remote._post

    async def counting(client, payload):
        calls.append(1)
        return await original(client, payload)

    remote._post = counting
    bad = asyncio.run(remote(prompts=["q", "q"], completions=[[{"oops": 1}], "b"]))  # malformed conversation: 400
    assert bad == [None, None] and len(calls) == 1


def test_verl_reward_functions(url, judge, monkeypatch):
    from trl_gram.serving import verl

    infos = [{"question": p} for p in PROMPTS]
    local = GenerativeRewardFunction(judge, reference="group")(prompts=PROMPTS, completions=COMPLETIONS)
    got = verl.compute_score_batch(["hh"] * 8, COMPLETIONS, [""] * 8, infos, url=url)
    assert got == pytest.approx(local, abs=1e-5)
    # Split under a small limit (3 comparisons per request): same rewards.
    assert verl.split_step(PROMPTS, [None] * 8, "group", 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    got = verl.compute_score_batch(["hh"] * 8, COMPLETIONS, [None] * 8, infos, url=url, max_pairs_per_request=3)
    assert got == pytest.approx(local, abs=1e-5)
    refs = ["5"] * 8
    local = GenerativeRewardFunction(judge)(prompts=PROMPTS, completions=COMPLETIONS, references=refs)
    monkeypatch.setenv("TRL_GRAM_URL", url)
    one = asyncio.run(verl.compute_score("hh", COMPLETIONS[1], "5", infos[1]))
    assert one["score"] == pytest.approx(local[1], abs=1e-5) and one["compared"] == 1.0
    assert verl.compute_score_batch(["hh"] * 8, COMPLETIONS, refs, infos) == pytest.approx(local, abs=1e-5)
    with pytest.raises(ValueError, match="question"):
        asyncio.run(verl.compute_score("hh", "x", "5", {}))
    with pytest.raises(ValueError, match="extra_infos\\[1\\]"):
        verl.compute_score_batch(["hh"] * 2, ["a", "b"], ["", ""], [infos[0], {}])


def test_verl_retries_with_backoff_then_a_clear_error(monkeypatch):
    from trl_gram import http_client
    from trl_gram.serving import verl

    sleeps, real_sleep = [], time.sleep
    monkeypatch.setattr(http_client.time, "sleep", lambda s: sleeps.append(s) or real_sleep(s))
    dead = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(RuntimeError, match="failed .* times"):
        verl.compute_score_batch(
            ["hh"], ["a"], [""], [{"question": "q"}], url=dead, timeout=2.0, max_pairs_per_request=10, backoff=0.5
        )
    # Delays between attempts (0.25-0.5 s, then 0.5-1 s, ...), the last one cut to the budget left.
    assert len(sleeps) >= 2 and 0.25 <= sleeps[0] <= 0.5 and all(0 <= s <= 2.0 for s in sleeps)


def test_time_budget_outlasts_a_restart_and_no_rewards_is_loud(judge, caplog):
    """A server still loading its judge answers 503 for about a second: the retry budget outlasts it. A step where
    the server never answers gets a warning and the metric `no_rewards` = 1."""
    import logging

    def slow_factory():
        time.sleep(1.0)
        return judge

    app = create_app(config=ServeConfig(), judge_factory=slow_factory)
    with BackgroundServer(app) as url:
        remote = RemoteGenerativeRewardFunction(url, timeout=30.0, backoff=0.05, max_completions_per_request=100)
        got = asyncio.run(remote(prompts=PROMPTS, completions=COMPLETIONS))
    assert all(isinstance(r, float) for r in got)

    dead = RemoteGenerativeRewardFunction(f"http://127.0.0.1:{_free_port()}", timeout=0.5, backoff=0.05)
    logged = {}
    trl_gram_logger = logging.getLogger("trl_gram")
    trl_gram_logger.addHandler(caplog.handler)
    try:
        out = asyncio.run(dead(prompts=PROMPTS, completions=COMPLETIONS, log_metric=logged.__setitem__))
    finally:
        trl_gram_logger.removeHandler(caplog.handler)
    assert out == [None] * len(COMPLETIONS) and logged["gram_remote_reward/no_rewards"] == 1.0
    assert any("no completion of this step got a reward" in r.getMessage() for r in caplog.records)
