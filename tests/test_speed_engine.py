"""The fast judge engine (prefix tree, shared-prefix attention, lean decoding) against the plain engine on real tiny
transformers models: same probabilities, labels and texts in direct and reason mode, with less computed work; plus
the prefix tree's invariants, the LRU cache of runs, the fallback on unsupported models and the OOM split."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from speed_utils import QUESTIONS, RESPONSES, grpo_pairs
from speed_utils import verdict_model as trained_verdict_model
from tiny_models import tiny_llama

from trl_gram.judge import GramJudge
from trl_gram.judge.backends.prefix_attention import STATE_KWARG, KVState, prefix_attention
from trl_gram.judge.backends.prefix_tree import PrefixTree


@pytest.fixture(scope="module")
def sharp_model(tokenizer):
    model = tiny_llama(tokenizer, seed=1, hidden=64)
    with torch.no_grad():  # sharpen the random logits so label probabilities are far from 0.5
        model.lm_head.weight.mul_(30)
    return model


def _assert_same(fast, plain, tol=2e-5):
    assert len(fast) == len(plain)
    for f, p in zip(fast, plain):
        assert [r.order for r in f.runs] == [r.order for r in p.runs]
        for rf, rp in zip(f.runs, p.runs):
            assert rf.text == rp.text
            assert rf.label == rp.label and rf.failure == rp.failure
            assert rf.prob_first == pytest.approx(rp.prob_first, abs=tol)
        assert f.prob == pytest.approx(p.prob, abs=tol)
        assert f.label == p.label and f.agreement == p.agreement


# --------------------------------------------------------------------------------------------------------------------
# Prefix tree
# --------------------------------------------------------------------------------------------------------------------
def _chain_tokens(tree, leaf):
    tokens = tree.unique[leaf.seq][: tree.shared_length]
    at = tree.shared_length
    for node in leaf.ancestors() + [leaf]:
        assert node.start == at
        tokens = tokens + tree.tokens(node)
        at = node.end
    return tokens


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), min_size=1, max_size=12),
    st.integers(0, 4),
    st.integers(0, 6),
)
def test_prefix_tree_rebuilds_every_sequence(seqs, min_shared, min_saving):
    head = [7, 7, 8, 9]
    seqs = [head + s for s in seqs]
    tree = PrefixTree(seqs, min_shared=min_shared, min_saving=min_saving)
    for item, seq in enumerate(seqs):
        leaf = tree.leaves[tree.item_to_unique[item]]
        assert leaf.is_leaf and item in leaf.items and leaf.length >= 1
        assert _chain_tokens(tree, leaf) == seq
    for depth, level in enumerate(tree.levels, start=1):
        for node in level:
            assert node.depth == depth and (node.parent is tree.root or node.parent.depth == depth - 1)
    assert tree.computed_tokens() <= sum(len(s) for s in tree.unique)


def test_prefix_tree_shares_template_question_and_first_response():
    head, question = list(range(100, 160)), list(range(200, 240))
    responses = [[300 + r] * 50 for r in range(4)]
    seqs = [head + question + responses[i] + [1, 2] + responses[j] + [3] for i in range(4) for j in range(4) if i != j]
    tree = PrefixTree(seqs)
    assert tree.shared_length == len(head) + len(question)
    assert [len(level) for level in tree.levels] == [4, 12]  # response A once each, then response B per pair
    assert tree.computed_tokens() == 100 + 4 * 52 + 12 * 51
    assert tree.computed_tokens() < sum(map(len, seqs)) / 2.5
    with pytest.raises(ValueError, match="empty"):
        PrefixTree([])


# --------------------------------------------------------------------------------------------------------------------
# Attention and state
# --------------------------------------------------------------------------------------------------------------------
def test_kv_state_attention_equals_masked_softmax():
    torch.manual_seed(0)
    rows, q_heads, kv_heads, dim, shared_len = 3, 4, 2, 8, 5
    shared = {0: (torch.randn(kv_heads, shared_len, dim), torch.randn(kv_heads, shared_len, dim))}
    for q_len in (1, 4):  # decoding path and SDPA path
        state = KVState(rows, 12, "cpu", shared=shared)
        past_k, past_v = torch.randn(rows, kv_heads, 6, dim), torch.randn(rows, kv_heads, 6, dim)
        for r in range(rows):
            state.write(0, r, 0, past_k[r], past_v[r])
        state.valid[:, :6] = torch.tensor(
            [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 1, 0, 1, 1, 0]], dtype=torch.bool
        )
        state.length = 6
        state.valid[:, 6 : 6 + q_len] = True
        q = torch.randn(rows, q_heads, q_len, dim)
        k, v = torch.randn(rows, kv_heads, q_len, dim), torch.randn(rows, kv_heads, q_len, dim)
        state.begin(q_len)
        out = state.attend(0, q, k, v, scaling=dim**-0.5)
        for r in range(rows):
            keys = torch.cat([shared[0][0], past_k[r][:, state.valid[r, :6]], k[r]], 1)
            values = torch.cat([shared[0][1], past_v[r][:, state.valid[r, :6]], v[r]], 1)
            n_past = shared_len + int(state.valid[r, :6].sum())
            mask = torch.ones(q_len, keys.shape[1], dtype=torch.bool)
            mask[:, n_past:] = torch.tril(torch.ones(q_len, q_len, dtype=torch.bool))
            ref = torch.nn.functional.scaled_dot_product_attention(
                q[r : r + 1], keys.repeat_interleave(2, 0)[None], values.repeat_interleave(2, 0)[None], attn_mask=mask
            )
            torch.testing.assert_close(out[r].transpose(0, 1), ref[0], atol=1e-5, rtol=1e-5)
    state.select(torch.tensor([2, 2, 0]))
    assert state.rows == 3 and state.valid[0].tolist() == state.valid[1].tolist()
    state.grow(20)
    assert state.capacity == 20 and state.keys[0].shape[2] == 20


def test_prefix_attention_is_restored_and_model_forward_matches(sharp_model):
    before = sharp_model.config._attn_implementation
    state = KVState(1, 8, "cpu")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    state.valid[:, :5] = True
    state.begin(5)
    with torch.no_grad(), prefix_attention(sharp_model):
        fast = sharp_model(input_ids=ids, position_ids=torch.arange(5)[None], use_cache=False, **{STATE_KWARG: state})
    assert sharp_model.config._attn_implementation == before
    with torch.no_grad():
        plain = sharp_model(input_ids=ids)
    torch.testing.assert_close(fast.logits, plain.logits, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------------------------------------------------
# Fast path == plain path
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("token_budget", [32768, 700])  # one wave and large passes; many small passes and waves
def test_direct_fast_equals_plain(sharp_model, tokenizer, token_budget):
    q, a, b = grpo_pairs()
    q, a, b = q + q[:2], a + a[:2], b + b[:2]  # duplicated pairs share a leaf
    kw = dict(mode="direct", cache_size=0, token_budget=token_budget)
    fast = GramJudge(sharp_model, tokenizer, backend="prefix", **kw)
    plain = GramJudge(sharp_model, tokenizer, backend="transformers", **kw)
    out_fast, out_plain = fast.judge(q, a, b), plain.judge(q, a, b)
    _assert_same(out_fast, out_plain)
    assert any(abs(jd.runs[0].prob_first - 0.5) > 0.05 for jd in out_plain)
    stats = fast.backend.engine.stats
    assert stats["computed_tokens"] < stats["prompt_tokens"] / 2  # the shared work was done once


@pytest.fixture(scope="module")
def verdict_model(tokenizer):
    return trained_verdict_model(tokenizer)


@pytest.mark.parametrize("which", ["verdict", "random"])
def test_reason_fast_equals_plain(which, verdict_model, tokenizer):
    """Greedy rationales, labels and slot probabilities match: rows reaching the slot (trained model) and rows read
    after forcing the answer (random model: never writes the tag)."""
    model = verdict_model if which == "verdict" else tiny_llama(tokenizer, seed=3, hidden=64)
    q, a, b = grpo_pairs()
    kw = dict(mode="reason", cache_size=0, max_new_tokens=40, token_budget=4000)
    fast = GramJudge(model, tokenizer, backend="prefix", **kw)
    plain = GramJudge(model, tokenizer, backend="transformers", **kw)
    out_fast, out_plain = fast.judge(q, a, b), plain.judge(q, a, b)
    _assert_same(out_fast, out_plain, tol=1e-4)
    failures = {r.failure for jd in out_fast for r in jd.runs}
    if which == "verdict":
        assert failures == {None} and all(r.label == "B" for jd in out_fast for r in jd.runs)
    else:
        assert None not in failures and all(not math.isnan(jd.prob) for jd in out_fast)
    assert fast.backend.engine.stats["computed_tokens"] < fast.backend.engine.stats["prompt_tokens"] / 2


def test_reason_fast_votes_and_unforced(verdict_model, tokenizer):
    judge = GramJudge(verdict_model, tokenizer, backend="prefix", max_new_tokens=40, cache_size=0, temperature=0.8)
    out = judge.judge(QUESTIONS[:1], RESPONSES[0][:1], RESPONSES[0][1:2], votes=3, seed=1)
    assert len(out[0].runs) == 6 and {r.order for r in out[0].runs} == {"AB", "BA"}
    assert all(0.0 <= r.prob_first <= 1.0 for r in out[0].runs)
    again = judge.judge(QUESTIONS[:1], RESPONSES[0][:1], RESPONSES[0][1:2], votes=3, seed=1)
    assert [r.text for r in again[0].runs] == [r.text for r in out[0].runs]  # seeded
    raw = GramJudge(tiny_llama(tokenizer, seed=5), tokenizer, backend="prefix", max_new_tokens=6, force_answer=False)
    assert math.isnan(raw.judge(QUESTIONS[:1], ["a"], ["b"], swap="none")[0].prob)


# --------------------------------------------------------------------------------------------------------------------
# Cache, fallback, OOM
# --------------------------------------------------------------------------------------------------------------------
def test_run_cache_hits_and_invalidation(sharp_model, tokenizer):
    judge = GramJudge(sharp_model, tokenizer, mode="direct", cache_size=16)
    q, a, b = grpo_pairs()
    first = judge.judge(q[:3], a[:3], b[:3])
    assert judge._cache.hits == 0
    # The same triple again, and the swapped pair (its BA prompt is the AB prompt of the first one).
    again = judge.judge([q[0], q[0]], [a[0], b[0]], [b[0], a[0]])
    assert judge._cache.hits == 4
    assert again[0].prob == pytest.approx(first[0].prob) and again[1].prob == pytest.approx(1 - first[0].prob)
    assert [r.order for r in again[1].runs] == ["AB", "BA"]
    with torch.no_grad():
        sharp_model.lm_head.weight.add_(0.0)  # any in-place update of the weights clears the cache
    judge.judge(q[:1], a[:1], b[:1])
    assert judge._cache.hits == 4
    uncached = GramJudge(sharp_model, tokenizer, mode="reason", votes=2, max_new_tokens=4, cache_size=16)
    uncached.judge(q[:1], a[:1], b[:1])
    assert len(uncached._cache._data) == 0  # sampled runs are never cached
    with pytest.raises(ValueError, match="cache_size"):
        GramJudge(sharp_model, tokenizer, cache_size=-1)


def test_unsupported_model_falls_back(tokenizer):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=8,  # the prefix engine does not implement sliding windows
        pad_token_id=tokenizer.pad_token_id,
    )
    model = MistralForCausalLM(config).eval()
    auto = GramJudge(model, tokenizer, mode="direct", cache_size=0)
    plain = GramJudge(model, tokenizer, mode="direct", backend="transformers", cache_size=0)
    _assert_same(auto.judge(QUESTIONS, ["a", "b"], ["c", "d"]), plain.judge(QUESTIONS, ["a", "b"], ["c", "d"]))
    assert auto.backend.name == "prefix" and auto.backend.engine._supported is False
    with pytest.raises(ValueError, match="backend=.prefix."):
        GramJudge(model, tokenizer, mode="direct", backend="prefix").judge(["q"], ["a"], ["b"])
    with pytest.raises(ValueError, match="backend"):
        GramJudge(model, tokenizer, backend="turbo")


def test_generation_config_processors_use_plain_decoding(verdict_model, tokenizer):
    judge = GramJudge(verdict_model, tokenizer, backend="auto", max_new_tokens=8, cache_size=0)
    verdict_model.generation_config.repetition_penalty = 1.3
    try:
        assert not judge.backend.supports(generate=True) and judge.backend.supports()
    finally:
        verdict_model.generation_config.repetition_penalty = 1.0
    assert judge.backend.supports(generate=True)


def test_out_of_memory_splits_batches(sharp_model, tokenizer, monkeypatch):
    judge = GramJudge(sharp_model, tokenizer, mode="direct", backend="prefix", cache_size=0)
    plain = GramJudge(sharp_model, tokenizer, mode="direct", backend="transformers", cache_size=0)
    q, a, b = grpo_pairs()
    engine = judge.backend.engine
    real = engine._forward

    def flaky(rows, *args, **kwargs):
        if len(rows) > 2:
            raise torch.OutOfMemoryError("simulated")
        return real(rows, *args, **kwargs)

    monkeypatch.setattr(engine, "_forward", flaky)
    _assert_same(judge.judge(q, a, b), plain.judge(q, a, b))
    assert engine.stats["oom_splits"] > 0
