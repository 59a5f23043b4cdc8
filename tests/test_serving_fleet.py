"""Grouping that survives a fleet and time (deadline after the latest member, capped; unreadable members count;
timing-independent member order; WARNING lines and counters for short, alone and split groups; the client-n warning),
`GET /metrics` in Prometheus text format behind the key, and judge health in OpenRLHF's `extra_logs`."""

import asyncio
import contextlib
import logging
import re

import httpx
import pytest
from test_serving_contracts import chat_prompt, openrlhf_current_client, openrlhf_query
from tiny_models import sharp_direct_judge

from trl_gram.judge import JudgeRun, PairJudgment
from trl_gram.serving.grouping import GroupCollector
from trl_gram.serving.metrics import ServerMetrics
from trl_gram.serving.server import BackgroundServer, ServeConfig, create_app

pytest.importorskip("fastapi")


def biased(q, first, second):
    """A position-biased judge: the response shown first wins 70% plus a small length term."""
    out = []
    for a, b in zip(first, second):
        p = 0.7 + 0.01 * (len(a) - len(b))
        out.append(PairJudgment(prob=p, label="A", agreement=None, runs=[JudgeRun("AB", p, "A")]))
    return out


@contextlib.contextmanager
def logged():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    root = logging.getLogger("trl_gram")
    root.addHandler(handler)
    try:
        yield records
    finally:
        root.removeHandler(handler)


def _collector(group_size, timeout_s, calls=None, **kw):
    async def judge_pairs(q, a, b):
        if calls is not None:
            calls.append(len(q))
        return biased(q, a, b)

    return GroupCollector(judge_pairs, group_size, timeout_s, **kw)


async def _arrive(collector, items):
    """`items`: (delay_s, completion) added to one prompt's group at those times."""

    async def one(delay, completion):
        await asyncio.sleep(delay)
        ((prob, info),) = await collector.add(["q"], [completion])
        return prob, info

    return await asyncio.gather(*(one(d, c) for d, c in items))


def test_deadline_follows_arrivals_with_a_cap():
    # Members 0.3 s apart with a 0.5 s timeout: all meet (a deadline from the first would have cut at 0.5 s).
    c = _collector(4, 0.5)
    out = asyncio.run(_arrive(c, [(0.0, "a"), (0.3, "bb"), (0.6, "ccc"), (0.9, "dddd")]))
    assert [info["group"] for _, info in out] == [4] * 4 and c.stats["complete"] == 1
    # The cap: a trickle 0.3 s apart is cut max_wait_s (0.8 s) after the first, with a WARNING and a counter.
    c = _collector(4, 0.5, max_wait_s=0.8)
    with logged() as records:
        out = asyncio.run(_arrive(c, [(0.0, "a"), (0.3, "bb"), (0.6, "ccc"), (1.2, "dddd")]))
    assert [info["group"] for _, info in out] == [3, 3, 3, 1]
    assert c.stats["short"] == 1 and c.stats["alone"] == 1 and c.stats["at_deadline"] == 2
    messages = [r.getMessage() for r in records]
    assert any("closed short" in m and "3 of 4" in m for m in messages)
    assert any("nothing to compare with" in m for m in messages)


def test_unreadable_members_count_and_split_groups_are_counted():
    async def scenario(c):
        unreadable = c.add(["q"], [None])
        readable = _arrive(c, [(0.0, "a"), (0.0, "bb")])
        return await asyncio.gather(unreadable, readable)

    calls = []
    c = _collector(3, 30.0, calls=calls)  # a long deadline: the test only ends if the group completes at 3
    (bad,), good = asyncio.run(scenario(c))
    assert bad[0] is None and bad[1]["failure"] == "unreadable" and c.stats["complete"] == 1
    assert [info["compared"] for _, info in good] == [1, 1] and calls == [1] and c.stats["unreadable_members"] == 1
    # A client with n = 4 against group_size 2: the second pair opens right after the first closed: "split".
    c = _collector(2, 30.0)
    with logged() as records:
        asyncio.run(_arrive(c, [(0.0, "a"), (0.0, "bb"), (0.05, "ccc"), (0.05, "dddd")]))
        c.note_client_n(4)
        c.note_client_n(4)
    assert c.stats["split"] == 1 and c.stats["complete"] == 2
    messages = [r.getMessage() for r in records]
    assert sum("carried 4 samples" in m for m in messages) == 1 and any("split" in m for m in messages)


def test_member_order_does_not_depend_on_arrival():
    texts = ["a", "bb", "ccc", "dddd"]
    forward = asyncio.run(_arrive(_collector(4, 30.0), [(0.01 * k, t) for k, t in enumerate(texts)]))
    backward = asyncio.run(_arrive(_collector(4, 30.0), [(0.01 * (3 - k), t) for k, t in enumerate(texts)]))
    assert [p for p, _ in forward] == pytest.approx([p for p, _ in backward], abs=1e-12)
    assert len({round(p, 6) for p, _ in forward}) > 1  # the bias shows: an arrival order would change them


def test_metrics_text_format():
    m = ServerMetrics()
    m.request("/get_reward", 200)
    m.judge_call(0.2)
    m.judge_call(3.0, failed=True)
    engines = [dict(url='http://e"1', up=True, in_flight=2, requests=5, errors=1, retries=3, resent=1)]
    text = m.render({"items": 10, "unscored": 3, "item_errors": 1}, {"complete": 2, "short": 1}, engines)
    sample = re.compile(r'^[a-z_:][a-z0-9_:]*(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? [-+0-9.eEinfINFnaN]+$')
    for line in text.strip().splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    assert (
        'trl_gram_items_total{outcome="scored"} 7' in text and 'trl_gram_items_total{outcome="item_error"} 1' in text
    )
    assert 'trl_gram_groups_total{closed="short"} 1' in text and "trl_gram_judge_errors_total 1" in text
    assert (
        'trl_gram_judge_seconds_bucket{le="0.25"} 1' in text and 'trl_gram_judge_seconds_bucket{le="+Inf"} 2' in text
    )
    assert 'trl_gram_engine_in_flight{engine="http://e\\"1"} 2' in text


def test_metrics_behind_the_key_and_extra_logs_for_openrlhf(tokenizer):
    judge = sharp_direct_judge(tokenizer)
    config = ServeConfig(group_size=2, group_timeout_s=30.0, api_key="k3y", batch_window_ms=5)
    prompt = chat_prompt(tokenizer, "What is 2 + 3?")
    samples = [(openrlhf_query(tokenizer, prompt, r), prompt, "") for r in ("5", "It is 6.")]
    with BackgroundServer(create_app(judge, config)) as url:
        assert httpx.get(f"{url}/metrics").status_code == 401
        answers = asyncio.run(_per_sample(f"{url}/get_reward?api_key=k3y", samples))
        text = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer k3y"}).text
    for body in answers:
        logs = body["extra_logs"]
        assert set(logs) == {"swap_agreement", "parse_failure", "compared"} and logs["compared"] == 1.0
        assert logs["parse_failure"] == 0.0 and logs["swap_agreement"] in (0.0, 1.0)
    assert 'trl_gram_requests_total{endpoint="/get_reward",status="200"} 2' in text
    assert 'trl_gram_groups_total{closed="complete"} 1' in text and 'trl_gram_items_total{outcome="scored"} 2' in text
    assert "trl_gram_judge_seconds_count 1" in text


async def _per_sample(url, samples):
    async def one(http, query, prompt, label):
        response = await http.post(url, json={"query": [query], "prompts": [prompt], "labels": [label]}, timeout=120)
        response.raise_for_status()
        return response.json()

    async with httpx.AsyncClient() as http:
        return await asyncio.gather(*(one(http, *s) for s in samples))


assert openrlhf_current_client  # the contract client sends the same requests (reused by the engine tests)
