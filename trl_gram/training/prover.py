"""``PreferenceProver``: the preference-proving model of GRAM-R² (π_ψ).

Given an instruction, two responses and the label (which one is better), the prover writes a *proof*: a justification
of why that label holds, in the style "Here is my justification for why the selected response is the better one: …".
A reversible rule maps a judge rationale to proof style and back ([`rationale_to_proof`],
[`proof_to_rationale`]), so human rationales train the prover and its proofs become judge rationales.

Proof selection (paper, Eq. 5): sample ``k`` proofs at non-zero temperature and keep the one with the highest

    Score(s, l, ẑ) = − log π_ψ(ẑ | s, l) / log π_ψ(ẑ)

(log-probabilities summed over the proof tokens): likely given the pair and the label, unlikely on its own, which
penalises generic text. π_ψ(ẑ) is scored with an empty context (the chat template around an empty user message).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from datasets import Dataset
from tqdm.auto import tqdm
from transformers.utils import logging

from ..batching import left_pad, token_budget_batches, truncate_fields
from ..templates import JudgeTemplate, question_to_text, response_to_text
from .denoise import Candidate, DenoiseRules, check_candidate
from .judge_examples import render_pairs, uses_chat_template, validate_pairs

logger = logging.get_logger(__name__)

PROOF_PREFIX = "Here is my justification for why the selected response is the better one:"

PROVER_PROMPT = (
    "You are given a user question and two responses, A and B, written by two AI assistants. An expert has already "
    "decided that Response {label} is the better one. Explain why Response {label} is better than Response {other}: "
    "give short feedback on each response, compare them, and conclude that Response {label} is better.\n\n"
    "[User Question]\n{question}\n\n"
    "[The Start of Assistant A's Response]\n{first}\n[The End of Assistant A's Response]\n\n"
    "[The Start of Assistant B's Response]\n{second}\n[The End of Assistant B's Response]\n\n"
    "[The Better Response]\nResponse {label}"
)


def rationale_to_proof(rationale: str) -> str:
    """Judge rationale → proof style (the proof prefix, a newline, the rationale)."""
    return f"{PROOF_PREFIX}\n{rationale.strip()}"


def proof_to_rationale(proof: str) -> str:
    """Proof → judge rationale: the inverse of [`rationale_to_proof`] (a missing prefix is tolerated)."""
    text = proof.strip()
    if text.lower().startswith(PROOF_PREFIX.lower()):
        text = text[len(PROOF_PREFIX) :]
    return text.strip()


def eq5_score(logp_conditional: float, logp_unconditional: float) -> float:
    """Eq. 5 of GRAM-R²: ``-log π(ẑ|s,l) / log π(ẑ)`` (higher is better; ``-inf`` when undefined)."""
    if not (logp_unconditional < 0) or math.isnan(logp_conditional):
        return -math.inf
    return -logp_conditional / logp_unconditional


@dataclass
class ProverConfig:
    """How a [`PreferenceProver`] samples and scores proofs.

    Args:
        num_samples: Proofs sampled per pair (``k``).
        temperature / top_p: Sampling parameters (the temperature must be positive).
        max_new_tokens: Cap on a proof's length in tokens.
        max_length: Cap on prompt + proof tokens (the responses, then the question, are cut to fit).
        token_budget: Upper bound of ``rows × padded length`` per batch (generation and scoring).
        unconditional_prompt: User message of the empty context that scores ``π(ẑ)``.
        rules: Rule checks a proof must pass to be selectable (``too_long``, ``unsupported``, ``malformed``).
        require_finished: Only proofs that ended (EOS) within ``max_new_tokens`` are selectable.
        seed: Sampling seed.
        show_progress: tqdm bars (``None``: when there is more than one batch).
    """

    num_samples: int = 4
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 384
    max_length: int = 2048
    token_budget: int = 16384
    unconditional_prompt: str = ""
    rules: DenoiseRules = field(default_factory=lambda: DenoiseRules(max_rationale_tokens=None))
    require_finished: bool = True
    seed: int = 0
    show_progress: bool | None = None

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"`num_samples` must be >= 1, got {self.num_samples}.")
        if self.temperature <= 0:
            raise ValueError("Proofs are sampled: `temperature` must be > 0.")


@dataclass
class Proof:
    """The selected proof for one pair: ``rationale`` (judge style, ``None`` when no candidate passed the rules),
    its ``score``, and every candidate with its score (``-inf`` for a candidate that failed the rules)."""

    rationale: str | None
    score: float
    candidates: list[str]
    scores: list[float]


class PreferenceProver:
    r"""
    The preference-proving model π_ψ over a causal LM.

    Args:
        model ([`~transformers.PreTrainedModel`] or `None`):
            A loaded causal LM (optionally PEFT); `None` with a `backend`.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Its tokenizer.
        config ([`ProverConfig`], *optional*):
            Sampling settings (default: `ProverConfig()`).
        prompt (`str`, *optional*, defaults to `PROVER_PROMPT`):
            The prover prompt, with `{question}`, `{first}`, `{second}`, `{label}` and `{other}`.
        label_words (`tuple[str, str]`, *optional*, defaults to `("A", "B")`):
            The label words used in prompts and rationales.
        backend ([`~trl_gram.judge.backends.vllm.VLLMBackend`], *optional*):
            A vLLM engine to sample and score on (the self-training loop's `judge_backend="vllm"`).
    """

    def __init__(
        self,
        model,
        tokenizer,
        config: ProverConfig | None = None,
        prompt: str = PROVER_PROMPT,
        label_words: tuple[str, str] = ("A", "B"),
        backend=None,
    ):
        for slot in ("{question}", "{first}", "{second}", "{label}"):
            if slot not in prompt:
                raise ValueError(f"The prover `prompt` is missing the placeholder {slot}.")
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or ProverConfig()
        self.prompt = prompt
        self.label_words = tuple(label_words)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.backend = backend  # a [`~trl_gram.judge.backends.vllm.VLLMBackend`] that samples and scores, or None

    @classmethod
    def from_vllm(cls, path: str, config: ProverConfig | None = None, *, vllm_kwargs: dict | None = None, **kwargs):
        """A prover sampling and scoring on `vllm.LLM` ([`~trl_gram.judge.backends.vllm.VLLMBackend.load`], whose
        keyword arguments `vllm_kwargs` holds, e.g. `tensor_parallel_size`); `model` is then `None`."""
        from ..judge.backends.vllm import VLLMBackend

        backend = VLLMBackend.load(path, **(vllm_kwargs or {}))
        return cls(None, backend.tokenizer, config=config, backend=backend, **kwargs)

    def release(self) -> None:
        """Free the vLLM engine (before a training stage needs the memory)."""
        if self.backend is not None:
            self.backend.release()

    @classmethod
    def from_pretrained(cls, path: str, config: ProverConfig | None = None, device=None, dtype="auto", **kwargs):
        """Load a prover saved with [`save_pretrained`] (or any causal LM folder, e.g. a base model)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        return cls(model, tokenizer, config=config, **kwargs)

    def save_pretrained(self, path: str):
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    # -----------------------------------------------------------------------------------------------------------------
    # Prompts
    # -----------------------------------------------------------------------------------------------------------------

    def _template(self, label: str) -> JudgeTemplate:
        if label not in self.label_words:
            raise ValueError(f"label {label!r} is not one of {self.label_words}.")
        other = self.label_words[1 - self.label_words.index(label)]
        text = self.prompt.replace("{label}", label).replace("{other}", other)
        return JudgeTemplate(
            text=text,
            question_field="question",
            first_field="first",
            second_field="second",
            label_words=self.label_words,
        )

    def _chat(self) -> bool:
        return uses_chat_template(self.tokenizer, None)

    def _wrap(self, user: str) -> str:
        if self._chat():
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
            )
        return user

    def _encode_prompt(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=not self._chat())
        if not ids:  # an empty context still needs one token to condition on
            ids = [
                self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
            ]
        return ids

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def prompt_ids(self, question, first, second, label: str, reserve: int = 0) -> list[int]:
        """Token ids of the prover prompt for a pair shown as (first = A, second = B) and the better ``label``; the
        fields are cut so that prompt + ``reserve`` tokens fit ``max_length``."""
        template = self._template(label)
        q, a, b = question_to_text(question), response_to_text(first), response_to_text(second)

        def count(q_, a_, b_):
            return len(self._encode_prompt(self._wrap(template.fill(q_, a_, b_)))) + reserve

        q, a, b, _ = truncate_fields(q, a, b, count, self._encode, self.tokenizer.decode, self.config.max_length)
        return self._encode_prompt(self._wrap(template.fill(q, a, b)))

    def unconditional_ids(self) -> list[int]:
        return self._encode_prompt(self._wrap(self.config.unconditional_prompt))

    # -----------------------------------------------------------------------------------------------------------------
    # Training
    # -----------------------------------------------------------------------------------------------------------------

    def training_dataset(
        self,
        dataset: Dataset,
        rationale_column: str = "rationale",
        swap: str = "random",
        seed: int = 0,
        on_invalid: str = "error",
    ) -> Dataset:
        """Tokenized prover examples (``input_ids``, ``labels``) from preference rows with rationales: prompt = pair +
        label, completion = the rationale in proof style + EOS (loss on the completion only)."""
        pairs, _ = validate_pairs(
            dataset,
            label_words=self.label_words,
            rationale_column=rationale_column,
            need_rationale=True,
            on_invalid=on_invalid,
            name="prover",
        )
        rows = {"input_ids": [], "labels": []}
        for ex in render_pairs(pairs, swap, seed, self.label_words):
            completion = self._encode(rationale_to_proof(ex["rationale"])) + [self.tokenizer.eos_token_id]
            prompt = self.prompt_ids(
                ex["question"], ex["first"], ex["second"], self.label_words[ex["label"]], reserve=len(completion)
            )
            rows["input_ids"].append(prompt + completion)
            rows["labels"].append([-100] * len(prompt) + completion)
        return Dataset.from_dict(rows)

    def train(self, dataset: Dataset, args, rationale_column: str = "rationale", peft_config=None, callbacks=None):
        """Fine-tune the prover on rows with rationales (TRL ``SFTTrainer`` with an ``SFTConfig``). The trained
        model replaces ``self.model``; returns the trainer."""
        from trl import SFTTrainer

        train = self.training_dataset(dataset, rationale_column, seed=args.seed)
        trainer = SFTTrainer(
            self.model,
            args=args,
            train_dataset=train,
            processing_class=self.tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
        trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        self.model = trainer.model
        self.model.eval()
        return trainer

    # -----------------------------------------------------------------------------------------------------------------
    # Sampling and scoring
    # -----------------------------------------------------------------------------------------------------------------

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _bar(self, batches, desc):
        show = self.config.show_progress
        return tqdm(batches, desc=desc, leave=False, disable=not (len(batches) > 1 if show is None else show))

    @torch.no_grad()
    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        return {i for i in ids if i is not None}

    @torch.no_grad()
    def sample(self, prompts: Sequence[list[int]], k: int | None = None) -> list[list[tuple[str, bool]]]:
        """``k`` sampled proofs per prompt (token ids): ``(text, finished)`` pairs, ``finished`` being whether the
        proof ended (EOS) within ``max_new_tokens``."""
        k = k or self.config.num_samples
        cfg = self.config
        if self.backend is not None:
            return self.backend.sample(
                prompts,
                k,
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                seed=cfg.seed,
            )
        out: list[list[tuple[str, bool]]] = [[] for _ in prompts]
        batches = token_budget_batches(
            [len(p) for p in prompts], max(cfg.token_budget // k, 1), extra=cfg.max_new_tokens
        )
        eos = self._eos_ids()
        self.model.eval()
        for b, batch in enumerate(self._bar(batches, "sampling proofs")):
            ids, mask, _ = left_pad([prompts[j] for j in batch], self.pad_id, self.device)
            torch.manual_seed(cfg.seed + b)
            gen = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                top_k=0,
                num_return_sequences=k,
                max_new_tokens=cfg.max_new_tokens,
                pad_token_id=self.pad_id,
            )
            new = gen[:, ids.shape[1] :]
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            finished = [any(t in eos for t in row) for row in new.tolist()]
            for row, j in enumerate(batch):
                out[j] = list(zip(texts[row * k : (row + 1) * k], finished[row * k : (row + 1) * k]))
        return out

    @torch.no_grad()
    def sequence_logprobs(self, contexts: Sequence[list[int]], continuations: Sequence[list[int]]) -> list[float]:
        """``log π(continuation | context)`` summed over the continuation tokens, for each pair (batched; only the
        continuation positions' logits are computed)."""
        if self.backend is not None:
            return self.backend.sequence_logprobs(contexts, continuations)
        seqs = [list(c) + list(z) for c, z in zip(contexts, continuations)]
        out = [0.0] * len(seqs)
        batches = token_budget_batches([len(s) for s in seqs], self.config.token_budget)
        self.model.eval()
        for batch in self._bar(batches, "scoring proofs"):
            width = max(len(continuations[j]) for j in batch)
            if width == 0:
                continue
            ids, mask, pos = left_pad([seqs[j] for j in batch], self.pad_id, self.device)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=width + 1).logits
            logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # predicts the last `width` tokens
            targets = ids[:, -width:]
            token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            for row, j in enumerate(batch):
                n = len(continuations[j])
                out[j] = float(token_logp[row, width - n :].sum()) if n else 0.0
        return out

    def score(self, questions, firsts, seconds, labels: Sequence[str], proofs: Sequence[str]) -> list[float]:
        """Eq. 5 score of each proof (proof text, as generated) for its pair and label."""
        completions = [self._encode(p) for p in proofs]
        prompts = [
            self.prompt_ids(q, a, b, lab, reserve=len(c))
            for q, a, b, lab, c in zip(questions, firsts, seconds, labels, completions)
        ]
        uncond = self.unconditional_ids()
        cond = self.sequence_logprobs(prompts, completions)
        marginal = self.sequence_logprobs([uncond] * len(completions), completions)
        return [eq5_score(c, m) if comp else -math.inf for c, m, comp in zip(cond, marginal, completions)]

    def prove(self, questions, firsts, seconds, labels: Sequence[str], k: int | None = None) -> list[Proof]:
        """Sample ``k`` proofs per pair, drop those failing the rule checks, and keep the highest Eq. 5 score."""
        k = k or self.config.num_samples
        n = len(questions)
        prompts = [
            self.prompt_ids(q, a, b, lab, reserve=self.config.max_new_tokens)
            for q, a, b, lab in zip(questions, firsts, seconds, labels)
        ]
        samples = self.sample(prompts, k)
        flat = [(i, text) for i in range(n) for text, _ in samples[i]]
        scores = self.score(
            [questions[i] for i, _ in flat],
            [firsts[i] for i, _ in flat],
            [seconds[i] for i, _ in flat],
            [labels[i] for i, _ in flat],
            [s for _, s in flat],
        )
        count = lambda text: len(self._encode(text))  # noqa: E731
        results = []
        offset = 0
        for i in range(n):
            cands = [text for text, _ in samples[i]]
            cand_scores = scores[offset : offset + len(cands)]
            offset += len(cands)
            for j, (text, finished) in enumerate(samples[i]):
                if self.config.require_finished and not finished:
                    cand_scores[j] = -math.inf  # cut off by max_new_tokens: not a whole proof
                    continue
                cand = Candidate(label=labels[i], rationale=proof_to_rationale(text))
                if check_candidate(cand, self.config.rules, self.label_words, count) is not None:
                    cand_scores[j] = -math.inf
            best = max(range(len(cands)), key=lambda j: cand_scores[j]) if cands else None
            if best is None or cand_scores[best] == -math.inf:
                results.append(Proof(None, -math.inf, cands, cand_scores))
            else:
                results.append(Proof(proof_to_rationale(cands[best]), cand_scores[best], cands, cand_scores))
        return results
