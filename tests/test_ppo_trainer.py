"""GramPPOTrainer on tiny random models with programmatic rewards: it learns, honours TRL's reward contract (columns,
references, None, async, model rewards), trains with PEFT or a separate value model, and saves/resumes."""

import math

import pytest
import torch
from ppo_utils import RecordingReward, make_share_reward, ppo_config, prompt_dataset, target_ids
from tiny_models import tiny_llama
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForSequenceClassification

from trl_gram.ppo import GramPPOTrainer
from trl_gram.ppo.rollout import completion_mask, decode_completions, tokenize_prompts


def _trainer(tokenizer, tmp_path, rewards, dataset=None, seed=0, **config):
    policy = tiny_llama(tokenizer, seed=seed)
    args = ppo_config(tmp_path / "out", **config)
    return GramPPOTrainer(
        policy, rewards, args=args, train_dataset=dataset or prompt_dataset(16), processing_class=tokenizer
    )


def _history(trainer, key):
    return [h[key] for h in trainer.state.log_history if h.get(key) is not None]


def test_ppo_learns_to_raise_a_programmatic_reward(tokenizer, tmp_path):
    """Reward = share of completion tokens in a fixed set of 64 of the 512 tokens (about 0.13 for the random
    policy). A broken sign drives it down and a frozen policy keeps it flat; PPO must lift it well above."""
    epochs, minibatches, rollouts = 2, 2, 40
    reward = make_share_reward(target_ids(tokenizer, 64), tokenizer.eos_token_id)
    trainer = _trainer(
        tokenizer,
        tmp_path,
        reward,
        dataset=prompt_dataset(64),
        max_steps=rollouts * epochs * minibatches,
        logging_steps=epochs * minibatches,  # one log per rollout
        num_ppo_epochs=epochs,
        num_mini_batches=minibatches,
        per_device_train_batch_size=8,
        max_completion_length=8,
        learning_rate=1e-2,
        kl_coef=0.01,
    )
    trainer.train()
    curve = _history(trainer, "reward")
    print("PPO-learns reward curve (one value per rollout):", " ".join(f"{r:.3f}" for r in curve))
    assert len(curve) == rollouts
    first, last = sum(curve[:5]) / 5, sum(curve[-5:]) / 5
    assert first < 0.3
    assert last > first + 0.4, f"reward did not rise: first 5 rollouts {first:.3f}, last 5 {last:.3f}"
    kls = _history(trainer, "kl")
    assert kls[0] == pytest.approx(0.0, abs=1e-6)  # first rollout: policy == frozen reference copy
    assert kls[-1] > 0  # the policy moved away from the reference


def test_reward_contract_columns_references_and_state(tokenizer, tmp_path):
    rec = RecordingReward()
    trainer = _trainer(tokenizer, tmp_path, rec, max_steps=2, greedy_reference=True)
    trainer.train()
    assert len(rec.calls) == 1  # 2 optimizer steps = 1 rollout (num_ppo_epochs=2)
    call = rec.calls[0]
    n = trainer.args.rollout_batch_size
    assert {"prompts", "completions", "completion_ids", "topic_id", "references", "trainer_state"} <= set(call)
    assert callable(call["log_extra"]) and callable(call["log_metric"])
    assert all(len(call[k]) == n for k in ("prompts", "completions", "completion_ids", "topic_id", "references"))
    assert call["trainer_state"] is trainer.state
    for text, ids in zip(call["completions"], call["completion_ids"]):
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        assert 1 <= len(ids) <= trainer.args.max_completion_length


def test_references_are_the_policys_greedy_responses(tokenizer, tmp_path):
    """Inside the reward call, regenerate greedily with the current policy: the references must match exactly."""
    seen, seen_sampled = [], []

    def check_reward(prompts, completions, completion_ids, references, **kwargs):
        policy = trainer.accelerator.unwrap_model(trainer.model).policy
        ids, mask = tokenize_prompts(tokenizer, prompts, trainer.args.max_prompt_length)
        out = policy.generate(input_ids=ids, attention_mask=mask, generation_config=trainer.greedy_generation_config)
        greedy_mask, _ = completion_mask(out[:, ids.size(1) :], trainer.eos_token_ids)
        greedy, _ = decode_completions(tokenizer, out[:, ids.size(1) :], greedy_mask, conversational=False)
        seen.extend(zip(greedy, references))
        # the sampled completions differ from the greedy ones (sampling at temperature 1 over 512 tokens)
        seen_sampled.extend(completions)
        return [0.0] * len(prompts)

    trainer = _trainer(tokenizer, tmp_path, check_reward, max_steps=4, greedy_reference=True, num_ppo_epochs=1)
    trainer.train()
    assert len(seen) == 4 * trainer.args.rollout_batch_size  # 4 rollouts: the references follow the updated policy
    assert all(greedy == ref for greedy, ref in seen)
    assert sum(s != g for s, (g, _) in zip(seen_sampled, seen)) > len(seen) // 2


def test_none_rewards_are_left_out_of_the_update(tokenizer, tmp_path):
    all_none = RecordingReward(none_every=1)  # None for every completion
    trainer = _trainer(tokenizer, tmp_path, all_none, max_steps=2)
    before = {k: v.clone() for k, v in trainer.model.policy.state_dict().items()}
    trainer.train()
    log = trainer.state.log_history[0]
    assert log["frac_unscored"] == 1.0 and log["rewards/recording/none_frac"] == 1.0
    assert trainer._rollout["loss_mask"].sum() == 0
    after = trainer.model.policy.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no signal, no update (and no NaN)

    half = RecordingReward(none_every=2)
    trainer = _trainer(tokenizer, tmp_path, half, max_steps=2)
    trainer.train()
    log = trainer.state.log_history[0]
    assert log["frac_unscored"] == 0.5
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


def test_async_and_model_rewards_with_weights(tokenizer, tmp_path):
    async def async_length(prompts, completions, **kwargs):
        return [len(c) / 10 for c in completions]

    classifier = LlamaForSequenceClassification(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            num_labels=1,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    policy = tiny_llama(tokenizer)
    args = ppo_config(tmp_path / "out", max_steps=2, reward_weights=[1.0, 0.5])
    trainer = GramPPOTrainer(
        policy,
        [async_length, classifier],
        args=args,
        train_dataset=prompt_dataset(8),
        processing_class=tokenizer,
        reward_processing_classes=[None, tokenizer],
    )
    trainer.train()
    log = trainer.state.log_history[0]
    assert trainer.reward_func_names[0] == "async_length"
    expected = log["rewards/async_length/mean"] + 0.5 * log[f"rewards/{trainer.reward_func_names[1]}/mean"]
    assert math.isclose(log["reward"], expected, rel_tol=1e-4, abs_tol=1e-5)


def test_missing_eos_penalty_and_conversational_prompts(tokenizer, tmp_path):
    rec = RecordingReward(value=1.0)
    trainer = _trainer(
        tokenizer,
        tmp_path,
        rec,
        dataset=prompt_dataset(8, conversational=True),
        max_steps=2,
        missing_eos_penalty=2.0,
        greedy_reference=True,
    )
    trainer.train()
    call = rec.calls[0]
    assert isinstance(call["prompts"][0], list) and call["prompts"][0][0]["role"] == "user"
    assert call["completions"][0][0]["role"] == "assistant"
    assert call["references"][0][0]["role"] == "assistant"
    log = trainer.state.log_history[0]
    expected = log["rewards/recording/mean"] - 2.0 * log["completions/frac_missing_eos"]
    assert log["completions/frac_missing_eos"] > 0
    assert math.isclose(log["reward"], expected, rel_tol=1e-4)


def test_peft_shares_one_base_model_and_uses_it_as_reference(tokenizer, tmp_path):
    from peft import LoraConfig

    reward = make_share_reward(target_ids(tokenizer), tokenizer.eos_token_id)
    policy = tiny_llama(tokenizer)
    base_weight = policy.model.layers[0].self_attn.q_proj.weight.detach().clone()
    args = ppo_config(tmp_path / "out", max_steps=4, learning_rate=5e-2, num_ppo_epochs=1)
    trainer = GramPPOTrainer(
        policy,
        reward,
        args=args,
        train_dataset=prompt_dataset(16),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    assert trainer.ref_model is None  # the reference is the adapter-disabled base: no second copy
    trainer.train()
    wrapper = trainer.model
    assert torch.equal(wrapper.policy.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight, base_weight)
    kls = _history(trainer, "kl")
    assert kls[0] == 0 and kls[-1] != 0  # the trained adapter moved the policy away from the base
    trainer.save_model()
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "out" / "value_head.safetensors").is_file()

    # Resuming restores the adapter and the value head into a fresh PEFT policy
    fresh = GramPPOTrainer(
        tiny_llama(tokenizer),
        reward,
        args=ppo_config(tmp_path / "out", max_steps=4, num_ppo_epochs=1),
        train_dataset=prompt_dataset(16),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    fresh._load_from_checkpoint(str(tmp_path / "out"))
    trained, restored = wrapper.state_dict(), fresh.model.state_dict()
    assert set(trained) == set(restored)
    assert all(torch.equal(trained[k], restored[k]) for k in trained if "lora_" in k or "value_head" in k)


def test_separate_value_model(tokenizer, tmp_path):
    reward = make_share_reward(target_ids(tokenizer), tokenizer.eos_token_id)
    value_model = LlamaForSequenceClassification(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            num_labels=1,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    before = value_model.score.weight.detach().clone()
    args = ppo_config(tmp_path / "out", max_steps=2)
    trainer = GramPPOTrainer(
        tiny_llama(tokenizer),
        reward,
        args=args,
        train_dataset=prompt_dataset(8),
        processing_class=tokenizer,
        value_model=value_model,
    )
    assert trainer.model.value_head is None
    trainer.train()
    assert not torch.equal(trainer.model.value_model.score.weight, before)
    trainer.save_model()
    assert (tmp_path / "out" / "value_model" / "model.safetensors").is_file()


def test_checkpoint_and_resume(tokenizer, tmp_path):
    reward = make_share_reward(target_ids(tokenizer), tokenizer.eos_token_id)
    common = dict(save_strategy="steps", save_steps=2, reward_normalization="running", greedy_reference=True)
    trainer = _trainer(tokenizer, tmp_path, reward, max_steps=4, **common)
    trainer.train()
    ckpt = tmp_path / "out" / "checkpoint-4"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "value_head.safetensors").is_file()
    assert (ckpt / "optimizer.pt").is_file() and (ckpt / "ppo_state.json").is_file()
    trained = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    moments = trainer.running_scores.state_dict()

    # A fresh trainer (different random init) resumed from checkpoint-4 continues from its weights and statistics
    resumed = _trainer(tokenizer, tmp_path, reward, seed=1, max_steps=6, **common)
    loaded = {}
    original_load = resumed._load_from_checkpoint

    def spy(path, model=None):
        original_load(path, model)
        loaded.update({k: v.clone() for k, v in resumed.model.state_dict().items()})

    resumed._load_from_checkpoint = spy
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)
    assert resumed.state.global_step == 6
    assert resumed.running_scores.count > moments["count"]  # restored, then updated by the new rollout
    steps = [h["step"] for h in resumed.state.log_history if "loss" in h]
    assert steps[-2:] == [5, 6]

    # The final save is a plain transformers folder
    resumed.save_model()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    torch.testing.assert_close(reloaded.lm_head.weight, resumed.model.policy.lm_head.weight.detach(), rtol=0, atol=0)


def test_input_validation(tokenizer, tmp_path):
    from datasets import Dataset

    policy = tiny_llama(tokenizer)
    args = ppo_config(tmp_path / "out")
    reward = RecordingReward()
    with pytest.raises(ValueError, match="prompt"):
        GramPPOTrainer(policy, reward, args=args, train_dataset=Dataset.from_list([{"text": "x"}] * 8))
    with pytest.raises(ValueError, match="one rollout takes 4"):
        GramPPOTrainer(policy, reward, args=args, train_dataset=prompt_dataset(2), processing_class=tokenizer)
    bad_weights = ppo_config(tmp_path / "out", reward_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="reward_weights"):
        GramPPOTrainer(policy, reward, args=bad_weights, train_dataset=prompt_dataset(8), processing_class=tokenizer)

    def wrong_length(prompts, completions, **kwargs):
        return [1.0]

    trainer = GramPPOTrainer(
        policy, wrong_length, args=args, train_dataset=prompt_dataset(8), processing_class=tokenizer
    )
    with pytest.raises(ValueError, match="'wrong_length' returned 1 rewards"):
        trainer.train()

    clash = Dataset.from_list([{"prompt": "hi there", "completions": "x"}] * 8)
    trainer = GramPPOTrainer(policy, reward, args=args, train_dataset=clash, processing_class=tokenizer)
    with pytest.raises(ValueError, match="'completions' collides"):
        trainer.train()


def test_batch_normalization_clipping_and_gradient_checkpointing(tokenizer, tmp_path):
    import pandas as pd

    rec = RecordingReward(value=5.0)  # 5.00, 5.01, 5.02, 5.03: z-scores +-1.16 and +-0.39
    trainer = _trainer(
        tokenizer,
        tmp_path,
        rec,
        max_steps=2,
        reward_normalization="batch",
        reward_clip=0.5,
        gradient_checkpointing=True,
        log_completions=True,
    )
    trainer.train()
    assert trainer.model.is_activation_checkpointing
    log = trainer.state.log_history[0]
    assert math.isclose(log["reward"], 5.015, rel_tol=1e-5)  # the raw reward is what gets reported
    frame = pd.read_parquet(next((tmp_path / "out" / "completions").glob("*.parquet")))
    scores = sorted(frame["score"])
    assert scores[0] == pytest.approx(-0.5) and scores[-1] == pytest.approx(0.5)  # clipped z-scores
    assert scores[1] == pytest.approx(-0.3873, abs=1e-3) and scores[2] == pytest.approx(0.3873, abs=1e-3)
