"""Inference backends of [`~trl_gram.judge.GramJudge`] and the one rule that picks among them ([`make_backend`]).

* [`~trl_gram.judge.backends.transformers.TransformersBackend`]: padded `forward` / `generate` batches;
* [`~trl_gram.judge.backends.prefix.PrefixBackend`]: the prefix-sharing engine (CPU default);
* [`~trl_gram.judge.backends.vllm.VLLMBackend`]: `vllm.LLM` (extra `trl-gram[vllm]`).
"""

from __future__ import annotations

from .base import GenerationSettings, JudgeBackend, SlotGeneration

__all__ = ["GenerationSettings", "JudgeBackend", "SlotGeneration", "make_backend"]


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def make_backend(model, tokenizer, config) -> JudgeBackend:
    """The backend object for a loaded `model` and `config.backend` ([`~trl_gram.judge.GramJudgeConfig`]):

    * `"vllm"`: `model` is a `vllm.LLM`: [`~trl_gram.judge.backends.vllm.VLLMBackend`];
    * `"transformers"`: [`~trl_gram.judge.backends.transformers.TransformersBackend`] (padded batches);
    * `"prefix"`: [`~trl_gram.judge.backends.prefix.PrefixBackend`], raising when the engine cannot run the model;
    * `"auto"`: on CPU the prefix engine, falling back on plain batches when it fails its one-time self-check on the
      model or (generating) the model's generation config adds logits processors; on accelerators plain batches
      (measured on an H200, bf16, SmolLM2-135M shape, GRPO-like batch: the prefix engine's many small shared-prefix
      passes ran direct mode at 35 pairs/s against 277 for one padded batch). A loaded transformers model is never
      re-loaded into vLLM; load a judge with [`~trl_gram.judge.GramJudge.from_vllm`] (or
      [`~trl_gram.judge.load_judge`] with `backend="vllm"`) for that.
    """
    engine = config.backend
    if engine == "openai":
        raise ValueError("`backend='openai'` judges on remote engines: load it with `trl_gram.load_judge`.")
    if engine == "vllm":
        from .vllm import VLLMBackend

        return VLLMBackend(model, tokenizer)
    from .transformers import TransformersBackend

    pad_id = _pad_id(tokenizer)
    plain = TransformersBackend(model, tokenizer, pad_id, config.token_budget, config.max_batch_rows)
    if engine == "transformers":
        return plain
    device = next(model.parameters()).device
    if engine == "auto" and device.type != "cpu":
        return plain
    from .prefix import PrefixBackend

    fallback = plain if engine == "auto" else None
    return PrefixBackend(model, tokenizer, pad_id, config.token_budget, config.max_batch_rows, fallback=fallback)
