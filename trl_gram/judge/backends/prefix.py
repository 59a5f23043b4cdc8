"""[`PrefixBackend`]: a judge on the prefix-sharing engine ([`~trl_gram.judge.backends.prefix_engine.PrefixEngine`]),
with a [`~trl_gram.judge.backends.transformers.TransformersBackend`] to fall back on when the engine cannot
reproduce the model (see [`~trl_gram.judge.backends.make_backend`] for when that happens)."""

from __future__ import annotations

from types import SimpleNamespace

from .base import GenerationSettings, SlotGeneration, weights_fingerprint
from .prefix_engine import PrefixEngine


class PrefixBackend:
    """Shared-prefix reuse and a lean decoding loop over a transformers causal LM: the same probabilities as
    [`~trl_gram.judge.backends.transformers.TransformersBackend`] up to float rounding, much less work on batches
    that share template, question or responses.

    Args:
        model ([`~transformers.PreTrainedModel`]): A loaded causal LM.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]): Its tokenizer.
        pad_id (`int`): Padding token id.
        token_budget (`int`): Rows × private tokens per batched pass.
        max_batch_rows (`int` or `None`): Upper bound of rows per pass.
        fallback ([`~trl_gram.judge.backends.transformers.TransformersBackend`] or `None`): Used when the engine
            does not support the model (self-check) or, generating, its generation config; `None` raises instead.
    """

    name = "prefix"

    def __init__(self, model, tokenizer, pad_id: int, token_budget=32768, max_batch_rows=None, fallback=None):
        self.model = model
        self.tokenizer = tokenizer
        self.token_budget = token_budget
        self.max_batch_rows = max_batch_rows
        self.fallback = fallback
        self.engine = PrefixEngine(model, tokenizer, self._engine_config(), pad_id)

    def _engine_config(self, settings: GenerationSettings | None = None):
        s = settings or GenerationSettings(max_new_tokens=1)
        return SimpleNamespace(
            token_budget=self.token_budget,
            max_batch_rows=self.max_batch_rows,
            max_new_tokens=s.max_new_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
        )

    @property
    def device(self):
        return self.engine.device

    def fingerprint(self):
        return weights_fingerprint(self.model)

    def release(self) -> None:
        self.model = self.engine = self.fallback = None

    def supports(self, generate: bool = False, sample: bool = False) -> bool:
        return self.engine.supports(generate=generate, sample=sample)

    def _delegate(self, generate: bool, sample: bool = False):
        self.engine.config = self._engine_config()
        if self.engine.supports(generate=generate, sample=sample):
            return None
        if self.fallback is None:
            raise ValueError(
                "`backend='prefix'` but the prefix engine does not support this model or its generation config (see "
                "the log); use `backend='auto'` or `'transformers'`."
            )
        return self.fallback

    def slot_logits(self, prompts, label_ids, *, progress=None):
        other = self._delegate(generate=False)
        if other is not None:
            return other.slot_logits(prompts, label_ids, progress=progress)
        return self.engine.last_logits([list(p) for p in prompts], label_ids, progress=progress)

    def generate_to_slot(
        self, prompts, label_ids, *, answer_open, forced_text, settings: GenerationSettings, progress=None
    ) -> list[SlotGeneration]:
        other = self._delegate(generate=True, sample=settings.sample)
        if other is not None:
            return other.generate_to_slot(
                prompts,
                label_ids,
                answer_open=answer_open,
                forced_text=forced_text,
                settings=settings,
                progress=progress,
            )
        self.engine.config = self._engine_config(settings)
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731

        def forced_tokens(gen):
            if not settings.force_answer:
                return None
            return self.tokenizer.encode(forced_text(decode(gen)), add_special_tokens=False)

        out = self.engine.generate(
            [list(p) for p in prompts],
            label_ids,
            answer_open=answer_open,
            sample=settings.sample,
            seed=settings.seed,
            forced_tokens=forced_tokens,
            progress=progress,
        )
        from .slots import AT_SLOT

        return [SlotGeneration(decode(gen), slot, state == AT_SLOT) for gen, state, slot in out]
