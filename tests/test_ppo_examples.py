"""The RL example scripts end to end on tiny models (through flags), and PPO under `accelerate launch` with two CPU
processes (gloo): a checkpoint, then a resumed run that continues from it."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import tiny_llama, tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    tokenizer = tiny_tokenizer()
    paths = {}
    # "wide" (hidden 64): small enough to be fast, wide enough for bitsandbytes' 4-bit CPU kernels (blocks of 64)
    for name, seed, hidden in (("policy", 0, 32), ("judge", 7, 32), ("wide", 3, 64)):
        path = root / name
        tiny_llama(tokenizer, seed=seed, hidden=hidden).save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths[name] = str(path)
    prompts = root / "prompts.jsonl"
    with open(prompts, "w") as f:
        for i, (q, ref) in enumerate([("What is 2 + 3?", "5"), ("Name a color.", "red"), ("Say hello.", "hello")] * 3):
            f.write(json.dumps({"question": f"{q} ({i})", "reference": ref}) + "\n")
    paths["prompts"] = str(prompts)
    return paths


def _env():
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        WANDB_DISABLED="true",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    return env


def _run(cmd, cwd, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accelerate(num_processes: int):
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    if num_processes == 1:
        return launcher + ["--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no"]
    # the repository's recipe: 2 CPU processes over gloo
    config = REPO / "recipes" / "accelerate" / "cpu_ddp.yaml"
    return launcher + ["--config_file", str(config), "--main_process_port", str(_free_port())]


def _tiny_flags(paths, output_dir):
    return [
        "--model_name_or_path", paths["policy"],
        "--judge_model_name_or_path", paths["judge"], "--judge_mode", "direct",
        "--output_dir", str(output_dir),
        "--max_completion_length", "6",
    ]  # fmt: skip


def test_ppo_example_end_to_end_lora_4bit(tiny_paths, tmp_path):
    """The single-GPU recipe on CPU: 4-bit policy with LoRA (one shared base: reference = adapter disabled),
    gradient checkpointing, 4-bit judge, prompts from a jsonl file with another prompt column."""
    out = tmp_path / "ppo"
    flags = ["--model_name_or_path", tiny_paths["wide"], "--judge_model", tiny_paths["wide"], "--judge_mode", "direct"]
    flags += ["--output_dir", str(out), "--max_completion_length", "6", "--max_steps", "4", "--dtype", "float32"]
    flags += ["--dataset_name", tiny_paths["prompts"], "--prompt_column", "question"]
    flags += ["--use_peft", "--lora_r", "4", "--load_in_4bit", "--judge_load_in_4bit", "--gradient_checkpointing"]
    stdout = _run(_accelerate(1) + [EXAMPLES / "ppo_with_gram.py", *flags], cwd=tmp_path)
    assert "PPO with a GRAM generative reward: summary" in stdout
    assert "4 optimizer steps, 2 per rollout of 4 prompts" in stdout
    assert "judge parse-failure rate: 0.000" in stdout
    # The win rate against the starting policy (the adapter-disabled base) at start and end
    assert "eval/win_rate vs the starting policy on 9 prompts (greedy):" in stdout
    assert "step     0: 0.500 ± 0.000  (identical 1.00" in stdout and "step     4: " in stdout
    assert {p.name for p in (out / "win_rate").iterdir()} >= {"completions_00000.jsonl", "completions_00004.jsonl"}
    assert (out / "adapter_model.safetensors").is_file() and (out / "value_head.safetensors").is_file()
    assert list((out / "completions").glob("*.parquet"))


def test_ppo_example_two_processes_checkpoint_and_resume(tiny_paths, tmp_path):
    out = tmp_path / "ddp"
    common = [EXAMPLES / "ppo_with_gram.py", *_tiny_flags(tiny_paths, out), "--save_strategy", "steps"]
    common += ["--save_steps", "2", "--per_device_train_batch_size", "2", "--log_completions", "false"]
    first = _run(_accelerate(2) + common + ["--max_steps", "2"], cwd=tmp_path)
    assert "2 process(es) on cpu; 2 optimizer steps, 2 per rollout of 4 prompts" in first
    ckpt = out / "checkpoint-2"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "optimizer.pt").is_file()
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()
    saved = json.loads((ckpt / "trainer_state.json").read_text())
    # The starting policy's completions are cached for a resumed run: mark them to see that run use them
    cache = out / "win_rate" / "reference.json"
    reference = json.loads(cache.read_text())
    reference["completions"] = [f"cached {i}" for i in range(len(reference["completions"]))]
    cache.write_text(json.dumps(reference))

    second = _run(_accelerate(2) + common + ["--max_steps", "4", "--resume_from_checkpoint", str(ckpt)], cwd=tmp_path)
    assert "2 process(es) on cpu; 4 optimizer steps" in second
    assert "step     2: 0.500 ± 0.000  (identical 1.00" in first and "step     4: " in second
    rows = [json.loads(line) for line in (out / "win_rate" / "completions_00004.jsonl").open()]
    assert [r["reference"] for r in rows] == reference["completions"]
    resumed = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert resumed["global_step"] == 4
    steps = [h["step"] for h in resumed["log_history"] if "loss" in h]
    assert steps == [2, 4]  # one log per rollout (logging_steps=2 in the demo defaults)
    # Steps 1-2 are the first run's (carried over by the resume), not a restart
    assert resumed["log_history"][: len(saved["log_history"])] == saved["log_history"]


def test_two_processes_split_the_prompts_and_stay_in_sync(tmp_path):
    """DDP on CPU: the ranks sample different prompts, and their weights are identical after training."""
    _run(
        _accelerate(2) + [REPO / "tests" / "ppo_utils.py", "--output_dir", str(tmp_path), "--max_steps", "4"], tmp_path
    )
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert all(r["world"] == 2 for r in ranks)
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert len(ranks[0]["prompts"]) == len(ranks[1]["prompts"]) == 4 * 4  # 4 rollouts of 2 x 2 prompts
    for step in range(4):  # within each rollout the two ranks hold different prompts
        chunk = slice(4 * step, 4 * step + 4)
        assert not set(ranks[0]["prompts"][chunk]) & set(ranks[1]["prompts"][chunk])


def test_grpo_example_group_and_reference_column(tiny_paths, tmp_path):
    flags = [*_tiny_flags(tiny_paths, tmp_path / "grpo"), "--max_steps", "2", "--log_completions", "false"]
    sparse = ["--schedule", "sparse", "--schedule_degree", "2", "--aggregate", "bradley_terry"]
    stdout = _run([sys.executable, EXAMPLES / "grpo_with_gram.py", *flags, *sparse], cwd=tmp_path)
    assert "GRPO with a GRAM generative reward: summary" in stdout and "reference: group; 2 steps" in stdout
    # groups of 4 on a cycle: 4 comparisons in both orders instead of 6
    assert "comparisons: schedule=sparse, aggregate=bradley_terry, second_order=always; 8.0 judge passes" in stdout
    assert "eval/win_rate vs the starting policy on 8 prompts (greedy):" in stdout and "step     2: " in stdout
    column = [
        "--dataset_name",
        tiny_paths["prompts"],
        "--prompt_column",
        "question",
        "--reference_column",
        "reference",
    ]
    stdout = _run([sys.executable, EXAMPLES / "grpo_with_gram.py", *flags, *column], cwd=tmp_path)
    assert "reference: column 'reference'; 2 steps" in stdout
    assert (tmp_path / "grpo" / "model.safetensors").is_file()


def test_best_of_n_example(tiny_paths, tmp_path):
    result = tmp_path / "best.jsonl"
    stdout = _run(
        [sys.executable, EXAMPLES / "best_of_n.py", "--model_name_or_path", tiny_paths["policy"]]
        + [
            "--judge_model_name_or_path",
            tiny_paths["judge"],
            "--judge_mode",
            "direct",
            "--max_new_tokens",
            "6",
            "--n",
            "3",
        ]
        + ["--method", "all", "--output_file", str(result)],
        cwd=tmp_path,
    )
    assert "Best of 3 (all, 3 comparisons)" in stdout
    rows = [json.loads(line) for line in result.read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert len(row["candidates"]) == 3 and 0 <= row["winner"] < 3 and len(row["scores"]) == 3
