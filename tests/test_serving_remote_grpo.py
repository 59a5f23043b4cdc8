"""TRL 1.16's GRPOTrainer with RemoteGenerativeRewardFunction against the real server (127.0.0.1, a tiny judge):
a step gets the group rewards; with the server down the step is not silent (warning and `no_rewards` metric)."""

import math
import socket

import pytest
import torch
from datasets import Dataset
from tiny_models import tiny_llama

from trl_gram.judge import GramJudge
from trl_gram.serving.remote_reward import RemoteGenerativeRewardFunction
from trl_gram.serving.server import BackgroundServer, ServeConfig, create_app

pytest.importorskip("fastapi")

PROMPTS = ["What is 2 + 3?", "Name a colour.", "Say hello.", "Count to three."]


def _trainer(tmp_path, tokenizer, reward):
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-4,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        seed=0,
        num_generations=4,
        max_completion_length=8,
    )
    return GRPOTrainer(
        model=tiny_llama(tokenizer, seed=1),
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
        processing_class=tokenizer,
    )


def test_grpo_step_with_the_remote_reward(tmp_path, tokenizer):
    model = tiny_llama(tokenizer, seed=1, hidden=64)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    judge = GramJudge(model, tokenizer, mode="direct", cache_size=0)
    with BackgroundServer(create_app(judge, ServeConfig())) as url:
        trainer = _trainer(tmp_path, tokenizer, RemoteGenerativeRewardFunction(url, name="gram"))
        trainer.train()
    rewards = list(trainer._logs["rewards"]["gram"])
    assert len(rewards) == 4 and all(math.isfinite(r) for r in rewards)
    assert sum(rewards) == pytest.approx(2.0, abs=1e-4)  # one group of 4: all-pairs means sum to G/2
    logged = {k: v for entry in trainer.state.log_history for k, v in entry.items()}
    assert logged["gram/no_rewards"] == 0.0


def test_grpo_step_with_the_server_down_is_loud(tmp_path, tokenizer):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reward = RemoteGenerativeRewardFunction(f"http://127.0.0.1:{port}", timeout=0.5, backoff=0.05, name="gram")
    trainer = _trainer(tmp_path, tokenizer, reward)
    trainer.train()
    logged = {k: v for entry in trainer.state.log_history for k, v in entry.items()}
    assert logged["gram/no_rewards"] == 1.0 and logged["gram/failed_requests"] >= 1.0
