"""[`load_judge`]: the one place a judge is loaded and its backend chosen, from a [`~trl_gram.judge.JudgeSpec`].

Every command and config goes through it: `trl-gram eval`, `trl-gram serve`, the example scripts, the reward function
(a judge given by path), the self-training loop's judges. The checkpoint's preset is applied first, then `backend` is
resolved ([`resolve_backend`]) on the mode that results, so a GRAM v1 checkpoint (a direct judge) with
`backend="auto"` gets the prefix engine and a GRAM-R² one vLLM (when installed).
"""

from __future__ import annotations

import dataclasses
import importlib.util

from .judge import BACKENDS, GramJudgeConfig


def vllm_available() -> bool:
    """Whether `vllm` is importable here (without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(backend: str, mode: str = "reason") -> str:
    """What `backend="auto"` means when loading: the backend that will load the model.

    `"auto"` picks vLLM when it is installed and the judge generates (`mode="reason"`), else `"auto"` is left to
    [`~trl_gram.judge.backends.make_backend`] (the prefix-sharing engine on CPU, padded batches on GPUs), reported here
    as `"transformers"`. Measured in one run on this project's 2-core CPU
    (`benchmarks/results/judge_throughput_vllm_quick.json`, SmolLM2-135M, float32): in reason mode vLLM judged 1.56×
    faster than the prefix engine (ours / vLLM = 0.64), in direct mode the prefix engine was 1.80× faster than vLLM.

    Returns:
        `str`: `"transformers"` (a transformers model: padded batches or prefix engine), `"vllm"` or `"openai"`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}.")
    if backend == "auto":
        return "vllm" if mode == "reason" and vllm_available() else "transformers"
    return "transformers" if backend == "prefix" else backend


def load_judge(
    spec=None,
    *,
    model_kwargs: dict | None = None,
    llm_kwargs: dict | None = None,
    data_parallel_size: int = 1,
    **fields,
):
    """Load the judge a [`~trl_gram.judge.JudgeSpec`] describes.

    Args:
        spec ([`~trl_gram.judge.JudgeSpec`], `str` or `None`):
            The judge; a string is a model path (`JudgeSpec(model=spec)`), `None` the embedded default model.
        model_kwargs (`dict`, *optional*):
            Extra `AutoModelForCausalLM.from_pretrained` arguments (transformers backends).
        llm_kwargs (`dict`, *optional*):
            Extra `vllm.LLM` arguments (vLLM backend).
        data_parallel_size (`int`, *optional*, defaults to `1`):
            Copies of the judge vLLM spreads requests over (vLLM backend).
        **fields:
            [`~trl_gram.judge.JudgeSpec`] fields overriding the spec's (`mode`, `backend`, `adapter`, ...).

    Returns:
        [`~trl_gram.judge.GramJudge`]: the loaded judge.

    Example:

    ```python
    >>> from trl_gram import load_judge
    >>> judge = load_judge(None, mode="direct", backend="prefix")
    ```
    """
    from .judge import GramJudge
    from .spec import JudgeSpec

    if spec is None or isinstance(spec, str):
        spec = JudgeSpec(model=spec, **fields)
    elif fields:
        spec = dataclasses.replace(spec, **fields)
    config_fields = spec.config_fields()  # the preset applied: the mode is final
    backend = resolve_backend(config_fields["backend"], config_fields.get("mode", "reason"))
    if backend == "openai":  # a gateway: the tokenizer only, the engines run the model
        return GramJudge.from_openai(
            spec.engine_urls,
            served_model_name=spec.served_model_name,
            tokenizer=spec.model,
            config=GramJudgeConfig(**config_fields),
        )
    model = spec.model  # None: from_vllm / from_pretrained load the embedded default model
    if backend == "vllm":
        for name in ("adapter", "load_in_4bit"):
            if getattr(spec, name) not in (None, False):
                raise ValueError(
                    f"`{name}` is not supported with `backend='vllm'` (merge adapters into the checkpoint)."
                )
        return GramJudge.from_vllm(
            model,
            tensor_parallel_size=spec.tensor_parallel_size,
            data_parallel_size=data_parallel_size,
            gpu_memory_utilization=spec.gpu_memory_utilization,
            dtype=spec.dtype,
            max_model_len=spec.max_model_len,
            llm_kwargs=llm_kwargs,
            preset=None,
            **config_fields,
        )
    return GramJudge.from_pretrained(
        model,
        adapter=spec.adapter,
        load_in_4bit=spec.load_in_4bit,
        dtype=spec.dtype,
        device=spec.device,
        model_kwargs=model_kwargs,
        preset=None,
        **config_fields,
    )
