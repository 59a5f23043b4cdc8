"""vLLM backend for :class:`~trl_gram.judge.GramJudge` (extra ``trl-gram[vllm]``): the same API, generation and label
reading through ``vllm.LLM`` (continuous batching, paged attention, prefix caching, tensor parallelism).

* **direct**: each prompt (ending at the label slot) is one request with ``max_tokens=1`` and ``logprobs=k``: the
  label probabilities come from the log-probabilities at the slot.
* **reason**: phase 1 generates the rationale with the answer tag as a stop string (generation stops at the slot;
  ``n`` votes are separate seeded requests); phase 2 reads the slot: the prompt plus the rationale up to the tag and a
  newline (or, when the tag never came, the rationale and the forced answer prefix) as one ``max_tokens=1`` request,
  whose prefix is already in vLLM's prefix cache, so the rationale is not recomputed.

When a label token is not among the top-``k`` log-probabilities, its exact log-probability is read with a
``prompt_logprobs`` request over the prompt followed by that label. Requests are built and results parsed by plain
functions (:func:`slot_request`, :func:`label_logprobs`, ...) that are tested without vLLM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers.utils import logging

from ..fast_judging import forced_text
from ..judge import GramJudge, JudgeRun
from ..parsing import parse_with_template

logger = logging.get_logger(__name__)

TOP_LOGPROBS = 20


@dataclass
class Request:
    """One vLLM request: a token prompt and its sampling parameters (keyword arguments of ``SamplingParams``)."""

    prompt_token_ids: list[int]
    params: dict


def slot_request(prompt_ids: list[int], top: int = TOP_LOGPROBS) -> Request:
    """Read the slot after ``prompt_ids``: one greedy token, with the top log-probabilities."""
    return Request(list(prompt_ids), dict(max_tokens=1, temperature=0.0, logprobs=top, detokenize=True))


def rationale_request(prompt_ids, *, answer_open, max_new_tokens, sample, temperature, top_p, seed) -> Request:
    """Generate a rationale up to (and including) the answer tag."""
    params = dict(
        max_tokens=max_new_tokens,
        stop=[answer_open],
        include_stop_str_in_output=True,
        skip_special_tokens=True,
        temperature=temperature if sample else 0.0,
        top_p=top_p if sample else 1.0,
    )
    if sample:
        params["seed"] = seed
    return Request(list(prompt_ids), params)


def label_request(prompt_ids: list[int], label_id: int) -> Request:
    """Exact log-probability of ``label_id`` at the slot: the prompt-logprob of the appended label token."""
    return Request(list(prompt_ids) + [label_id], dict(max_tokens=1, temperature=0.0, prompt_logprobs=0))


def _logprob(value) -> float:
    return float(getattr(value, "logprob", value))


def label_logprobs(output, label_ids: list[int]) -> list[float | None]:
    """Log-probabilities of the label tokens at the first generated position of a slot request (``None`` for those
    outside the returned top log-probabilities)."""
    steps = output.outputs[0].logprobs or []
    top = steps[0] if steps else {}
    return [_logprob(top[t]) if t in top else None for t in label_ids]


def prompt_label_logprob(output, label_id: int) -> float:
    """The log-probability of the last prompt token of a :func:`label_request`."""
    last = output.prompt_logprobs[-1]
    return _logprob(last[label_id])


def generated(output) -> tuple[str, list[int], str | None]:
    """Text, token ids and finish reason of a rationale request."""
    out = output.outputs[0]
    return out.text, list(out.token_ids), getattr(out, "finish_reason", None)


class VLLMGramJudge(GramJudge):
    """:class:`~trl_gram.judge.GramJudge` running on ``vllm.LLM``.

    Args:
        llm: A ``vllm.LLM`` (or an object with the same ``generate``).
        tokenizer: Its tokenizer (default: ``llm.get_tokenizer()``).
        config, **overrides: As for :class:`GramJudge`.
        sampling_params_cls: The ``SamplingParams`` class (default: vLLM's).
    """

    def __init__(self, llm, tokenizer=None, config=None, sampling_params_cls=None, **overrides):
        tokenizer = tokenizer if tokenizer is not None else llm.get_tokenizer()
        super().__init__(llm, tokenizer, config=config, **overrides)
        self._sampling_params_cls = sampling_params_cls

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | None = None,
        *,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        dtype: str = "auto",
        max_model_len: int | None = None,
        seed: int = 0,
        llm_kwargs: dict | None = None,
        config=None,
        **config_fields,
    ) -> VLLMGramJudge:
        """Load a judge into ``vllm.LLM`` (prefix caching on). ``None`` loads the embedded default model."""
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError("The vLLM backend needs vLLM: pip install 'trl-gram[vllm]'.") from e
        if model_name_or_path is None:
            from ..default_model import default_model_path

            model_name_or_path = default_model_path()
        kwargs = dict(
            model=model_name_or_path,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=str(dtype).replace("torch.", ""),
            seed=seed,
            enable_prefix_caching=True,
        )
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        kwargs.update(llm_kwargs or {})
        return cls(LLM(**kwargs), config=config, **config_fields)

    @property
    def device(self):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _engine(self, generate: bool = False, sample: bool = False):
        return None

    # ---------------------------------------------------------------------------------------------------------------
    def _generate(self, requests: list[Request]):
        if not requests:
            return []
        cls = self._sampling_params_cls
        if cls is None:
            from vllm import SamplingParams as cls
        prompts = [{"prompt_token_ids": r.prompt_token_ids} for r in requests]
        return self.model.generate(prompts, [cls(**r.params) for r in requests], use_tqdm=False)

    def _slot_logits(self, prompts: list[list[int]], template) -> list[tuple[torch.Tensor, int]]:
        """Label log-probabilities (usable as logits: the same softmax up to a constant) at the slot after each
        prompt, and the greedy token there."""
        first_ids, second_ids = self._label_token_ids(template)
        label_ids = first_ids + second_ids
        outputs = self._generate([slot_request(p) for p in prompts])
        values = [label_logprobs(o, label_ids) for o in outputs]
        missing = [(k, j) for k, v in enumerate(values) for j, x in enumerate(v) if x is None]
        if missing:
            exact = self._generate([label_request(prompts[k], label_ids[j]) for k, j in missing])
            for (k, j), out in zip(missing, exact):
                values[k][j] = prompt_label_logprob(out, label_ids[j])
        return [
            (torch.tensor(v, dtype=torch.float32), list(o.outputs[0].token_ids)[:1]) for v, o in zip(values, outputs)
        ]

    def _run_direct(self, items, show_progress) -> list[JudgeRun]:
        template = self.template_for("direct")
        runs = []
        for (_, order, _), (logits, _) in zip(items, self._slot_logits([ids for _, _, ids in items], template)):
            p = self._prob_first(logits, template)
            runs.append(JudgeRun(order=order, prob_first=p, label=template.label_words[0 if p >= 0.5 else 1]))
        return runs

    def _run_reason(self, items, sample: bool, seed: int, show_progress) -> list[JudgeRun]:
        cfg = self.config
        template = self.template_for("reason")
        requests = [
            rationale_request(
                ids,
                answer_open=template.answer_open,
                max_new_tokens=cfg.max_new_tokens,
                sample=sample,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                seed=seed + k,
            )
            for k, (_, _, ids) in enumerate(items)
        ]
        texts = [generated(o)[0] for o in self._generate(requests)]
        # Phase 2: the slot after the tag (or after the forced answer prefix when the tag never came).
        reads, slot_texts = [], []
        for (_, _, ids), text in zip(items, texts):
            reached = template.answer_open.lower() in text.lower()
            if not reached and not cfg.force_answer:
                reads.append(None)
                slot_texts.append(text)
                continue
            prefix = forced_text(text, template)
            reads.append(ids + self.tokenizer.encode(prefix, add_special_tokens=False))
            slot_texts.append(prefix if reached else text)
        todo = [k for k, r in enumerate(reads) if r is not None]
        slots = dict(zip(todo, self._slot_logits([reads[k] for k in todo], template)))
        runs = []
        for k, (_, order, _) in enumerate(items):
            text = slot_texts[k]
            logits = None
            if k in slots:
                logits, token = slots[k]
                if template.answer_open.lower() in texts[k].lower():  # the label token the model would write
                    text = text + self.tokenizer.decode(token, skip_special_tokens=True)
            text = cfg.reason_prefix + text
            verdict = parse_with_template(text, template)
            p = self._prob_first(logits, template) if logits is not None else math.nan
            runs.append(JudgeRun(order, p, verdict.label, verdict.rationale, verdict.failure, text))
        return runs
