"""One bad item never costs its neighbours: the request parser under fuzzing (no 500 for any body, one reward per
item), errors named after the client's fields, judge exceptions isolated to their pair, and fair round-robin batching
(a large request cannot starve a small one)."""

import json
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trl_gram.judge import JudgeRun, PairJudgment
from trl_gram.serving.batcher import MicroBatcher
from trl_gram.serving.scoring import ItemError, openrlhf_items, reward_items, split_query
from trl_gram.serving.server import ServeConfig, create_app

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402


class LengthJudge:
    """Fake judge: P(first wins) = len(first) / (len(first) + len(second)); raises on a response containing BOOM
    (as a tokenizer would on input it cannot handle)."""

    def __init__(self, delay: float = 0.0):
        self.delay, self.batches = delay, []

    def judge(self, questions, first, second, **kwargs):
        self.batches.append([str(a)[:12] for a in first])
        for a, b in zip(first, second):
            if "BOOM" in str(a) or "BOOM" in str(b):
                raise TypeError("cannot tokenize this")
        time.sleep(self.delay * len(questions))
        out = []
        for a, b in zip(first, second):
            la, lb = len(str(a)), len(str(b))
            p = la / (la + lb) if la + lb else 0.5
            out.append(PairJudgment(prob=p, label="A", agreement=None, runs=[JudgeRun("AB", p, "A")]))
        return out


@pytest.fixture(scope="module")
def client():
    app = create_app(LengthJudge(), ServeConfig(group_size=2, group_timeout_s=0.05, batch_window_ms=0))
    with TestClient(app) as c:
        yield c


text = st.text(max_size=12) | st.sampled_from(["\ud800", "a\udfffb", "", "  ", "<|im_end|>", "<pad>q"])
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant"])}, optional={"content": text | st.none()}
)
value = st.one_of(
    text,
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(message, max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
column = st.lists(value, max_size=5) | value
bodies = st.fixed_dictionaries(
    {},
    optional={
        "query": column,
        "prompts": column,
        "labels": column,
        "completions": column,
        "references": column,
        "reference": st.sampled_from(["group", "pivot", "nope"]) | st.integers(),
        "group_across_requests": st.booleans() | st.integers(),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, path=st.sampled_from(["/get_reward", "/reward"]))
def test_fuzzed_bodies_never_get_a_500(client, body, path):
    response = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code in (200, 400), response.text
    answer = response.json()
    if response.status_code == 400:
        assert isinstance(answer["error"], str) and answer["error"]
        return
    n = len(body["query"] if path == "/get_reward" else body["completions"])
    assert len(answer["rewards"]) == len(answer["failures"]) == len(answer["compared"]) == n
    for r, f in zip(answer["rewards"], answer["failures"]):
        assert (f is None) or (r is None or isinstance(r, float))


def test_bad_items_are_named_after_the_clients_fields():
    items = reward_items(
        {
            "prompts": ["q", "q", [{"role": "user"}], "q\ud800"],
            "completions": ["a", [{"role": "assistant", "content": 3}], "c", "d"],
            "references": [{"x": 1}, None, None, None],
        }
    )
    assert "references[0]" in items[0].error
    assert "completions[1][0]" in items[1].error and "content" in items[1].error
    assert "prompts[2][0]" in items[2].error
    assert "prompts[3]" in items[3].error and "surrogate" in items[3].error
    items = openrlhf_items({"query": ["q a", 7, "q\ud800 a"], "prompts": ["q", "q", "q"], "labels": ["", "", ""]}, [])
    assert items[0].error is None and items[0].completion == "a"
    assert "query[1]" in items[1].error and "query[2]" in items[2].error
    with pytest.raises(ValueError, match="`labels` has 1 items"):
        openrlhf_items({"query": ["q a"] * 2, "prompts": ["q"] * 2, "labels": [""]}, [])


def test_truncated_prompt_recovery():
    prompt = "<|im_start|>user\nA long question about the sea and the sky<|im_end|>\n<|im_start|>assistant\n"
    tokens = ["<|im_end|>"]
    question, response = split_query("the sea and the sky\n<|im_start|>assistant\nBlue.<|im_end|>", prompt, tokens, 0)
    assert response == "Blue." and question == [
        {"role": "user", "content": "A long question about the sea and the sky"}
    ]
    # A cut inside a multi-byte character decodes as U+FFFD.
    assert split_query("\ufffdsky\n<|im_start|>assistant\nBlue.", prompt, tokens, 0)[1] == "Blue."
    with pytest.raises(ItemError, match="query\\[0\\]"):
        split_query("tant\nBlue.", prompt, tokens, 0)  # too short an overlap to trust


def test_judge_exception_stays_with_its_item(client):
    body = {"prompts": ["q"] * 4, "completions": ["a", "bb", "BOOM", "dddd"], "group_across_requests": False}
    answer = client.post("/reward", json={**body, "reference": "pivot"}).json()
    assert answer["rewards"][0] is not None and answer["rewards"][1] is not None and answer["rewards"][3] is not None
    assert answer["rewards"][2] is None and "TypeError" in answer["failures"][2]
    assert answer["rewards"][1] == pytest.approx(2 / 3)  # against the pivot "a": 2 / (2 + 1)
    stats = client.get("/stats").json()
    assert stats["batcher"]["failed_pairs"] >= 1


def test_round_robin_batching_does_not_starve_small_requests():
    judge = LengthJudge(delay=0.002)
    batcher = MicroBatcher(judge, window_s=0.0, max_pairs=16)
    done = []
    big = batcher.submit(["q"] * 400, ["big"] * 400, ["x"] * 400)
    big.add_done_callback(lambda f: done.append("big"))
    while not judge.batches:  # the large request is being judged
        time.sleep(0.001)
    small = batcher.submit(["q"] * 2, ["small"] * 2, ["x"] * 2)
    small.add_done_callback(lambda f: done.append("small"))
    assert len(small.result(timeout=60)) == 2 and len(big.result(timeout=60)) == 400
    batcher.stop()
    assert done == ["small", "big"]
    # The small request shared a batch with a slice of the large one.
    assert any("small" in b and "big" in b for b in judge.batches)
    assert max(len(b) for b in judge.batches) <= 16


def test_concurrent_requests_each_get_their_own_results():
    judge = LengthJudge()
    batcher = MicroBatcher(judge, window_s=0.02, max_pairs=8)
    results = {}

    def call(k):
        results[k] = batcher.submit(["q"] * (k + 1), ["a" * (k + 1)] * (k + 1), ["b"] * (k + 1)).result(timeout=30)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.stop()
    for k in range(6):
        assert [jd.prob for jd in results[k]] == pytest.approx([(k + 1) / (k + 2)] * (k + 1))


def test_judge_errors_name_the_clients_fields(tokenizer):
    """The real judge rejects a question without a user turn naming `questions[k]`; the client reads `prompts[1]`."""
    from tiny_models import tiny_llama

    from trl_gram.judge import GramJudge
    from trl_gram.serving.server import rename_judge_args

    assert rename_judge_args("`responses_2[7]` is bad", "prompts[0]", "completions[0]", "references[0]") == (
        "`references[0]` is bad"
    )
    judge = GramJudge(tiny_llama(tokenizer), tokenizer, mode="direct", cache_size=0)
    app = create_app(judge, ServeConfig(group_timeout_s=0))
    with TestClient(app) as c:
        body = {
            "prompts": ["q", [{"role": "system", "content": "only a system turn"}]],
            "completions": ["a", "b"],
            "references": ["r", "r"],
        }
        answer = c.post("/reward", json=body).json()
    assert answer["rewards"][0] is not None and answer["rewards"][1] is None
    assert "`prompts[1]`" in answer["failures"][1] and "questions[" not in answer["failures"][1]
