"""Contract tests: each client's requests as its own source sends them, against the real server on 127.0.0.1, every
reward checked against the same pairs judged directly (1e-3, in order).

* OpenRLHF >= 0.9.1 (``openrlhf/utils/agent.py``, ``SingleTurnAgentExecutor`` and ``_fetch_rewards_via_http``): each
  sample's reward is fetched right after its generation, one request per sample, the n samples of a prompt running
  concurrently (``generate_responses`` gathers them): ``{"query": [decode(prompt_ids + response_ids,
  skip_special_tokens=False)], "prompts": [prompt], "labels": [label]}``, ``label`` being ``""`` without
  ``--label_key``; a prompt over the length budget is cut from the left (``prompt_token_ids[-max_prompt_length:]``)
  before decoding, so the query no longer contains it. The reward read is the answer's ``"rewards"``.
* OpenRLHF 0.9.0 (``openrlhf/utils/remote_rm_utils.py``): one request per rollout batch with every query, the prompts
  repeated ``n_samples_per_prompt`` times, left padding removed before ``batch_decode``.
* verl's reward loop (``verl/experimental/reward_loop``, ``NaiveRewardManager.run_single``): one awaited
  ``compute_score(data_source=, solution_str=, ground_truth=, extra_info=)`` per response, all of a step's responses
  as concurrent tasks, ``reward_kwargs`` merged into the call; ``extra_info`` gains ``num_turns`` and
  ``rollout_reward_scores``.
* verl's legacy ``batch`` manager (``verl/workers/reward_manager/batch.py``): one ``compute_score(data_sources=,
  solution_strs=, ground_truths=, extra_infos=, **reward_kwargs)`` per step; verl's GRPO example size, 1024 prompts x
  5 responses, with a fake judge (10,240 comparisons are too many for a real model on two shared cores); a small
  step runs on the real tiny model.
"""

import asyncio
import math

import httpx
import numpy as np
import pytest
from tiny_models import sharp_direct_judge

from trl_gram.judge import JudgeRun, PairJudgment
from trl_gram.serving import verl
from trl_gram.serving.server import BackgroundServer, ServeConfig, create_app

pytest.importorskip("fastapi")

N = 4
QUESTIONS = ["What is 2 + 3?", "Write a poem about the sea and the sky, please, in three short lines."]
RESPONSES = [
    ["The answer is 5.", "It is 6.", "5", "I think it is 15."],
    ["The sea is big and blue.", "Sea.", "Fine, thanks.", "Waves and wind, the sky is blue."],
]
TOL = 1e-3


@pytest.fixture(scope="module")
def judge(tokenizer):
    return sharp_direct_judge(tokenizer)


@pytest.fixture(scope="module")
def server(judge):
    config = ServeConfig(group_size=N, group_timeout_s=30.0, batch_window_ms=20)
    with BackgroundServer(create_app(judge, config)) as url:
        yield url


def expected_group_rewards(judge, question, responses):
    """Each response's mean win probability over every other response of its group, judged pair by pair."""
    n = len(responses)
    pairs = [(i, j) for i in range(n) for j in range(n) if i < j]
    judged = judge.judge([question] * len(pairs), [responses[i] for i, _ in pairs], [responses[j] for _, j in pairs])
    wins = {(i, j): jd.prob for (i, j), jd in zip(pairs, judged)}
    wins.update({(j, i): 1 - p for (i, j), p in list(wins.items())})
    return [sum(wins[(i, j)] for j in range(n) if j != i) / (n - 1) for i in range(n)]


def chat_prompt(tokenizer, question):
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )


def judge_question(prompt):
    """The question as the server reads an OpenRLHF prompt of one ChatML user turn: that turn's text, the policy's
    role markup removed."""
    return prompt.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0].strip()


def openrlhf_query(tokenizer, prompt, response, max_prompt_tokens=None):
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if max_prompt_tokens is not None:
        prompt_ids = prompt_ids[-max_prompt_tokens:]
    response_ids = tokenizer(response + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(prompt_ids + response_ids, skip_special_tokens=False)


async def openrlhf_current_client(url, samples):
    """One POST per sample, all at once; returns each answer's `rewards` (a one-item list)."""

    async def one(http, query, prompt, label):
        response = await http.post(url, json={"query": [query], "prompts": [prompt], "labels": [label]}, timeout=180)
        response.raise_for_status()
        return response.json()["rewards"]

    async with httpx.AsyncClient() as http:
        return await asyncio.gather(*(one(http, *s) for s in samples))


def test_openrlhf_current_per_sample_requests(server, judge, tokenizer):
    prompts = [chat_prompt(tokenizer, q) for q in QUESTIONS]
    # The second prompt is over the length budget: its query keeps only its last 12 tokens.
    cut = [None, 12]
    samples = [
        (openrlhf_query(tokenizer, prompts[k], r, cut[k]), prompts[k], "") for k in range(2) for r in RESPONSES[k]
    ]
    assert prompts[1] not in samples[N][0] and judge_question(prompts[1])[-10:] in samples[N][0]
    stats = httpx.get(f"{server}/stats").json()
    answers = asyncio.run(openrlhf_current_client(f"{server}/get_reward", samples))
    assert all(isinstance(a, list) and len(a) == 1 for a in answers)
    got = [a[0] for a in answers]
    expected = [r for k in range(2) for r in expected_group_rewards(judge, judge_question(prompts[k]), RESPONSES[k])]
    assert got == pytest.approx(expected, abs=TOL)
    after = httpx.get(f"{server}/stats").json()
    assert after["groups"]["complete"] - (stats["groups"] or {"complete": 0})["complete"] == 2
    assert after["items"]["nothing_to_compare"] == stats["items"]["nothing_to_compare"]
    # With --label_key, a label is a reference answer: no grouping, one comparison each.
    labeled = asyncio.run(openrlhf_current_client(f"{server}/get_reward", [(s[0], s[1], "5") for s in samples[:N]]))
    direct = judge.judge([judge_question(prompts[0])] * N, RESPONSES[0], ["5"] * N)
    assert [a[0] for a in labeled] == pytest.approx([jd.prob for jd in direct], abs=TOL)
    # OpenRLHF shards a request over several --remote_rm_url servers: the extra ones get empty lists.
    empty = httpx.post(f"{server}/get_reward", json={"query": [], "prompts": [], "labels": []})
    assert empty.status_code == 200 and empty.json()["rewards"] == []


def test_incomplete_group_is_judged_at_the_deadline_and_a_lone_one_is_counted(judge, tokenizer):
    config = ServeConfig(group_size=N, group_timeout_s=0.5, batch_window_ms=20)
    prompt = chat_prompt(tokenizer, QUESTIONS[0])
    with BackgroundServer(create_app(judge, config)) as url:
        three = [(openrlhf_query(tokenizer, prompt, r), prompt, "") for r in RESPONSES[0][:3]]
        got = [a[0] for a in asyncio.run(openrlhf_current_client(f"{url}/get_reward", three))]
        lone_prompt = chat_prompt(tokenizer, QUESTIONS[1])
        lone = httpx.post(
            f"{url}/get_reward",
            json={"query": [openrlhf_query(tokenizer, lone_prompt, "Sea.")], "prompts": [lone_prompt], "labels": [""]},
        ).json()
        stats = httpx.get(f"{url}/stats").json()
    expected = expected_group_rewards(judge, judge_question(prompt), RESPONSES[0][:3])
    assert got == pytest.approx(expected, abs=TOL)
    assert lone["rewards"] == [0.5] and lone["compared"] == [0] and "nothing to compare with" in lone["failures"][0]
    assert stats["groups"]["at_deadline"] == 2 and stats["items"]["nothing_to_compare"] == 1


def test_openrlhf_0_9_one_batched_request_and_bad_samples(server, judge, tokenizer):
    prompts = [chat_prompt(tokenizer, q) for q in QUESTIONS]
    all_prompts = [p for p in prompts for _ in range(N)]
    queries = [
        "<pad><pad>" + openrlhf_query(tokenizer, prompts[k], r) for k in range(2) for r in RESPONSES[k]
    ]  # left padding survives a decode with skip_special_tokens=False when not removed
    got = httpx.post(f"{server}/get_reward", json={"query": queries, "prompts": all_prompts, "labels": [""] * 8})
    expected = [r for k in range(2) for r in expected_group_rewards(judge, judge_question(prompts[k]), RESPONSES[k])]
    assert got.status_code == 200 and got.json()["rewards"] == pytest.approx(expected, abs=TOL)
    # One bad sample among 8 (its query lost its prompt): the other 7 are scored, the eighth says why.
    broken = list(queries)
    broken[5] = "something else entirely"
    answer = httpx.post(f"{server}/get_reward", json={"query": broken, "prompts": all_prompts, "labels": [""] * 8})
    body = answer.json()
    assert answer.status_code == 200 and body["rewards"][5] == 0.5 and "query[5]" in body["failures"][5]
    assert [f is None for f in body["failures"]] == [True] * 5 + [False] + [True] * 2
    second = [RESPONSES[1][k] for k in (0, 2, 3)]
    assert body["rewards"][:4] == pytest.approx(expected[:4], abs=TOL)
    assert [body["rewards"][k] for k in (4, 6, 7)] == pytest.approx(
        expected_group_rewards(judge, judge_question(prompts[1]), second), abs=TOL
    )
    # Labels of other types: a number is a reference answer; a dict is that item's error; an empty label among
    # non-empty ones joins its group (here alone in it, and the request holds all N samples: nothing waits).
    labels = [5, "5", {"x": 1}, ""] + [""] * 4
    body = httpx.post(f"{server}/get_reward", json={"query": queries, "prompts": all_prompts, "labels": labels}).json()
    q0 = judge_question(prompts[0])
    against = judge.judge([q0, q0], RESPONSES[0][:2], ["5", "5"])
    assert body["rewards"][:2] == pytest.approx([jd.prob for jd in against], abs=TOL)
    assert body["rewards"][2] == 0.5 and "labels[2]" in body["failures"][2]
    assert body["compared"][3] == 0 and "nothing to compare with" in body["failures"][3]  # alone without a label
    assert body["rewards"][4:] == pytest.approx(expected[4:], abs=TOL)


def test_verl_reward_loop_per_sample_calls(server, judge):
    rows = [(q, r) for q, group in zip(QUESTIONS, RESPONSES) for r in group]

    async def reward_loop():  # RewardLoopWorker.compute_score_batch: one task per response
        tasks = []
        for q, r in rows:
            extra_info = {"question": q, "index": 0, "num_turns": None, "rollout_reward_scores": {}}
            call = dict(data_source="hh", solution_str=r, ground_truth="", extra_info=extra_info)
            tasks.append(asyncio.create_task(verl.compute_score(**call, **{"url": server})))
        return await asyncio.gather(*tasks)

    got = asyncio.run(reward_loop())
    expected = [r for q, group in zip(QUESTIONS, RESPONSES) for r in expected_group_rewards(judge, q, group)]
    assert [g["score"] for g in got] == pytest.approx(expected, abs=TOL)
    # the judge's health beside the score (verl logs every key): whole groups of 4, both orders, all parsed
    assert {g["compared"] for g in got} == {float(N - 1)} and {g["parse_failure"] for g in got} == {0.0}
    assert all(0.0 <= g["swap_agreement"] <= 1.0 for g in got)


def test_verl_legacy_batch_small_step_real_model(server, judge):
    solutions = [r for group in RESPONSES for r in group]
    extras = [{"question": q, "rollout_reward_scores": {}} for q in QUESTIONS for _ in range(N)]
    got = verl.compute_score_batch(
        data_sources=np.array(["hh"] * 8, dtype=object),
        solution_strs=solutions,
        ground_truths=[None] * 8,
        extra_infos=extras,
        **{"url": server},
    )
    expected = [r for q, group in zip(QUESTIONS, RESPONSES) for r in expected_group_rewards(judge, q, group)]
    assert got == pytest.approx(expected, abs=TOL)


class LengthJudge:
    """Fake judge: P(first is better) = len(first) / (len(first) + len(second))."""

    def __init__(self):
        self.calls = []

    def judge(self, questions, first, second, **kwargs):
        self.calls.append(len(questions))
        out = []
        for a, b in zip(first, second):
            p = len(a) / (len(a) + len(b))
            out.append(
                PairJudgment(prob=p, label="A" if p >= 0.5 else "B", agreement=None, runs=[JudgeRun("AB", p, "A")])
            )
        return out


def test_verl_legacy_batch_1024_x_5_step():
    prompts, n = 1024, 5
    questions = [f"question {k}" for k in range(prompts) for _ in range(n)]
    solutions = ["x" * (1 + (7 * k) % 23) for k in range(prompts * n)]
    judge = LengthJudge()
    app = create_app(judge, ServeConfig(max_batch_pairs=2048))  # default limits: 4,096 comparisons per request
    with BackgroundServer(app) as url:
        got = verl.compute_score_batch(
            data_sources=np.array(["hh"] * len(solutions), dtype=object),
            solution_strs=solutions,
            ground_truths=[None] * len(solutions),
            extra_infos=[{"question": q, "rollout_reward_scores": {}} for q in questions],
            **{"url": url},
        )
        stats = httpx.get(f"{url}/stats").json()
    assert stats["batcher"]["requests"] >= 3 and stats["items"]["refused"] == 0  # 10,240 comparisons, split
    for g in range(prompts):
        group = solutions[g * n : (g + 1) * n]
        for i in range(n):
            want = sum(len(group[i]) / (len(group[i]) + len(group[j])) for j in range(n) if j != i) / (n - 1)
            assert math.isclose(got[g * n + i], want, abs_tol=TOL)


def test_openrlhf_current_with_the_key_in_its_url(judge, tokenizer):
    """OpenRLHF sends JSON only (no headers): the key goes in `--reward.remote_url` as /key/<key>/get_reward."""
    prompt = chat_prompt(tokenizer, QUESTIONS[0])
    samples = [(openrlhf_query(tokenizer, prompt, r), prompt, "") for r in RESPONSES[0]]
    with BackgroundServer(create_app(judge, ServeConfig(api_key="k3y", group_size=N))) as url:
        refused = httpx.post(f"{url}/get_reward", json={"query": [samples[0][0]], "prompts": [prompt], "labels": [""]})
        assert refused.status_code == 401
        got = [a[0] for a in asyncio.run(openrlhf_current_client(f"{url}/key/k3y/get_reward", samples))]
    assert got == pytest.approx(expected_group_rewards(judge, judge_question(prompt), RESPONSES[0]), abs=TOL)
