"""The group-comparison settings (sparse schedules, Bradley–Terry, adaptive orders, length control) on every path that
makes group rewards: the reward server (a whole group per request, and per-sample requests grouped across requests),
its TRL client, the verl functions, OpenRLHF's endpoint (server settings) and best-of-n ranking. Real tiny judge,
in-process server on 127.0.0.1; each path's rewards equal the in-process GenerativeRewardFunction's."""

import asyncio

import httpx
import pytest
from tiny_models import sharp_direct_judge

from trl_gram.ranking import best_of_n, rank_all
from trl_gram.reward import GenerativeRewardFunction
from trl_gram.serving.remote_reward import RemoteGenerativeRewardFunction
from trl_gram.serving.server import BackgroundServer, ServeConfig, create_app

pytest.importorskip("fastapi")

QUESTION = "What is 2 + 3?"
GROUP = ["5", "It is 6.", "The answer is 5.", "Five, since 2 + 3 = 5.", "4", "I do not know."]
SETTINGS = dict(schedule="sparse", schedule_degree=2, aggregate="bradley_terry", second_order="adaptive")


@pytest.fixture(scope="module")
def judge(tokenizer):
    return sharp_direct_judge(tokenizer)


def _local(judge, calls=1, **settings):
    """The in-process rewards of the group; ``calls``: of the n-th group judged (sparse graphs are drawn in turn from
    one seeded generator, by the server as in-process)."""
    reward = GenerativeRewardFunction(judge, reference="group", **settings)
    for _ in range(calls):
        out = reward([QUESTION] * len(GROUP), GROUP)
    return out, reward.last_cost


def test_server_request_settings_match_the_local_reward(judge):
    local, cost = _local(judge, **SETTINGS)
    assert cost.judge_calls < cost.all_pairs_calls == 30
    with BackgroundServer(create_app(judge, ServeConfig(batch_window_ms=5))) as url:
        body = {"prompts": [QUESTION] * 6, "completions": GROUP, "group_across_requests": False, **SETTINGS}
        got = httpx.post(f"{url}/reward", json=body).json()
        assert got["rewards"] == pytest.approx(local, abs=1e-5)
        assert got["compared"] == [2] * 6  # degree 2: each completion meets two others
        stats = httpx.get(f"{url}/stats").json()["judge_calls"]
        assert stats["judge_calls"] == cost.judge_calls and stats["all_pairs_calls"] == 30
        for field, value in (("schedule", "ring"), ("second_order_margin", 2), ("extra_votes", -1)):
            bad = httpx.post(f"{url}/reward", json={**body, field: value})
            assert bad.status_code == 400 and field in bad.json()["error"]
        # the TRL client sends the same names
        remote = RemoteGenerativeRewardFunction(url, **SETTINGS)
        second, _ = _local(judge, calls=2, **SETTINGS)
        assert asyncio.run(remote([QUESTION] * 6, GROUP)) == pytest.approx(second, abs=1e-5)
    with pytest.raises(ValueError, match="schedule"):
        RemoteGenerativeRewardFunction("http://127.0.0.1:1", schedule="ring")


class RecordingJudge:
    """The real tiny judge, recording the `votes` each judge call asks for."""

    def __init__(self, inner):
        self.inner, self.votes = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def judge(self, questions, responses_1, responses_2, **overrides):
        self.votes.append(overrides.get("votes"))
        return self.inner.judge(questions, responses_1, responses_2, **overrides)


def test_server_spends_extra_votes_like_the_local_reward(judge):
    votes = dict(second_order="adaptive", second_order_margin=0.5, extra_votes=2)
    local, cost = _local(judge, **votes)
    assert cost.extra_votes > 0  # margin 0.5: every comparison is "near", so each gets its extra votes
    recording = RecordingJudge(judge)
    with BackgroundServer(create_app(recording, ServeConfig(batch_window_ms=5))) as url:
        body = {"prompts": [QUESTION] * 6, "completions": GROUP, "group_across_requests": False, **votes}
        got = httpx.post(f"{url}/reward", json=body).json()
        assert got["rewards"] == pytest.approx(local, abs=1e-5)
        stats = httpx.get(f"{url}/stats").json()["judge_calls"]
        assert stats["judge_calls"] == cost.judge_calls
    assert 2 in recording.votes  # the batcher handed the extra votes to the judge


def test_server_defaults_per_sample_groups_verl_and_openrlhf(judge):
    config = ServeConfig(batch_window_ms=5, group_size=6, group_timeout_s=30, length_control=True, **SETTINGS)
    with BackgroundServer(create_app(judge, config)) as url:
        # per-sample requests (OpenRLHF >= 0.9.1, verl's reward loop): one response each, grouped on the server
        async def per_sample(settings):
            async with httpx.AsyncClient() as client:
                answers = await asyncio.gather(
                    *(
                        client.post(f"{url}/reward", json={"prompts": [QUESTION], "completions": [c], **settings})
                        for c in GROUP
                    )
                )
            return [a.json() for a in answers]

        answers = asyncio.run(per_sample({}))  # the server's settings: sparse, degree 2
        assert [a["compared"] for a in answers] == [[2]] * 6
        assert all(0 < a["rewards"][0] < 1 for a in answers)
        assert httpx.get(f"{url}/stats").json()["judge_calls"]["judge_calls"] < 30
        # the request's own settings; all pairs in both orders do not depend on the order of arrival
        bt_all = dict(schedule="all", aggregate="bradley_terry", second_order="always", length_control=True)
        answers = asyncio.run(per_sample(bt_all))
        local, _ = _local(judge, **bt_all)
        assert [a["rewards"][0] for a in answers] == pytest.approx(local, abs=1e-5)
        # OpenRLHF's batched /get_reward: the server's settings (the second sparse group this server drew)
        body = {"query": [QUESTION + " " + c for c in GROUP], "prompts": [QUESTION] * 6}
        local, _ = _local(judge, calls=2, length_control=True, **SETTINGS)
        assert httpx.post(f"{url}/get_reward", json=body).json()["rewards"] == pytest.approx(local, abs=1e-5)
    from trl_gram.serving import verl

    infos = [{"question": QUESTION}] * 6
    with BackgroundServer(create_app(judge, ServeConfig(batch_window_ms=5))) as url:
        got = verl.compute_score_batch(["hh"] * 6, GROUP, [""] * 6, infos, url=url, **SETTINGS)
        assert got == pytest.approx(_local(judge, **SETTINGS)[0], abs=1e-5)
        assert verl.split_step([QUESTION] * 6, [None] * 6, "group", 6, schedule="sparse", schedule_degree=2) == [
            list(range(6))
        ]


def test_ranking_takes_the_same_settings(judge):
    full = rank_all(judge, QUESTION, GROUP)
    assert full.judge_calls == 30 and len(full.comparisons) == 15
    sparse = rank_all(judge, QUESTION, GROUP, **SETTINGS)
    local, cost = _local(judge, **SETTINGS)
    assert sparse.scores == pytest.approx(local, abs=1e-6) and sparse.judge_calls == cost.judge_calls
    assert len(sparse.comparisons) == 6 and sparse.order[0] == max(range(6), key=lambda k: local[k])
    assert best_of_n(judge, QUESTION, GROUP, method="all", **SETTINGS) == sparse.winner


def test_adaptive_with_every_second_order_equals_both_orders_on_a_real_judge(judge):
    both, _ = _local(judge, schedule="sparse", schedule_degree=3, aggregate="bradley_terry")
    adaptive, cost = _local(
        judge, schedule="sparse", schedule_degree=3, aggregate="bradley_terry", second_order="adaptive",
        second_order_margin=0.5,
    )  # fmt: skip
    assert adaptive == pytest.approx(both, abs=1e-5) and cost.second_orders == 9 == cost.judge_calls - 9
