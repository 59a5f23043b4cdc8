"""How :class:`~trl_gram.judge.GramJudge` uses the fast engine: the engine choice (``GramJudgeConfig.engine``), the LRU
cache of greedy runs (``cache_size``) and reason mode on :class:`~trl_gram.fast_engine.FastEngine` (same
``(text, slot_logits, state, prompt)`` results as the plain path)."""

from __future__ import annotations

import dataclasses

from tqdm.auto import tqdm

from .fast_engine import FastEngine
from .run_cache import RunCache

__all__ = ["FastJudgingMixin", "RunCache", "forced_text"]


def forced_text(text: str, template) -> str:
    """The rationale continued to the answer slot: cut after the first answer tag (plus a newline), or followed by the
    forced answer prefix when there is none."""
    cut = text.lower().find(template.answer_open.lower())
    if cut >= 0:
        return text[: cut + len(template.answer_open)] + "\n"
    return text + template.forced_answer_suffix()


class FastJudgingMixin:
    """Methods of :class:`~trl_gram.judge.GramJudge` around the fast engine."""

    def _run_cached(self, items, mode, votes, seed, show_progress) -> list:
        """Run the items, taking greedy runs from (and adding them to) the LRU cache of identical prompts."""
        template = self.template_for(mode)
        cacheable = self._cache.size > 0 and (mode == "direct" or votes == 1)
        keys = cached = None
        if cacheable:
            self._cache.check_model(self.model)
            cfg = self.config
            setting = (mode, template.label_words, template.answer_open, cfg.max_new_tokens, cfg.force_answer)
            keys = [(setting, tuple(ids)) for _, _, ids in items]
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
        return [dataclasses.replace(run, order=order) for run, (_, order, _) in zip(cached, items)]

    def _engine(self, generate: bool = False, sample: bool = False) -> FastEngine | None:
        """The fast engine when configured and supported for this model (see ``GramJudgeConfig.engine``)."""
        if self.config.engine == "plain":
            return None
        if self.config.engine == "auto" and self.device.type != "cpu":
            # Measured on an H200 (bf16, SmolLM2-135M shape, GRPO-like batch): the fast engine's many small
            # shared-prefix passes ran direct mode at 35 pairs/s against 277 for one padded batch; on accelerators
            # the plain batched path wins, the fast engine is for CPUs.
            return None
        if self._fast is None or self._fast.model is not self.model:
            self._fast = FastEngine(self.model, self.tokenizer, self.config, self.pad_id)
        self._fast.config = self.config
        if self._fast.supports(generate=generate, sample=sample):
            return self._fast
        if self.config.engine == "fast":
            raise ValueError(
                "`engine='fast'` but the fast engine does not support this model or its generation config (see the "
                "log); use `engine='auto'` or `'plain'`."
            )
        return None

    def _fast_progress(self, items, show_progress, desc):
        show = self.config.show_progress if show_progress is None else show_progress
        if show is None:
            show = sum(len(ids) for _, _, ids in items) > self.config.token_budget
        return tqdm(total=len(items), desc=desc, disable=not show, leave=False)

    def _reason_fast(self, engine: FastEngine, items, sample, seed, show_progress, template):
        """Reason mode on the fast engine; same ``(text, slot_logits, state, prompt)`` results as the plain one."""
        cfg = self.config
        first_ids, second_ids = self._label_token_ids(template)

        def forced_tokens(gen):
            if not cfg.force_answer:
                return None
            text = self.tokenizer.decode(gen, skip_special_tokens=True)
            return self.tokenizer.encode(forced_text(text, template), add_special_tokens=False)

        with self._fast_progress(items, show_progress, "judging (reason)") as bar:
            out = engine.generate(
                [ids for _, _, ids in items],
                first_ids + second_ids,
                answer_open=template.answer_open,
                sample=sample,
                seed=seed,
                forced_tokens=forced_tokens,
                progress=bar,
            )
        results = []
        for (_, _, prompt), (gen, state, slot_logits) in zip(items, out):
            text = cfg.reason_prefix + self.tokenizer.decode(gen, skip_special_tokens=True)
            results.append((text, slot_logits, state, prompt))
        return results
