"""GramWinRateCallback and its statistics: the win rate is 0.5 within its standard error against itself, moves the
right way when the policy turns into one the judge prefers (a programmatic judge, then a real tiny judge), is logged at
the right steps with GRPO, RLOO, OnlineDPO and GramPPOTrainer, uses the PEFT base as the starting policy, survives a
resume, works through the reward server, and gathers correctly with two processes."""

import gc
import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from datasets import Dataset
from tiny_models import tiny_llama
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from win_rate_two_ranks import EVAL, LengthJudge  # noqa: E402

from trl_gram.callbacks import GramWinRateCallback  # noqa: E402
from trl_gram.judge import GramJudge, JudgeRun, PairJudgment  # noqa: E402
from trl_gram.reward import GenerativeRewardFunction  # noqa: E402
from trl_gram.win_rate import HackingThresholds, PairResult, judge_pairs, summarize  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["What is 2 + 3?", "Name a colour.", "Say hello.", "Count to three."]


# ----------------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------------
def _random_texts(rng, n):
    return ["x" * rng.randint(1, 30) for _ in range(n)]


def _judged(current, reference, judge=None):
    n = len(current)
    return judge_pairs(
        judge or LengthJudge(), ["q"] * n, current, reference, [len(c) for c in current], [len(r) for r in reference]
    )


def test_against_itself_the_win_rate_is_half_within_its_stderr():
    rng = random.Random(0)
    current, reference = _random_texts(rng, 300), _random_texts(rng, 300)  # the same distribution
    summary = summarize(_judged(current, reference))
    assert summary["win_rate_stderr"] > 0
    assert abs(summary["win_rate"] - 0.5) <= 2 * summary["win_rate_stderr"]
    # Judged in both orders the verdict is antisymmetric: P(a beats b) + P(b beats a) = 1, so no side is favoured
    forward, backward = _judged(current, reference), _judged(reference, current)
    assert all(f.prob + b.prob == pytest.approx(1.0) for f, b in zip(forward, backward))


def test_a_policy_the_judge_prefers_wins_and_its_length_drift_is_flagged():
    rng = random.Random(1)
    reference = _random_texts(rng, 50)
    longer = [r + "y" * rng.randint(1, 10) for r in reference]
    up, down = summarize(_judged(longer, reference)), summarize(_judged(reference, longer))
    assert up["win_rate"] > 0.5 + 3 * up["win_rate_stderr"] and up["win_fraction"] == 1.0
    assert down["win_rate"] < 0.5 - 3 * down["win_rate_stderr"] and down["win_fraction"] == 0.0
    assert up["swap_agreement"] == 1.0 and up["parse_failure_rate"] == 0.0
    # The length judge wins exactly by length: correlation near 1, flagged
    assert up["length_win_correlation"] > 0.5 and up["flag_length_drift"] == 1.0
    same_length = summarize(_judged(["ab", "cd", "ef", "gh", "ij"], ["ba", "dc", "fe", "hg", "ji"]))
    assert same_length["flag_length_drift"] == 0.0 and same_length["length_matched_win_rate"] == 0.5


def test_identical_pairs_are_ties_and_not_judged():
    class Counting(LengthJudge):
        pass

    judge = Counting()
    results = _judged(["a", "bb", "same"], ["a", "b", "same"], judge)
    assert judge.seen == ["q"]  # only the one pair that differs
    assert [r.judged for r in results] == [False, True, False]
    summary = summarize(results)
    assert summary["identical_rate"] == pytest.approx(2 / 3) and summary["num_judged"] == 1
    assert summary["win_rate"] == pytest.approx((0.5 + LengthJudge.prob("bb", "b") + 0.5) / 3)


def test_swap_agreement_and_parse_failure_flags_against_the_first_evaluation():
    def results(agree, fail):
        return [PairResult(0.6, a, f, "", True, 10, 10) for a, f in zip(agree, fail)]

    first = summarize(results([True] * 10, [0.0] * 10))
    steady = summarize(results([True] * 9 + [False], [0.0] * 9 + [0.5]), baseline=first)
    assert steady["swap_agreement_drop"] == pytest.approx(0.1) and steady["parse_failure_increase"] == pytest.approx(
        0.05
    )
    assert steady["flag_swap_agreement"] == 1.0 and steady["flag_parse_failures"] == 0.0
    worse = summarize(results([False] * 5 + [True] * 5, [1.0] * 3 + [0.0] * 7), baseline=first)
    assert worse["swap_agreement_drop"] == pytest.approx(0.5) and worse["flag_swap_agreement"] == 1.0
    assert worse["parse_failure_increase"] == pytest.approx(0.3) and worse["flag_parse_failures"] == 1.0
    lenient = HackingThresholds(swap_agreement_drop=0.6, parse_failure_increase=0.5)
    assert (
        summarize(results([False] * 5 + [True] * 5, [1.0] * 3 + [0.0] * 7), first, lenient)["flag_swap_agreement"] == 0
    )


# ----------------------------------------------------------------------------------------------------------------------
# With trainers (tiny models)
# ----------------------------------------------------------------------------------------------------------------------
def _common(tmp_path, **overrides):
    args = dict(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, learning_rate=1e-2, logging_steps=1,
        report_to="none", use_cpu=True, save_strategy="no", seed=0,
    )  # fmt: skip
    return {**args, **overrides}


def _length_reward(completions, **kwargs):
    return [float(len(str(c))) for c in completions]


def _grpo(tmp_path, tokenizer, model=None, **overrides):
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(**_common(tmp_path, **overrides), num_generations=2, max_completion_length=6)
    return GRPOTrainer(
        model=model if model is not None else tiny_llama(tokenizer, seed=1),
        reward_funcs=[_length_reward],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
        processing_class=tokenizer,
    )


def _logged(trainer, key="eval_win_rate"):
    return [(h["step"], h[key]) for h in trainer.state.log_history if key in h]


def test_grpo_logs_at_start_every_eval_steps_and_at_end(tmp_path, tokenizer):
    trainer = _grpo(tmp_path, tokenizer)
    every_two = GramWinRateCallback(trainer, judge=LengthJudge(), dataset=EVAL, eval_steps=2)

    class Second(GramWinRateCallback):  # (a second instance of one class draws a warning from transformers)
        pass

    ends_only = Second(trainer, judge=LengthJudge(), dataset=EVAL, metric_prefix="ends_")
    trainer.add_callback(every_two)
    trainer.add_callback(ends_only)
    trainer.train()
    assert [s for s, _ in _logged(trainer)] == [0, 2, 4]
    assert [s for s, _ in _logged(trainer, "ends_win_rate")] == [0, 4]  # eval_strategy="no": start and end only
    first = every_two.history[0]  # at step 0 the policy is the starting policy
    assert first["win_rate"] == 0.5 and first["identical_rate"] == 1.0 and first["win_rate_stderr"] == 0.0
    assert every_two.reference_completions == [row["current"] for row in every_two.tables[0]]
    for step in (0, 2, 4):
        rows = [json.loads(line) for line in (tmp_path / "win_rate" / f"completions_{step:05d}.jsonl").open()]
        assert [r["prompt"] for r in rows] == EVAL["prompt"]
        assert set(rows[0]) == {"step", "prompt", "current", "reference", "p_current_better", "rationale"}
    # Training metrics still go out on their own schedule (the callback logs through `Trainer.log`, not GRPO's)
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == [1, 2, 3, 4]


class WordJudge:
    """Prefers the response with more occurrences of `word` (0.9 / 0.1, 0.5 on equal counts), in both orders."""

    def __init__(self, word):
        self.word = word

    def judge(self, questions, responses_1, responses_2, **kwargs):
        out = []
        for a, b in zip(responses_1, responses_2):
            ca, cb = a.count(self.word), b.count(self.word)
            p = 0.9 if ca > cb else 0.1 if ca < cb else 0.5
            out.append(
                PairJudgment(p, "A" if p >= 0.5 else "B", True, [JudgeRun("AB", p, "A"), JudgeRun("BA", 1 - p, "B")])
            )
        return out


class EmitToken(TrainerCallback):
    """From step `step` on the policy greedily emits `token_id` only (a logit bias on its LM head)."""

    def __init__(self, model, token_id, step):
        self.model, self.token_id, self.step, self.handle = model, token_id, step, None

    def apply(self):
        def bias(module, inputs, output):
            output = output.clone()
            output[..., self.token_id] += 100.0
            return output

        self.handle = self.model.get_output_embeddings().register_forward_hook(bias)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step and self.handle is None:
            self.apply()


def test_the_win_rate_rises_when_the_policy_turns_into_one_the_judge_prefers(tmp_path, tokenizer):
    token = tokenizer.encode("Paris", add_special_tokens=False)[0]
    word = tokenizer.decode([token])
    policy = tiny_llama(tokenizer, seed=1)
    trainer = _grpo(tmp_path, tokenizer, model=policy, learning_rate=0.0)
    callback = GramWinRateCallback(trainer, judge=WordJudge(word), dataset=EVAL, eval_steps=2)
    trainer.add_callback(EmitToken(policy, token, step=2))  # before the win-rate callback: it sees the new policy
    trainer.add_callback(callback)
    trainer.train()
    assert all(word not in r for r in callback.reference_completions)
    assert _logged(trainer) == [(0, 0.5), (2, pytest.approx(0.9)), (4, pytest.approx(0.9))]
    assert all(word in row["current"] and row["p_current_better"] == 0.9 for row in callback.tables[4])


@pytest.fixture
def real_judge(tokenizer):
    return GramJudge(tiny_llama(tokenizer, seed=7), tokenizer, mode="direct")


@pytest.mark.slow
def test_real_tiny_judge_ppo_win_rate_follows_the_judge(tmp_path, tokenizer, real_judge):
    """GramPPOTrainer with a real tiny judge: the policy is switched to the candidate the same judge rates best
    against the starting policy's completions, and the logged win rate is that rating (above 0.5)."""
    from trl_gram.ppo import GramPPOConfig, GramPPOTrainer

    policy = tiny_llama(tokenizer, seed=1)
    args = GramPPOConfig(
        **_common(tmp_path, max_steps=2, learning_rate=0.0), max_completion_length=6, num_ppo_epochs=1,
        log_completions=False,
    )  # fmt: skip
    trainer = GramPPOTrainer(
        model=policy, reward_funcs=_length_reward, args=args, processing_class=tokenizer,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
    )  # fmt: skip
    callback = GramWinRateCallback(trainer, judge=real_judge, dataset=Dataset.from_dict({"prompt": PROMPTS}))
    callback._prepare_reference(trainer.state)
    references = callback.reference_completions
    everyone = list(range(len(PROMPTS)))
    ratings = {}
    for token in range(10, 40):  # candidate policies: "always emit this token"
        switch = EmitToken(policy, token, step=1)
        switch.apply()
        with callback._policy() as p:
            texts, _ = callback._generate(p, everyone)
        switch.handle.remove()
        if any(t == r for t, r in zip(texts, references)) or not all(texts):
            continue
        verdicts = real_judge.judge(PROMPTS, texts, references, swap="both")
        ratings[token] = sum(v.prob for v in verdicts) / len(verdicts)
    best = max(ratings, key=ratings.get)
    assert ratings[best] > 0.5
    trainer.add_callback(EmitToken(policy, best, step=1))
    trainer.add_callback(callback)
    callback.eval_steps = 1
    trainer.train()
    assert _logged(trainer) == [
        (0, 0.5),
        (1, pytest.approx(ratings[best], abs=1e-4)),
        (2, pytest.approx(ratings[best], abs=1e-4)),
    ]
    assert callback.history[-1]["swap_agreement"] is not None and callback.history[-1]["parse_failure_rate"] == 0.0


def _saved_policy(tmp_path, tokenizer):
    path = tmp_path / "policy"
    tiny_llama(tokenizer, seed=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rloo", "online_dpo"])
def test_rloo_and_online_dpo_log_the_win_rate(tmp_path, tokenizer, kind):
    if kind == "rloo":
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer

        extra = dict(num_generations=2, max_completion_length=6)
    else:
        from trl.experimental.online_dpo import OnlineDPOConfig as Config
        from trl.experimental.online_dpo import OnlineDPOTrainer as Trainer

        extra = dict(max_new_tokens=6)
    trainer = Trainer(
        model=_saved_policy(tmp_path, tokenizer), reward_funcs=[_length_reward],
        args=Config(**_common(tmp_path / "out", max_steps=2), **extra),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tokenizer,
    )  # fmt: skip
    callback = GramWinRateCallback(trainer, judge=LengthJudge(), dataset=EVAL, reference_column="reference")
    trainer.add_callback(callback)
    trainer.train()
    assert [s for s, _ in _logged(trainer)] == [0, 2]
    assert callback.max_new_tokens == 6
    # Against a reference column every pair differs, so the judge sees every prompt from step 0 on
    first = callback.history[0]
    assert first["num_judged"] == len(EVAL) and first["swap_agreement"] == 1.0
    expected = [LengthJudge.prob(row["current"], row["reference"]) for row in callback.tables[0]]
    assert first["win_rate"] == pytest.approx(sum(expected) / len(expected))


def test_peft_base_is_the_starting_policy_without_a_second_copy(tmp_path, tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    # An adapter that already changes the outputs (not the zero-initialized LoRA): base != policy at step 0
    config = LoraConfig(r=8, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"], init_lora_weights=False)
    gc.collect()
    earlier = {id(o) for o in gc.get_objects() if isinstance(o, LlamaForCausalLM)}  # other tests' models
    policy = get_peft_model(tiny_llama(tokenizer, seed=1), config)
    trainer = _grpo(tmp_path, tokenizer, model=policy, max_steps=1)
    callback = GramWinRateCallback(trainer, judge=LengthJudge(), dataset=EVAL)
    trainer.add_callback(callback)
    trainer.train()
    with callback._policy(base=True) as base:  # LoRA training leaves the base untouched
        base_texts, _ = callback._generate(base, list(range(len(EVAL))))
    assert callback.reference_completions == base_texts
    assert [row["current"] for row in callback.tables[0]] != base_texts  # the adapter policy, judged against the base
    assert callback.history[0]["num_judged"] > 0
    gc.collect()
    new = [o for o in gc.get_objects() if isinstance(o, LlamaForCausalLM) and id(o) not in earlier]
    assert len(new) == 1  # the policy's base, nothing else


def test_resume_reuses_the_starting_policy_completions(tmp_path, tokenizer):
    policy = tiny_llama(tokenizer, seed=1)
    trainer = _grpo(tmp_path, tokenizer, model=policy, max_steps=1)
    first = GramWinRateCallback(trainer, judge=LengthJudge(), dataset=EVAL)
    trainer.add_callback(first)
    trainer.train()
    saved = json.loads((tmp_path / "win_rate" / "reference.json").read_text())
    assert saved["completions"] == first.reference_completions

    EmitToken(policy, tokenizer.encode("Paris", add_special_tokens=False)[0], step=0).apply()  # the policy moved
    resumed = GramWinRateCallback(trainer, judge=LengthJudge(), dataset=EVAL)
    resumed._prepare_reference(SimpleNamespace(global_step=1))
    assert resumed.reference_completions == first.reference_completions
    other = GramWinRateCallback(trainer, judge=LengthJudge(), dataset=EVAL.select(range(3)))
    other._prepare_reference(SimpleNamespace(global_step=1))  # other prompts: the file is not reused
    assert other.reference_completions != first.reference_completions[:3]


def test_bad_arguments_are_named(tmp_path, tokenizer):
    trainer = _grpo(tmp_path, tokenizer, max_steps=1)
    with pytest.raises(ValueError, match="'answer' column"):
        GramWinRateCallback(trainer, judge=LengthJudge(), dataset=EVAL, reference_column="answer")
    with pytest.raises(ValueError, match="`eval_steps` must be positive"):
        GramWinRateCallback(trainer, judge=LengthJudge(), eval_steps=0)
    with pytest.raises(ValueError, match="`judge` must be"):
        GramWinRateCallback(trainer, judge=42)
    stub = LengthJudge()
    assert GramWinRateCallback(trainer, judge=GenerativeRewardFunction(stub)).judge is stub  # a reward's judge
    sample = GramWinRateCallback(trainer, judge=LengthJudge(), num_prompts=3)  # no eval set: a seeded train sample
    assert len(sample.prompts) == 3 and set(sample.prompts) <= set(PROMPTS)
    assert sample.prompts == GramWinRateCallback(trainer, judge=LengthJudge(), num_prompts=3).prompts


@pytest.mark.slow
def test_remote_judge_through_the_reward_server(tmp_path, tokenizer, real_judge):
    from trl_gram.serving.server import BackgroundServer, create_app

    trainer = _grpo(tmp_path, tokenizer, max_steps=1)
    with BackgroundServer(create_app(judge=real_judge)) as url:
        callback = GramWinRateCallback(trainer, judge=url, dataset=EVAL, reference_column="reference")
        trainer.add_callback(callback)
        trainer.train()
    rows = callback.tables[0]
    local = judge_pairs(
        real_judge, EVAL["prompt"], [r["current"] for r in rows], EVAL["reference"], [1] * len(EVAL), [1] * len(EVAL)
    )
    assert [r["p_current_better"] for r in rows] == pytest.approx([r.prob for r in local], abs=1e-4)
    assert callback.history[0]["swap_agreement"] == pytest.approx(summarize(local)["swap_agreement"])
    # A remote reward function points the callback at the same server's /judge endpoint
    from trl_gram.serving.remote_reward import RemoteGenerativeRewardFunction

    remote = RemoteGenerativeRewardFunction(url + "/reward", api_key="token")
    judge = GramWinRateCallback(trainer, judge=remote, dataset=EVAL).judge
    assert (judge.url, judge.api_key) == (url + "/judge", "token")


# ----------------------------------------------------------------------------------------------------------------------
# Two processes
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_split_the_prompts_and_gather_the_verdicts(tmp_path):
    leaked = ("ACCELERATE_", "MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(leaked)}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "recipes/accelerate/cpu_ddp.yaml"),
        "--main_process_port", str(port), str(REPO / "tests/scripts/win_rate_two_ranks.py"), str(tmp_path),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world"] == 2 for r in ranks)
    # Each rank judged its own contiguous share of the 5 prompts (3 + 2), at both evaluations (steps 0 and 1)
    assert ranks[0]["seen"] == EVAL["prompt"][:3] * 2 and ranks[1]["seen"] == EVAL["prompt"][3:] * 2
    # ... and both hold the same gathered result over all 5, in order
    assert ranks[0]["history"] == ranks[1]["history"] and ranks[0]["tables"] == ranks[1]["tables"]
    for step, entry in zip(("0", "1"), ranks[0]["history"]):
        rows = ranks[0]["tables"][step]
        assert [r["prompt"] for r in rows] == EVAL["prompt"] and [r["reference"] for r in rows] == EVAL["reference"]
        expected = [LengthJudge.prob(r["current"], r["reference"]) for r in rows]
        assert entry["num_prompts"] == 5 and entry["win_rate"] == pytest.approx(sum(expected) / 5)
