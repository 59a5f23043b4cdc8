"""GramJudge on real tiny transformers models: direct-mode probabilities against a hand computation, swap averaging,
reason mode on a model trained to emit a fixed verdict (label and probability read at the slot, generation stopped
there), votes, truncation, batching and bad input."""

import math

import pytest
import torch
from tiny_models import tiny_llama

from trl_gram.batching import fit_lengths, left_pad, token_budget_batches
from trl_gram.judge import GramJudge, GramJudgeConfig, JudgeRun, combine_runs
from trl_gram.parsing import NO_ANSWER

QUESTIONS = ["What is 2 + 3?", "Write a poem about the sea.", "What is the capital of France?"]
FIRST = ["The answer is 5.", "The sea is big and blue and deep.", "Paris."]
SECOND = ["It is 6.", "Sea.", "I think it is Berlin, the capital of Germany."]

VERDICT = "<think>\nFeedback: wrong sum.\n</think>\n<answer>\nB\n</answer>"


def _hand_prob_first(model, tokenizer, ids):
    """P(A)/(P(A)+P(B)) at the last position of an unpadded sequence, summing each label's spellings."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    probs = torch.softmax(logits, -1)
    a = sum(probs[t] for t in {tokenizer.encode("A")[0], tokenizer.encode(" A")[0]})
    b = sum(probs[t] for t in {tokenizer.encode("B")[0], tokenizer.encode(" B")[0]})
    return float(a / (a + b))


def test_direct_probabilities_match_hand_computation(tokenizer):
    model = tiny_llama(tokenizer, seed=1, hidden=64)
    with torch.no_grad():  # sharpen the random logits so the probabilities are far from 0.5
        model.lm_head.weight.mul_(30)
    judge = GramJudge(model, tokenizer, mode="direct", token_budget=300)  # several batches, padding exercised
    out = judge.judge(QUESTIONS, FIRST, SECOND)
    for q, a, b, jd in zip(QUESTIONS, FIRST, SECOND, out):
        p_ab = _hand_prob_first(model, tokenizer, judge.encode_prompt(q, a, b, "direct")[0])
        p_ba = _hand_prob_first(model, tokenizer, judge.encode_prompt(q, b, a, "direct")[0])
        assert [r.order for r in jd.runs] == ["AB", "BA"]
        assert jd.runs[0].prob_first == pytest.approx(p_ab, abs=1e-4)
        assert jd.runs[1].prob_first == pytest.approx(p_ba, abs=1e-4)
        assert jd.prob == pytest.approx(0.5 * (p_ab + (1 - p_ba)), abs=1e-4)
        assert jd.agreement == ((p_ab >= 0.5) == (p_ba < 0.5))
    # The sharpened random model is position-biased (far from 0.5 per order), which swap averaging cancels.
    assert any(abs(jd.runs[0].prob_first - 0.5) > 0.05 for jd in out)


def test_swap_modes(tokenizer, tiny_model):
    judge = GramJudge(tiny_model, tokenizer, mode="direct")
    none = judge.judge(QUESTIONS, FIRST, SECOND, swap="none")
    assert all([r.order for r in jd.runs] == ["AB"] and jd.agreement is None for jd in none)
    rand1 = judge.judge(QUESTIONS * 4, FIRST * 4, SECOND * 4, swap="random", seed=3)
    rand2 = judge.judge(QUESTIONS * 4, FIRST * 4, SECOND * 4, swap="random", seed=3)
    orders = [jd.runs[0].order for jd in rand1]
    assert orders == [jd.runs[0].order for jd in rand2] and set(orders) == {"AB", "BA"}


def test_combine_runs_math():
    runs = [JudgeRun("AB", 0.8, "A"), JudgeRun("BA", 0.4, "A")]  # BA: response_2 shown first, judge says A = resp 2
    jd = combine_runs(runs, ("A", "B"))
    assert jd.prob == pytest.approx(0.5 * (0.8 + 0.6))
    assert jd.agreement is False and jd.label == "A"  # one vote each: tie broken by prob 0.7
    jd = combine_runs([JudgeRun("AB", 0.3, None, failure=NO_ANSWER), JudgeRun("BA", 0.9, "A")], ("A", "B"))
    assert jd.label == "B" and jd.agreement is None and jd.failure is None
    jd = combine_runs([JudgeRun("AB", 0.3, None, failure=NO_ANSWER)], ("A", "B"))
    assert jd.label is None and jd.failure == NO_ANSWER


@pytest.fixture(scope="module")
def verdict_judge(tokenizer):
    """A tiny model trained for a few steps to answer every judge prompt with VERDICT."""
    model = tiny_llama(tokenizer, seed=0, hidden=64)
    judge = GramJudge(model, tokenizer, max_new_tokens=48)
    target = tokenizer.encode(VERDICT, add_special_tokens=False)
    prompts = [judge.encode_prompt(q, a, b, "reason")[0] for q, a, b in zip(QUESTIONS, FIRST, SECOND)]
    prompts += [judge.encode_prompt(q, b, a, "reason")[0] for q, a, b in zip(QUESTIONS, FIRST, SECOND)]
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(120):
        for p in prompts:
            ids = torch.tensor([p + target])
            labels = ids.clone()
            labels[0, : len(p)] = -100
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return judge, target


def test_reason_mode_reads_label_and_probability_at_the_slot(verdict_judge, tokenizer):
    judge, target = verdict_judge
    out = judge.judge(QUESTIONS, FIRST, SECOND)  # swap="both": 6 generations in one batch
    slot = tokenizer.encode(VERDICT[: VERDICT.index("<answer>\nB") + len("<answer>\n")], add_special_tokens=False)
    for q, a, b, jd in zip(QUESTIONS, FIRST, SECOND, out):
        for run, (x, y) in zip(jd.runs, ((a, b), (b, a))):
            assert run.label == "B" and run.failure is None
            assert run.rationale == "Feedback: wrong sum."
            # Generation stopped right after the label token: the text ends at the slot, no "</answer>".
            assert run.text == VERDICT[: VERDICT.index("<answer>\nB") + len("<answer>\nB")]
            assert len(tokenizer.encode(run.text, add_special_tokens=False)) == len(slot) + 1
            # The probability equals the label-token softmax at the slot of the same sequence.
            prompt = judge.encode_prompt(q, x, y, "reason")[0]
            assert run.prob_first == pytest.approx(_hand_prob_first(judge.model, tokenizer, prompt + slot), abs=1e-4)
            assert run.prob_first < 0.5
        # "B" in both orders: the orders disagree about which response is better.
        assert jd.agreement is False
        assert jd.prob == pytest.approx(0.5 * (jd.runs[0].prob_first + 1 - jd.runs[1].prob_first))


def test_reason_votes_and_forced_answer(verdict_judge, tokenizer):
    judge, _ = verdict_judge
    out = judge.judge(QUESTIONS[:1], FIRST[:1], SECOND[:1], votes=3, seed=1)
    assert len(out[0].runs) == 6 and {r.order for r in out[0].runs} == {"AB", "BA"}
    assert all(0.0 <= r.prob_first <= 1.0 for r in out[0].runs)
    # A random model never reaches the slot: the label is read after forcing it, and the run is a parse failure.
    raw = GramJudge(tiny_llama(tokenizer, seed=5), tokenizer, max_new_tokens=6)
    jd = raw.judge(QUESTIONS[:1], FIRST[:1], SECOND[:1], swap="none")[0]
    assert jd.failure is not None and not math.isnan(jd.prob)
    unforced = GramJudge(raw.model, tokenizer, max_new_tokens=6, force_answer=False)
    assert math.isnan(unforced.judge(QUESTIONS[:1], FIRST[:1], SECOND[:1], swap="none")[0].prob)


def test_truncation_keeps_template_and_fits(tiny_model, tokenizer):
    judge = GramJudge(tiny_model, tokenizer, mode="direct", max_length=700)
    long = "word " * 2000
    ids, cut = judge.encode_prompt("What is 2 + 3?", long, "short answer", "direct")
    assert cut and len(ids) <= 700
    text = tokenizer.decode(ids)
    assert text.endswith("[The End of Assistant B's Answer]\n\n#Preferred: <|im_end|>\n<|im_start|>assistant\n")
    assert "short answer" in text and "What is 2 + 3?" in text
    # Both orders are cut the same way.
    ids_ba, _ = judge.encode_prompt("What is 2 + 3?", "short answer", long, "direct")
    assert abs(len(ids_ba) - len(ids)) <= 2
    with pytest.raises(ValueError, match="max_length"):
        GramJudge(tiny_model, tokenizer, mode="direct", max_length=50).encode_prompt("q", long, long, "direct")


def test_batching_helpers():
    batches = token_budget_batches([5, 100, 20, 50, 7], budget=120, extra=10)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]
    for b in batches:
        width = max([5, 100, 20, 50, 7][i] for i in b) + 10
        assert len(b) == 1 or width * len(b) <= 120
    assert fit_lengths([100, 10], 50) == [40, 10]
    ids, mask, pos = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and pos.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_bad_input(tiny_judge):
    with pytest.raises(ValueError, match="responses_1"):
        tiny_judge.judge(["q", "q2"], ["a"], ["b", "c"])
    with pytest.raises(ValueError, match=r"responses_2\[0\]"):
        tiny_judge.judge(["q"], ["a"], [None])
    with pytest.raises(ValueError, match="mode"):
        GramJudgeConfig(mode="fast")
    with pytest.raises(ValueError, match="votes"):
        GramJudgeConfig(votes=0)


def test_peft_adapter_and_4bit_load(tmp_path, tokenizer):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    model = tiny_llama(tokenizer, seed=2, hidden=128)  # bitsandbytes' CPU 4-bit kernels need >= 64-wide rows
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    judge = GramJudge.from_pretrained(
        str(tmp_path / "base"), adapter=str(tmp_path / "adapter"), mode="direct", device="cpu"
    )
    assert type(judge.model).__name__.startswith("Peft")
    assert 0 <= judge.judge(["q"], ["a"], ["b"])[0].prob <= 1
    pytest.importorskip("bitsandbytes")
    q = GramJudge.from_pretrained(str(tmp_path / "base"), load_in_4bit=True, mode="direct", device="cpu")
    assert any("4bit" in type(m).__name__ for m in q.model.modules())
    assert 0 <= q.judge(["q"], ["a"], ["b"])[0].prob <= 1
