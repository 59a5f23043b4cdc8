"""[`load_judge`]: load a judge by path on the backend a config or a CLI asks for (`judge_backend` / `--backend`)."""

from __future__ import annotations

import importlib.util

BACKENDS = ("auto", "transformers", "vllm", "openai")


def vllm_available() -> bool:
    """Whether `vllm` is importable here (without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def resolve_backend(backend: str, mode: str = "reason") -> str:
    """`"transformers"`, `"vllm"` or `"openai"` for a `backend` choice.

    `"auto"` picks vLLM when it is installed and the judge generates (`mode="reason"`), else transformers (the
    prefix-sharing engine on CPU, padded batches on GPUs). Measured in one run on this project's 2-core CPU
    (`benchmarks/results/judge_throughput_vllm_quick.json`, SmolLM2-135M, float32): in reason mode vLLM judged 1.56×
    faster than the prefix engine (ours / vLLM = 0.64), in direct mode the prefix engine was 1.80× faster than vLLM.
    """
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}.")
    if backend == "auto":
        return "vllm" if mode == "reason" and vllm_available() else "transformers"
    return backend


def load_judge(
    model_name_or_path: str | None = None,
    *,
    backend: str = "transformers",
    tensor_parallel_size: int = 1,
    data_parallel_size: int = 1,
    gpu_memory_utilization: float | None = None,
    max_model_len: int | None = None,
    llm_kwargs: dict | None = None,
    engine_urls: list[str] | str | None = None,
    served_model_name: str | None = None,
    **kwargs,
):
    """A [`~trl_gram.judge.GramJudge`] loaded from a path (`None`: the embedded default).

    Args:
        backend (`str`): `"transformers"` ([`~trl_gram.judge.GramJudge.from_pretrained`]; `engine` then picks plain
            or prefix-sharing batches), `"vllm"` ([`~trl_gram.judge.GramJudge.from_vllm`]) or `"auto"`
            ([`resolve_backend`]: vLLM for reason mode when installed).
            `"openai"` judges on OpenAI-compatible engines ([`~trl_gram.judge.GramJudge.from_openai`]: `engine_urls`,
            `served_model_name`; `model_name_or_path` names the tokenizer and, by default, the served model).
        tensor_parallel_size, data_parallel_size, gpu_memory_utilization, max_model_len, llm_kwargs: vLLM only.
        engine_urls, served_model_name: `"openai"` only.
        **kwargs: Keyword arguments of [`~trl_gram.judge.GramJudge.from_pretrained`] (`adapter`, `dtype`, `device`,
            `config`, ...) or, for vLLM, `dtype`, `config` and [`~trl_gram.judge.GramJudgeConfig`] fields.
    """
    from .judge import GramJudge

    config = kwargs.get("config")
    mode = kwargs.get("mode") or (config.mode if config is not None else "reason")
    chosen = resolve_backend(backend, mode)
    if chosen != "openai" and engine_urls:
        raise ValueError(f"`engine_urls` is for `backend='openai'`, not {backend!r}.")
    if chosen == "transformers":
        return GramJudge.from_pretrained(model_name_or_path, **kwargs)
    for name in ("adapter", "load_in_4bit", "device", "model_kwargs"):
        if kwargs.pop(name, None) not in (None, False):
            raise ValueError(
                f"`{name}` is not supported with `backend={chosen!r}` (merge adapters into the checkpoint)."
            )
    if chosen == "openai":
        if not engine_urls:
            raise ValueError("`backend='openai'` needs `engine_urls` (the engines' base URLs).")
        kwargs.pop("dtype", None)  # the engines chose theirs
        return GramJudge.from_openai(
            engine_urls, served_model_name=served_model_name, tokenizer=model_name_or_path, **kwargs
        )
    return GramJudge.from_vllm(
        model_name_or_path,
        tensor_parallel_size=tensor_parallel_size,
        data_parallel_size=data_parallel_size,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len,
        llm_kwargs=llm_kwargs,
        **kwargs,
    )
