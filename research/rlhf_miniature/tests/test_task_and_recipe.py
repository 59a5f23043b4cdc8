"""The task generator, the oracle, the judge's labeled pairs and the recipe (no model is run)."""

from pathlib import Path

import pytest

from research.rlhf_miniature.arms import common_args, steps_per_rollout
from research.rlhf_miniature.config import ARMS, MiniatureConfig
from research.rlhf_miniature.task import (
    RandomReward,
    answer_kind,
    copies_question_order,
    judge_pairs,
    make_splits,
    number_pairs,
    oracle_accuracy,
    oracle_correct,
    oracle_reward,
    prompt_dataset,
    question,
    question_numbers,
)

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "cpu.yaml"
GPU_RECIPE = RECIPE.with_name("gpu.yaml")


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("48 is larger than 37.", True),
        (" 48 is larger than 37", True),
        ("37 is larger than 48.", False),  # the smaller one first
        ("48 is larger than 36.", False),  # a number not in the question
        ("99 is larger than 12.", False),  # true, but not about this question
        ("The larger number is 48.", False),  # not the asked form
        ("To solve this problem, we need to find the largest number that is exactly ", False),
        ("48 is larger than 37. 37 is larger than 48.", True),  # the first statement counts
        ("37 is larger than 48. 48 is larger than 37.", False),
        ("", False),
    ],
)
def test_oracle_hand_made(completion, expected):
    assert oracle_correct(question(37, 48), completion) is expected
    assert oracle_correct(question(48, 37), completion) is expected  # the order asked in does not matter


def test_answer_kind_says_where_the_error_is():
    q = question(37, 48)
    assert answer_kind(q, "48 is larger than 37.") == "right"
    assert answer_kind(q, "37 is larger than 48.") == "wrong"
    assert answer_kind(q, "48 is larger than 36.") == "wrong"
    assert answer_kind(q, "To solve this problem, we need") == "off_format"


def test_copies_question_order_and_random_reward():
    assert copies_question_order(question(37, 48), "37 is larger than 48.")
    assert not copies_question_order(question(37, 48), "48 is larger than 37.")
    assert not copies_question_order(question(37, 48), "To solve this problem")
    first, second = RandomReward(3), RandomReward(3)
    draws = first(["p"] * 5, ["c"] * 5)
    assert draws == second(["p"] * 5, ["c"] * 5) and len(set(draws)) == 5 and all(0 <= d < 1 for d in draws)


def test_oracle_reads_chat_prompts_and_completions():
    prompt = [{"role": "user", "content": question(70, 9)}]
    assert oracle_correct(prompt, [{"role": "assistant", "content": "70 is larger than 9."}])
    assert oracle_reward([prompt, prompt], ["70 is larger than 9.", "9 is larger than 70."]) == [1.0, 0.0]
    assert oracle_accuracy([prompt] * 4, ["70 is larger than 9."] + ["no"] * 3) == 0.25


def test_oracle_rejects_a_prompt_that_is_not_a_question():
    with pytest.raises(ValueError, match="Not a comparison question"):
        oracle_correct("What is 2 + 3?", "5")
    assert question_numbers(question(12, 99)) == (12, 99)


def test_number_pairs_are_distinct_deterministic_and_checked():
    pairs = number_pairs(200, seed=3)
    assert pairs == number_pairs(200, seed=3)
    assert len({frozenset(p) for p in pairs}) == 200
    assert all(10 <= a <= 99 and 10 <= b <= 99 and a != b for a, b in pairs)
    with pytest.raises(ValueError, match="raise `digits`"):
        number_pairs(50, seed=0, digits=1)
    with pytest.raises(ValueError, match="`digits`"):
        number_pairs(1, seed=0, digits=7)


def test_splits_are_disjoint_and_shared():
    sizes = {"judge_train": 50, "judge_test": 30, "rl": 80, "eval": 20}
    splits = make_splits(sizes, seed=17)
    assert splits == make_splits(sizes, seed=17)
    seen = [frozenset(p) for name in sizes for p in splits[name]]
    assert len(seen) == len(set(seen)) == sum(sizes.values())
    assert {k: len(v) for k, v in splits.items()} == sizes
    ds = prompt_dataset(splits["rl"])
    assert ds[0]["prompt"] == [{"role": "user", "content": question(*splits["rl"][0])}]


def test_judge_pairs_use_the_policys_wrong_samples_and_the_swapped_answer():
    pairs = [(37, 48), (70, 9), (15, 51), (22, 33)]
    samples = ["To solve this problem, we need", "I think 9.", "15 is larger than 51.", "33 is larger than 22."]
    ds = judge_pairs(pairs, samples)
    assert ds["chosen"] == [
        "48 is larger than 37.",
        "70 is larger than 9.",
        "51 is larger than 15.",
        "33 is larger than 22.",
    ]
    # rows 1 and 3 are swapped by construction, row 0 and 2 keep the policy's wrong answer
    assert ds["rejected"] == [
        "To solve this problem, we need",
        "9 is larger than 70.",
        "15 is larger than 51.",
        "22 is larger than 33.",
    ]
    assert ds["kind"] == ["policy_wrong", "swapped", "policy_wrong", "swapped"]
    # a right sample never becomes a rejected answer
    right = judge_pairs(pairs, ["48 is larger than 37."] * 4, swapped_every=4)
    assert right["kind"][0] == "swapped" and right["rejected"][0] == "37 is larger than 48."
    every = judge_pairs(pairs, samples, swapped_every=1)
    assert every["kind"] == ["swapped"] * 4
    assert judge_pairs(pairs)["kind"] == ["swapped"] * 4
    with pytest.raises(ValueError, match="one per pair"):
        judge_pairs(pairs, samples[:2])


def test_recipe_parses_and_runs_every_arm():
    cfg = MiniatureConfig.from_yaml(RECIPE)
    assert set(cfg.arms) == set(ARMS)
    assert cfg.seeds == [0, 1]
    assert cfg.max_completion_length <= 24
    assert MiniatureConfig.from_yaml(RECIPE, max_steps=3).max_steps == 3
    gpu = MiniatureConfig.from_yaml(GPU_RECIPE)
    assert gpu.arms == cfg.arms and gpu.seeds == cfg.seeds and gpu.split_seed == cfg.split_seed
    # the same judge pairs as the CPU run (the splits are cut in order: the first two are unchanged)
    cpu_splits = make_splits(cfg.sizes, cfg.split_seed, cfg.digits)
    gpu_splits = make_splits(gpu.sizes, gpu.split_seed, gpu.digits)
    assert gpu_splits["judge_train"] == cpu_splits["judge_train"]


def test_recipe_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_step: 3\n")
    with pytest.raises(ValueError, match="unknown recipe key"):
        MiniatureConfig.from_yaml(bad)
    with pytest.raises(ValueError, match="Unknown arm"):
        MiniatureConfig(arms=["grpo_magic"])
    with pytest.raises(ValueError, match="num_generations"):
        MiniatureConfig(num_generations=1)


def test_arms_share_prompts_seeds_and_sample_budget(tmp_path):
    cfg = MiniatureConfig.from_yaml(RECIPE)
    args = {arm: common_args(cfg, tmp_path / arm, seed=1) for arm in ARMS}
    for arm in ARMS:
        assert args[arm]["seed"] == 1
        assert {k: v for k, v in args[arm].items() if k != "output_dir"} == {
            k: v for k, v in args["grpo_group"].items() if k != "output_dir"
        }
    # PPO makes `ppo_epochs` optimizer steps per rollout; every other arm one step per sampling round
    assert steps_per_rollout("ppo_greedy", cfg) == cfg.ppo_epochs
    assert all(steps_per_rollout(a, cfg) == 1 for a in ARMS if a != "ppo_greedy")
