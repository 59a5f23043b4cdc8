"""The one HTTP retry helper (`trl_gram.http_client`): what is retried, the budget, the capped waits, one error."""

import asyncio
import time

import httpx
import pytest

from trl_gram.http_client import RETRYABLE_STATUS, RemoteCallError, RetryPolicy, apost_json, list_field, post_json


def scripted(answers):
    """A transport answering from a list: an int is a status with an empty JSON body, a dict a 200 JSON answer, an
    exception class is raised (a dropped connection)."""
    calls = []

    def handler(request):
        calls.append(time.monotonic())
        answer = answers[min(len(calls) - 1, len(answers) - 1)]
        if isinstance(answer, type) and issubclass(answer, Exception):
            raise answer("dropped", request=request)
        if isinstance(answer, dict):
            return httpx.Response(200, json=answer)
        return httpx.Response(answer, json={"error": f"status {answer}"})

    return httpx.MockTransport(handler), calls


FAST = RetryPolicy(timeout=10.0, backoff=0.01, max_backoff=0.02)


def test_retries_retryable_statuses_and_transport_errors_then_succeeds():
    transport, calls = scripted([503, httpx.ConnectError, 429, {"ok": 1}])
    with httpx.Client(transport=transport) as client:
        assert post_json(client, "http://127.0.0.1:9/x", {"a": 1}, policy=FAST) == {"ok": 1}
    assert len(calls) == 4


def test_refused_status_fails_at_once_with_the_url_and_status():
    transport, calls = scripted([400, {"ok": 1}])
    with httpx.Client(transport=transport) as client, pytest.raises(RemoteCallError) as info:
        post_json(client, "http://127.0.0.1:9/reward", {}, policy=FAST)
    assert len(calls) == 1
    assert info.value.refused and info.value.status == 400
    assert "http://127.0.0.1:9/reward" in str(info.value) and "400" in str(info.value)
    assert 400 not in RETRYABLE_STATUS and 503 in RETRYABLE_STATUS


def test_malformed_answers_are_retried_through_validate():
    def rewards(answer):
        if len(answer.get("rewards", [])) != 2:
            raise ValueError("expected 2 rewards")
        return answer["rewards"]

    transport, calls = scripted([{"rewards": [0.1]}, {"rewards": [0.1, 0.2]}])
    with httpx.Client(transport=transport) as client:
        assert post_json(client, "http://127.0.0.1:9/r", {}, policy=FAST, validate=rewards) == [0.1, 0.2]
    assert len(calls) == 2


def test_list_field_reads_a_list_of_the_right_length_or_retries():
    transport, calls = scripted([{"results": [1]}, {"other": [1, 2]}, {"results": [1, 2]}])
    with httpx.Client(transport=transport) as client:
        got = post_json(client, "http://127.0.0.1:9/j", {}, policy=FAST, validate=list_field("results", 2))
    assert got == [1, 2] and len(calls) == 3
    with pytest.raises(ValueError, match="expected 2 rewards"):
        list_field("rewards", 2)([0.5])


def test_retry_cap_and_one_error_shape():
    transport, calls = scripted([502])
    policy = RetryPolicy(timeout=10.0, retries=2, backoff=0.01, max_backoff=0.01)
    seen = []
    with httpx.Client(transport=transport) as client, pytest.raises(RemoteCallError) as info:
        post_json(client, "http://127.0.0.1:9/r", {}, policy=policy, on_retry=lambda a, e: seen.append(a))
    assert len(calls) == 3 and info.value.attempts == 3 and info.value.status == 502 and not info.value.refused
    assert seen == [1, 2]


def test_budget_bounds_the_call_and_waits_are_capped():
    # A server that stays down: the call ends within its budget plus one capped wait, never much later.
    transport, calls = scripted([503])
    policy = RetryPolicy(timeout=0.6, backoff=0.2, max_backoff=0.25)
    start = time.monotonic()
    with httpx.Client(transport=transport) as client, pytest.raises(RemoteCallError):
        post_json(client, "http://127.0.0.1:9/r", {}, policy=policy)
    elapsed = time.monotonic() - start
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert len(calls) >= 3
    assert max(gaps) <= 0.25 + 0.1  # the cap, plus scheduling slack
    assert elapsed < policy.timeout + policy.max_backoff + 0.5


def test_delay_is_jittered_within_the_upper_half_of_the_cap():
    policy = RetryPolicy(backoff=1.0, max_backoff=2.0)
    delays = [policy.delay(attempt, left=100.0) for attempt in (0, 1, 5, 20) for _ in range(50)]
    assert all(0.5 <= d <= 2.0 for d in delays)
    assert policy.delay(10, left=0.1) <= 0.1
    assert policy.delay(0, left=100.0, retry_after=1.5) >= 1.5  # a short Retry-After is honoured
    assert policy.delay(0, left=100.0, retry_after=60.0) <= 1.0  # a long one is not


def test_async_driver_matches_the_sync_one():
    transport, calls = scripted([500, {"ok": 2}])

    async def main():
        async with httpx.AsyncClient(transport=httpx.MockTransport(transport.handler)) as client:
            return await apost_json(client, "http://127.0.0.1:9/r", {}, policy=FAST)

    assert asyncio.run(main()) == {"ok": 2}
    assert len(calls) == 2


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"retries": -1}, {"backoff": -1.0}, {"max_backoff": -0.1}])
def test_bad_policies_are_named(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        RetryPolicy(**kwargs)
