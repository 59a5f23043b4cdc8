"""GenerativeRewardFunction: comparison plans (references, column, group, pivot, OnlineDPO pairs), output transforms,
failure policies, logging hooks, pickling and bad input. The math runs on a fake judge with a known preference;
the same paths run once on a real tiny model at the end."""

import asyncio
import math
import pickle

import pytest

from trl_gram.judge import GramJudge, JudgeRun, PairJudgment
from trl_gram.parsing import NO_ANSWER
from trl_gram.reward import AsyncGenerativeRewardFunction, GenerativeRewardFunction


class ScoreJudge:
    """Prefers the longer response: P(first better) = a / (a + b) over lengths; outputs containing 'FAIL' are
    unparsable. Records every call."""

    def __init__(self):
        self.calls = []

    def judge(self, questions, responses_1, responses_2, **kwargs):
        self.calls.append((list(questions), list(responses_1), list(responses_2), kwargs))
        out = []
        for a, b in zip(responses_1, responses_2):
            p = len(a) / (len(a) + len(b))
            fail = "FAIL" in a or "FAIL" in b
            if kwargs.get("votes", 1) > 1:  # a retry with sampling "repairs" the output
                fail = "FAILHARD" in a or "FAILHARD" in b
            run = JudgeRun(
                "AB",
                p,
                None if fail else ("A" if p >= 0.5 else "B"),
                rationale=f"{a} vs {b}",
                failure=NO_ANSWER if fail else None,
            )
            out.append(PairJudgment(p, run.label, None, [run]))
        return out


def test_references_passed_by_trainer():
    judge = ScoreJudge()
    reward = GenerativeRewardFunction(judge)
    out = reward(prompts=["p", "q"], completions=["aaa", "b"], references=["a", "bbb"])
    assert out == pytest.approx([0.75, 0.25])
    assert judge.calls[0][:3] == (["p", "q"], ["aaa", "b"], ["a", "bbb"])


def test_reference_column_and_output_transforms():
    judge = ScoreJudge()
    cols = {"reference": ["a", "aaa"], "other": [1, 2]}
    prob = GenerativeRewardFunction(judge, reference_column="reference")(["p", "q"], ["aaa", "a"], **cols)
    assert prob == pytest.approx([0.75, 0.25])
    centered = GenerativeRewardFunction(judge, reference_column="reference", output="centered")(
        ["p", "q"], ["aaa", "a"], **cols
    )
    assert centered == pytest.approx([0.25, -0.25])
    logit = GenerativeRewardFunction(judge, reference_column="reference", output="logit")(
        ["p", "q"], ["aaa", "a"], **cols
    )
    assert logit == pytest.approx([math.log(3), -math.log(3)])
    with pytest.raises(ValueError, match="'missing'.*reference"):
        GenerativeRewardFunction(judge, reference_column="missing")(["p"], ["a"], **cols)


def test_group_all_pairs_mean_win_probability():
    judge = ScoreJudge()
    reward = GenerativeRewardFunction(judge, reference="group")
    prompts = ["p"] * 3 + ["q"] * 2
    comps = ["a", "aa", "aaaa", "b", "bbb"]
    out = reward(prompts=prompts, completions=comps)
    p = lambda x, y: len(x) / (len(x) + len(y))  # noqa: E731
    expected = [
        (p("a", "aa") + p("a", "aaaa")) / 2,
        (p("aa", "a") + p("aa", "aaaa")) / 2,
        (p("aaaa", "a") + p("aaaa", "aa")) / 2,
        p("b", "bbb"),
        p("bbb", "b"),
    ]
    assert out == pytest.approx(expected)
    # G(G-1)/2 comparisons per group, in one judge call.
    assert len(judge.calls) == 1 and len(judge.calls[0][0]) == 3 + 1


def test_pivot_is_cheaper_and_consistent():
    judge = ScoreJudge()
    out = GenerativeRewardFunction(judge, reference="pivot")(["p"] * 4, ["aa", "a", "aaa", "aaaaaa"])
    assert len(judge.calls[0][0]) == 3  # G - 1 comparisons
    p = lambda x, y: len(x) / (len(x) + len(y))  # noqa: E731
    assert out[1:] == pytest.approx([p("a", "aa"), p("aaa", "aa"), p("aaaaaa", "aa")])
    assert out[0] == pytest.approx(sum(1 - p(c, "aa") for c in ["a", "aaa", "aaaaaa"]) / 3)


def test_online_dpo_pairs_layout_detected():
    judge = ScoreJudge()
    prompts = ["p", "q", "r"] * 2  # OnlineDPO doubles the prompts
    comps = ["aaa", "b", "cc", "a", "bbb", "cc"]
    auto = GenerativeRewardFunction(judge, reference="group")(prompts, comps)
    explicit = GenerativeRewardFunction(judge, reference="pairs")(prompts, comps)
    assert auto == explicit
    for i in range(3):
        assert auto[i] + auto[i + 3] == pytest.approx(1.0)
    assert auto[0] == pytest.approx(0.75)


def test_failure_policies():
    judge = ScoreJudge()
    prompts, comps, refs = ["p", "q"], ["FAIL", "aaa"], ["a", "a"]
    assert GenerativeRewardFunction(judge)(prompts, comps, references=refs)[0] is None
    assert GenerativeRewardFunction(judge, on_failure=-1.0)(prompts, comps, references=refs)[0] == -1.0
    assert GenerativeRewardFunction(judge, on_failure="prob")(prompts, comps, references=refs)[0] == pytest.approx(0.8)
    retry = GenerativeRewardFunction(judge, on_failure="retry", retry_votes=3)
    assert retry(prompts, comps, references=refs)[0] == pytest.approx(0.8)
    assert judge.calls[-1][3]["votes"] == 3 and judge.calls[-1][1] == ["FAIL"]  # only the failed pair again
    assert retry(prompts, ["FAILHARD", "x"], references=refs)[0] is None
    # In a group, a failed comparison is left out of both completions' means.
    out = GenerativeRewardFunction(judge, reference="group")(["p"] * 3, ["FAIL", "aa", "a"])
    assert out[0] is None and out[1] == pytest.approx(2 / 3) and out[2] == pytest.approx(1 / 3)


def test_logging_hooks():
    judge = ScoreJudge()
    extras, metrics = {}, {}
    reward = GenerativeRewardFunction(judge, reference="group", name="gram")
    reward(
        ["p"] * 2,
        ["FAIL", "aa"],
        log_extra=lambda k, v: extras.setdefault(k, v),
        log_metric=lambda k, v: metrics.setdefault(k, v),
        trainer_state=None,
    )
    assert extras["gram_rationale"] == ["FAIL vs aa", "FAIL vs aa"]
    assert metrics["gram/parse_failure_rate"] == 1.0 and metrics["gram/judged_pairs"] == 1.0


def test_contract_shape_and_bad_input():
    judge = ScoreJudge()
    reward = GenerativeRewardFunction(judge, reference="group")
    assert reward.__name__ == "gram_reward" and not hasattr(reward, "forward")
    assert reward([], []) == []
    assert reward(["p"], ["alone"]) == [None]  # a group of one has nothing to be compared with
    with pytest.raises(ValueError, match="prompts"):
        reward(["p"], ["a", "b"])
    with pytest.raises(ValueError, match=r"completions\[1\]"):
        reward(["p", "p"], ["a", None])
    with pytest.raises(ValueError, match="Nothing to compare"):
        GenerativeRewardFunction(judge)(["p"], ["a"])
    with pytest.raises(ValueError, match=r"Reference 0"):
        GenerativeRewardFunction(judge)(["p"], ["a"], references=[""])
    with pytest.raises(ValueError, match="reference"):
        GenerativeRewardFunction(judge, reference="everything")
    with pytest.raises(ValueError, match="output"):
        GenerativeRewardFunction(judge, output="score")
    with pytest.raises(ValueError, match="on_failure"):
        GenerativeRewardFunction(judge, on_failure="explode")


def test_lazy_loading_and_pickling(tmp_path, tokenizer, tiny_model):
    tiny_model.save_pretrained(tmp_path / "judge")
    tokenizer.save_pretrained(tmp_path / "judge")
    reward = GenerativeRewardFunction(str(tmp_path / "judge"), judge_kwargs={"mode": "direct", "device": "cpu"})
    assert reward._judge is None  # nothing loaded yet
    out = reward(["q"], ["a"], references=["b"])
    assert isinstance(reward.judge, GramJudge) and 0 <= out[0] <= 1
    clone = pickle.loads(pickle.dumps(reward))
    assert clone._judge is None  # reloaded lazily in the new process
    assert clone(["q"], ["a"], references=["b"]) == pytest.approx(out)


def test_async_variant_runs_concurrently_with_same_results():
    judge = ScoreJudge()
    sync = GenerativeRewardFunction(judge, reference="group")
    areward = AsyncGenerativeRewardFunction(judge, reference="group")
    from trl.trainer.utils import is_async_callable

    assert is_async_callable(areward) and not is_async_callable(sync)

    async def both():
        return await asyncio.gather(areward(["p"] * 2, ["a", "aaa"]), areward(["q"] * 2, ["bb", "b"]))

    first, second = asyncio.run(both())
    assert first == sync(["p"] * 2, ["a", "aaa"]) and second == sync(["q"] * 2, ["bb", "b"])


def test_real_tiny_judge_group_reward_with_conversational_inputs(tiny_judge):
    reward = GenerativeRewardFunction(tiny_judge, reference="group", on_failure="prob")
    prompt = [{"role": "user", "content": "What is 2 + 3?"}]
    comps = [[{"role": "assistant", "content": c}] for c in ["5", "6", "It is 5."]]
    extras = {}
    out = reward([prompt] * 3, comps, log_extra=lambda k, v: extras.setdefault(k, v))
    assert len(out) == 3 and all(0.0 <= r <= 1.0 for r in out)
    assert sum(out) == pytest.approx(1.5, abs=1e-5)  # all-pairs means of p and 1-p sum to G/2
    assert len(extras["gram_reward_rationale"]) == 3
