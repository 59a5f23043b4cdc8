"""Fewer comparisons per group: schedules (connected, regular, position-balanced), the Bradley–Terry fit (hand-computed
cases, same ranking as the mean on all pairs), adaptive orders and votes (which comparisons get a second order, the
budget, the cost reported), length control, and the settings on GenerativeRewardFunction. The math runs on simulated
judges; the whole path runs once on a real tiny model and once in TRL's GRPOTrainer."""

import math
import random

import numpy as np
import pytest

from trl_gram import adaptive, bradley_terry, pairing, schedules
from trl_gram.judge import JudgeRun, PairJudgment, combine_runs
from trl_gram.parsing import NO_ANSWER
from trl_gram.reward import GenerativeRewardFunction


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


class BiasedJudge:
    """Known strengths per response text, plus a position bias in log-odds for the response shown first.
    Responses containing 'FAIL' are unparsable. Records every call."""

    def __init__(self, strengths, bias=0.0):
        self.strengths, self.bias, self.calls = strengths, bias, []

    def judge(self, questions, responses_1, responses_2, swap="both", votes=1, **kwargs):
        self.calls.append({"pairs": list(zip(responses_1, responses_2)), "swap": swap, "votes": votes, **kwargs})
        out = []
        for a, b in zip(responses_1, responses_2):
            runs = []
            for order in ("AB", "BA") if swap == "both" else ("AB",):
                x, y = (a, b) if order == "AB" else (b, a)
                p = sigmoid(self.strengths[x] - self.strengths[y] + self.bias)
                fail = "FAIL" in x or "FAIL" in y
                runs += [
                    JudgeRun(
                        order, p, None if fail else ("A" if p >= 0.5 else "B"), failure=NO_ANSWER if fail else None
                    )
                ] * votes
            out.append(combine_runs(runs, ("A", "B")))
        return out

    @property
    def passes(self):
        return sum(len(c["pairs"]) * (2 if c["swap"] == "both" else 1) * c["votes"] for c in self.calls)


# ---------------------------------------------------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["all", "sparse", "circular"])
def test_schedules_connected_regular_and_position_balanced(kind):
    rng = random.Random(0)
    for n in range(2, 21):
        for degree in (2, 3, 4, 5):
            edges = schedules.schedule(n, kind, degree, rng)
            assert schedules.is_connected(n, edges), (kind, n, degree)
            assert len({frozenset(e) for e in edges}) == len(edges) and all(a != b for a, b in edges)
            assert len(edges) <= schedules.cost(n, kind, degree)
            shown_first, seen = [0] * n, [0] * n
            for a, b in edges:
                shown_first[a] += 1
                seen[a] += 1
                seen[b] += 1
            # each member shown first in half of its comparisons (one off when it has an odd number)
            assert all(abs(2 * f - s) <= 1 for f, s in zip(shown_first, seen)), (kind, n, degree)
            if kind == "all" or degree >= n - 1:
                assert len(edges) == n * (n - 1) // 2
            elif not (n % 2 and degree % 2):
                assert seen == [degree] * n, (kind, n, degree, seen)  # regular


def test_sparse_is_linear_in_group_size_and_drawn_per_group():
    assert schedules.cost(16, "sparse", 4) == 32 and schedules.cost(16, "all") == 120
    assert sorted(map(sorted, schedules.circular(6, 2))) == [[0, 1], [0, 5], [1, 2], [2, 3], [3, 4], [4, 5]]
    rng = random.Random(1)
    draws = {tuple(sorted(map(tuple, map(sorted, schedules.schedule(12, "sparse", 3, rng))))) for _ in range(5)}
    assert len(draws) > 1


def test_orient_balances_any_graph():
    star = [(0, k) for k in range(1, 8)]  # the pivot's comparisons
    oriented = schedules.orient(8, star)
    assert sorted(map(sorted, oriented)) == sorted(map(sorted, star))
    assert abs(sum(a == 0 for a, _ in oriented) - 3.5) <= 0.5
    with pytest.raises(ValueError, match="itself"):
        schedules.orient(3, [(1, 1)])
    with pytest.raises(ValueError, match="schedule"):
        schedules.schedule(4, "ring")
    with pytest.raises(ValueError, match="schedule_degree"):
        schedules.schedule(6, "sparse", 1)


# ---------------------------------------------------------------------------------------------------------------------
# Bradley–Terry
# ---------------------------------------------------------------------------------------------------------------------
def test_bradley_terry_two_members_by_hand():
    # without prior the fit reproduces the observed odds: s0 - s1 = logit(0.8) = log 4
    s = bradley_terry.fit(2, [(0, 1, 0.8)], prior=1e-12)
    assert s[0] - s[1] == pytest.approx(math.log(4), abs=1e-6)
    # with prior l the optimum has s1 = -s0 and 0.8 - sigmoid(2 s0) = l s0; solve by bisection
    lo, hi = 0.0, 5.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.8 - sigmoid(2 * mid) - 0.5 * mid > 0 else (lo, mid)
    s = bradley_terry.fit(2, [(0, 1, 0.8)], prior=0.5)
    assert s[0] == pytest.approx(lo, abs=1e-8) and s[1] == pytest.approx(-lo, abs=1e-8)
    # a hard outcome stays finite
    s = bradley_terry.fit(2, [(0, 1, 1.0)])
    assert np.all(np.isfinite(s)) and s[0] > s[1]


def test_bradley_terry_optimality_and_expected_wins_by_hand():
    pairs = [(0, 1, 0.9), (1, 2, 0.7), (2, 3, 0.6), (3, 0, 0.2), (0, 2, 0.95)]
    weights = [1.0, 2.0, 1.0, 1.0, 0.5]
    s = bradley_terry.fit(4, pairs, weights, prior=0.1)
    grad = -0.1 * s
    for (a, b, p), w in zip(pairs, weights):
        r = w * (p - sigmoid(s[a] - s[b]))
        grad[a] += r
        grad[b] -= r
    assert np.max(np.abs(grad)) < 1e-9  # the optimum of the penalized likelihood
    assert bradley_terry.expected_wins([0.0, math.log(3)]) == pytest.approx([0.25, 0.75])
    e = bradley_terry.expected_wins([0.0, 0.0, math.log(3)])
    assert e == pytest.approx([(0.5 + 0.25) / 2, (0.5 + 0.25) / 2, 0.75])


def test_bradley_terry_near_ties_stay_near_half_and_bad_input():
    rng = random.Random(0)
    pairs = [(a, b, 0.5 + rng.uniform(-0.02, 0.02)) for a, b in schedules.schedule(8, "sparse", 3, rng)]
    e = bradley_terry.expected_wins(bradley_terry.fit(8, pairs))
    assert np.all(np.abs(e - 0.5) < 0.03)
    assert np.all(bradley_terry.fit(3, [(0, 1, 0.5), (1, 2, 0.5), (2, 0, 0.5)]) == pytest.approx(0.0))
    with pytest.raises(ValueError, match="within"):
        bradley_terry.fit(2, [(0, 1, 1.5)])
    with pytest.raises(ValueError, match="outside"):
        bradley_terry.fit(2, [(0, 2, 0.5)])
    with pytest.raises(ValueError, match="prior"):
        bradley_terry.fit(2, [(0, 1, 0.5)], prior=0)


def test_all_pairs_bradley_terry_ranks_like_the_mean():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(2, 17))
        p = rng.uniform(0.02, 0.98, size=(n, n))
        pairs = [(a, b, float(p[a, b])) for a in range(n) for b in range(a + 1, n)]
        mean = [np.mean([q if a == k else 1 - q for a, b, q in pairs if k in (a, b)]) for k in range(n)]
        bt = bradley_terry.expected_wins(bradley_terry.fit(n, pairs))
        assert list(np.argsort(mean)) == list(np.argsort(bt)), trial


# ---------------------------------------------------------------------------------------------------------------------
# GenerativeRewardFunction: schedules, aggregates, orders
# ---------------------------------------------------------------------------------------------------------------------
def _group(n, seed=0):
    rng = random.Random(seed)
    return {f"answer {k}": rng.gauss(0, 1) for k in range(n)}


def test_defaults_are_todays_reward_and_bradley_terry_on_all_pairs_ranks_alike():
    strengths = _group(8)
    names = list(strengths)
    today = GenerativeRewardFunction(BiasedJudge(strengths, bias=0.3), reference="group")
    explicit = GenerativeRewardFunction(
        BiasedJudge(strengths, bias=0.3), reference="group", schedule="all", aggregate="mean", second_order="always"
    )
    out = today(["q"] * 8, names)
    assert explicit(["q"] * 8, names) == out
    assert today.last_cost.judge_calls == 56 and today.last_cost.saved == 0.0
    bt = GenerativeRewardFunction(BiasedJudge(strengths, bias=0.3), reference="group", aggregate="bradley_terry")
    out_bt = bt(["q"] * 8, names)
    assert list(np.argsort(out)) == list(np.argsort(out_bt)) == list(np.argsort([strengths[n] for n in names]))
    assert sum(out_bt) == pytest.approx(4.0)  # expected wins against the group sum to G / 2


def test_sparse_schedule_costs_linear_and_keeps_the_ranking():
    strengths = _group(16, seed=3)
    names = list(strengths)
    judge = BiasedJudge(strengths)
    reward = GenerativeRewardFunction(
        judge, reference="group", schedule="sparse", schedule_degree=4, aggregate="bradley_terry", output="centered"
    )
    metrics = {}
    out = reward(["q"] * 16, names, log_metric=metrics.__setitem__)
    assert judge.passes == 64 == reward.last_cost.judge_calls  # d G / 2 comparisons, both orders
    assert metrics["gram_reward/judge_calls"] == 64 and metrics["gram_reward/judge_calls_saved"] == pytest.approx(
        1 - 64 / 240
    )
    truth = [strengths[n] for n in names]
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert np.corrcoef(ranks(out), ranks(truth))[0, 1] > 0.95  # a noiseless judge: nearly the true order


def test_adaptive_spends_the_second_order_where_it_matters():
    # members far apart, except two near-ties: only the near-ties (and the unparsable one) get a second order
    strengths = {"a": 3.0, "b": 1.0, "c": 0.05, "d": 0.0, "e FAIL": -3.0}
    names = list(strengths)
    judge = BiasedJudge(strengths)
    reward = GenerativeRewardFunction(judge, reference="group", second_order="adaptive", on_failure="prob")
    reward(["q"] * 5, names)
    first, second = judge.calls[0], judge.calls[1]
    assert first["swap"] == second["swap"] == "none" and len(first["pairs"]) == 10
    again = {frozenset(p) for p in second["pairs"]}
    assert frozenset(("c", "d")) in again  # the near-tie
    assert all(frozenset(p) in again for p in first["pairs"] if "e FAIL" in p)  # unparsed first verdicts
    assert frozenset(("a", "d")) not in again  # clear and not decisive
    assert sorted((b, a) for a, b in second["pairs"]) == sorted(p for p in first["pairs"] if frozenset(p) in again)
    cost = reward.last_cost
    assert cost.judge_calls == 10 + len(second["pairs"]) and cost.second_orders == len(second["pairs"])


def test_adaptive_with_every_second_order_equals_both_orders():
    strengths = _group(6, seed=5)
    names = list(strengths)
    both = GenerativeRewardFunction(BiasedJudge(strengths, bias=0.7), reference="group")(["q"] * 6, names)
    reward = GenerativeRewardFunction(
        BiasedJudge(strengths, bias=0.7), reference="group", second_order="adaptive", second_order_margin=0.5
    )
    assert reward(["q"] * 6, names) == pytest.approx(both)
    # references too: half the completions are shown first, half after their reference
    refs = {**strengths, "ref": 0.0}
    judge = BiasedJudge(refs, bias=0.7)
    reward = GenerativeRewardFunction(judge, second_order="adaptive", second_order_margin=0.5)
    out = reward(["q"] * 6, names, references=["ref"] * 6)
    expected = GenerativeRewardFunction(BiasedJudge(refs, bias=0.7))(["q"] * 6, names, references=["ref"] * 6)
    assert out == pytest.approx(expected)
    assert sum(a == "ref" for a, _ in judge.calls[0]["pairs"]) == 3


def test_adaptive_budget_and_extra_votes():
    strengths = {f"r{k}": 0.01 * k for k in range(6)}  # all near-ties: every comparison wants a second order
    names = list(strengths)
    judge = BiasedJudge(strengths)
    reward = GenerativeRewardFunction(
        judge,
        reference="group",
        schedule="sparse",
        schedule_degree=2,
        second_order="adaptive",
        max_judge_calls_per_group=9,
    )
    reward(["q"] * 6, names)
    assert reward.last_cost.judge_calls == judge.passes == 9 and reward.last_cost.second_orders == 3
    judge = BiasedJudge(strengths)
    reward = GenerativeRewardFunction(
        judge, reference="group", schedule="circular", schedule_degree=2, second_order="adaptive", extra_votes=2
    )
    reward(["q"] * 6, names)
    assert judge.calls[-1]["votes"] == 2 and judge.calls[-1]["swap"] == "both"
    assert reward.last_cost.extra_votes == 6 and reward.last_cost.judge_calls == judge.passes == 6 + 6 + 6 * 4


def test_length_control_removes_the_length_effect():
    # the judge prefers longer answers; within each length the "good" one is better
    strengths = {}
    for n in (10, 40, 160):
        strengths["x" * n] = math.log(n)
        strengths["y" * n + "good"] = math.log(n) + 0.5
    names = list(strengths)
    plain = GenerativeRewardFunction(BiasedJudge(strengths), reference="group", aggregate="bradley_terry")(
        ["q"] * 6, names
    )
    controlled = GenerativeRewardFunction(
        BiasedJudge(strengths), reference="group", aggregate="bradley_terry", length_control=True
    )(["q"] * 6, names)
    lengths = [math.log(len(n) + 1) for n in names]
    assert np.corrcoef(plain, lengths)[0, 1] > 0.9
    assert abs(np.corrcoef(controlled, lengths)[0, 1]) < 0.3
    for k in (0, 2, 4):  # the better of two equally long answers stays ahead
        assert controlled[k + 1] > controlled[k]
    # lone completions and no length variation: unchanged
    assert pairing.length_controlled([0.3, 0.7], [5, 5], [[0, 1]]) == [0.3, 0.7]
    assert pairing.length_controlled([None, 0.7], [1, 9], [[0, 1]]) == [None, 0.7]


def test_settings_are_checked_with_clear_errors():
    for kwargs, match in (
        (dict(schedule="ring"), "schedule"),
        (dict(schedule_degree=1), "schedule_degree"),
        (dict(aggregate="median"), "aggregate"),
        (dict(second_order="sometimes"), "second_order"),
        (dict(second_order_margin=0.7), "second_order_margin"),
        (dict(max_judge_calls_per_group=0), "max_judge_calls_per_group"),
        (dict(extra_votes=-1), "extra_votes"),
        (dict(second_order="adaptive", swap="random"), "swap"),
    ):
        with pytest.raises(ValueError, match=match):
            GenerativeRewardFunction(BiasedJudge({}), reference="group", **kwargs)
    with pytest.raises(ValueError, match="pivot"):
        GenerativeRewardFunction(BiasedJudge({}), reference="pivot", schedule="sparse")
    r = GenerativeRewardFunction(BiasedJudge({}), reference="group", schedule="sparse")
    assert "schedule='sparse'" in repr(r)


def test_adaptive_generator_drives_an_async_judge():
    import asyncio

    strengths = _group(5, seed=9)
    names = list(strengths)
    comparisons = pairing.plan(["q"] * 5, names, settings=pairing.ComparisonConfig(second_order="adaptive"))
    judge = BiasedJudge(strengths, bias=0.4)

    async def judge_pairs(q, a, b, **kw):
        return judge.judge(q, a, b, **kw)

    settings = pairing.ComparisonConfig(second_order="adaptive")
    sync = adaptive.run_sync(BiasedJudge(strengths, bias=0.4), comparisons, settings)
    out = asyncio.run(adaptive.run_async(judge_pairs, comparisons, settings))
    assert [jd.prob for jd in out[0]] == pytest.approx([jd.prob for jd in sync[0]])
    assert out[1].judge_calls == sync[1].judge_calls < 20


def test_flipped_and_merged_judgments_keep_their_meaning():
    runs = [JudgeRun("AB", 0.8, "A", rationale="r")]
    jd = PairJudgment(0.8, "A", None, runs)
    f = adaptive.flipped(jd)
    assert f.prob == pytest.approx(0.2) and f.label == "B" and f.runs[0].order == "BA"
    assert f.runs[0].prob_response_1 == pytest.approx(0.2) and jd.prob == 0.8  # the original is untouched
    other = PairJudgment(0.6, "A", None, [JudgeRun("BA", 0.4, "B")])
    m = adaptive.merged([jd, other])
    assert m.prob == pytest.approx(0.7) and m.agreement is True and len(m.runs) == 2


# ---------------------------------------------------------------------------------------------------------------------
# real tiny model
# ---------------------------------------------------------------------------------------------------------------------
def test_real_tiny_judge_sparse_adaptive_bradley_terry(tiny_judge):
    reward = GenerativeRewardFunction(
        tiny_judge,
        reference="group",
        on_failure="prob",
        mode="direct",
        schedule="sparse",
        schedule_degree=2,
        aggregate="bradley_terry",
        second_order="adaptive",
        length_control=True,
    )
    prompts = ["What is 2 + 3?"] * 6
    completions = ["5", "6", "It is 5.", "Five.", "I think 4", "2 + 3 = 5"]
    out = reward(prompts, completions)
    assert len(out) == 6 and all(0.0 <= r <= 1.0 for r in out)
    cost = reward.last_cost
    assert 6 <= cost.judge_calls <= 12 < cost.all_pairs_calls == 30


def test_grpo_switches_to_a_sparse_adaptive_schedule_with_arguments(tmp_path, tokenizer, tiny_judge):
    from datasets import Dataset
    from tiny_models import tiny_llama
    from trl import GRPOConfig, GRPOTrainer

    reward = GenerativeRewardFunction(
        tiny_judge, reference="group", on_failure="prob", mode="direct", name="gram",
        schedule="sparse", schedule_degree=2, aggregate="bradley_terry", second_order="adaptive",
    )  # fmt: skip
    args = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=6,
        num_generations=6,
        max_completion_length=6,
        learning_rate=1e-4,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        seed=0,
    )
    trainer = GRPOTrainer(
        model=tiny_llama(tokenizer, seed=1),
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["What is 2 + 3?", "Say hello."] * 3}),
        processing_class=tokenizer,
    )
    trainer.train()
    logged = trainer.state.log_history[0]
    # one group of 6 per step: a cycle of 6 comparisons, one order each plus the second orders it needed
    assert 6 <= logged["gram/judge_calls"] <= 12 and logged["gram/judge_calls_saved"] >= 0.6
    assert math.isfinite(logged["rewards/gram/mean"])


def test_ppo_greedy_references_with_adaptive_orders(tokenizer, tmp_path):
    from ppo_utils import ppo_config, prompt_dataset
    from tiny_models import tiny_llama

    from trl_gram.judge import GramJudge
    from trl_gram.ppo import GramPPOTrainer

    judge = GramJudge(tiny_llama(tokenizer, seed=7), tokenizer, mode="direct", cache_size=0)
    calls = []
    plain = judge.judge

    def spy(questions, responses_1, responses_2, **kwargs):
        calls.append((list(responses_1), list(responses_2), kwargs))
        return plain(questions, responses_1, responses_2, **kwargs)

    judge.judge = spy
    reward = GenerativeRewardFunction(judge, second_order="adaptive")
    seen = []

    def probe(prompts, completions, references, **kwargs):
        seen.append((list(completions), list(references)))
        return [None] * len(completions)

    args = ppo_config(tmp_path / "out", max_steps=1, num_ppo_epochs=1, greedy_reference=True)
    trainer = GramPPOTrainer(
        tiny_llama(tokenizer), [reward, probe], args=args, train_dataset=prompt_dataset(8), processing_class=tokenizer
    )
    trainer.train()
    (shown_1, shown_2, kwargs), *rest = calls
    completions, references = seen[0]
    n = trainer.args.rollout_batch_size
    assert kwargs["swap"] == "none" and len(shown_1) == n
    # one order per sample first: the sample first for every other sample, its greedy reference first for the rest
    expected = [(c, r) if k % 2 == 0 else (r, c) for k, (c, r) in enumerate(zip(completions, references))]
    assert list(zip(shown_1, shown_2)) == expected
    logs = [h for h in trainer.state.log_history if "gram_reward/judge_calls" in h]
    second = len(rest[0][0]) if rest else 0  # second orders, where the first verdict was near 0.5
    assert logs and logs[0]["gram_reward/judge_calls"] == n + second
