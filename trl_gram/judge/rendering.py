"""Rendering a judge prompt, in one place every backend's tokens come from: template fill, chat wrapping (system
prompt, `chat_template_kwargs`, the mode's reply prefix), encoding and truncation to `max_length`, plus the label
tokens read at the slot and the forced answer continuation."""

from __future__ import annotations

from transformers.utils import logging

from ..batching import truncate_fields
from ..templates import JudgeTemplate, TextOrMessages, get_template, question_to_text, response_to_text

logger = logging.get_logger(__name__)

JUDGE_MODES = ("reason", "direct")


def forced_text(text: str, template: JudgeTemplate) -> str:
    """The rationale continued to the answer slot: cut after the first answer tag (plus a newline), or followed by the
    forced answer prefix when there is none."""
    cut = text.lower().find(template.answer_open.lower())
    if cut >= 0:
        return text[: cut + len(template.answer_open)] + "\n"
    return text + template.forced_answer_suffix()


class PromptRenderer:
    """Turns (question, first, second) into the exact token ids a judge reads, for one mode.

    Args:
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]): The judge's tokenizer.
        config ([`~trl_gram.judge.GramJudgeConfig`]): Read for `template`, `system_prompt`, `chat_template_kwargs`,
            `reason_prefix` and `max_length` (read at each call, so later changes to the config apply).
    """

    def __init__(self, tokenizer, config):
        self.tokenizer = tokenizer
        self.config = config
        self._templates: dict[str, JudgeTemplate] = {}
        self._label_ids: dict[tuple, tuple[list[int], list[int]]] = {}
        self._warned_truncation = False

    # -- templates and label tokens -----------------------------------------------------------------------------------
    def template_for(self, mode: str) -> JudgeTemplate:
        if mode not in JUDGE_MODES:
            raise ValueError(f"`mode` must be one of {JUDGE_MODES}, got {mode!r}.")
        key = mode
        if key not in self._templates:
            template = get_template(self.config.template, mode)
            if mode == "reason" and not template.reasoning:
                raise ValueError("`mode='reason'` needs a reasoning template (e.g. 'gram-r2'); got a direct one.")
            self.label_token_ids(template)
            self._templates[key] = template
        return self._templates[key]

    def label_token_ids(self, template: JudgeTemplate) -> tuple[list[int], list[int]]:
        """Token ids that spell each label word at the slot: the bare word (must be one token) and, with
        `label_scoring="merged"` and when it is one token too, the word with a leading space."""
        words = tuple(template.label_words)
        key = (*words, self.config.label_scoring)
        if key not in self._label_ids:
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
            self._label_ids[key] = (groups[0], groups[1])
        return self._label_ids[key]

    # -- text --------------------------------------------------------------------------------------------------------
    def uses_chat_template(self, template: JudgeTemplate) -> bool:
        if template.use_chat_template is not None:
            return template.use_chat_template
        return getattr(self.tokenizer, "chat_template", None) is not None

    def _wrap(self, filled: str, template: JudgeTemplate, mode: str) -> str:
        cfg = self.config
        text = filled
        if self.uses_chat_template(template):
            messages = [{"role": "user", "content": filled}]
            if cfg.system_prompt is not None:
                messages.insert(0, {"role": "system", "content": cfg.system_prompt})
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **cfg.chat_template_kwargs
            )
        return text + (template.direct_prefix if mode == "direct" else cfg.reason_prefix)

    def _encode(self, text: str, template: JudgeTemplate) -> list[int]:
        # A chat template writes its own special tokens; plain text gets the tokenizer's (e.g. BOS).
        return self.tokenizer.encode(text, add_special_tokens=not self.uses_chat_template(template))

    def text(self, question: TextOrMessages, first: TextOrMessages, second: TextOrMessages, mode: str) -> str:
        """The exact prompt text for one order (`first` shown as A), before truncation."""
        template = self.template_for(mode)
        filled = template.fill(question_to_text(question), response_to_text(first), response_to_text(second))
        return self._wrap(filled, template, mode)

    def encode(self, question: str, first: str, second: str, mode: str) -> tuple[list[int], bool]:
        """Token ids of the prompt for one order, truncated to `max_length` inside the responses (then the
        question), never in the template; and whether it was truncated."""
        template = self.template_for(mode)

        def count(q, a, b):
            return len(self._encode(self._wrap(template.fill(q, a, b), template, mode), template))

        q, a, b, cut = truncate_fields(
            question,
            first,
            second,
            count,
            encode=self.continuation,
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

    def continuation(self, text: str) -> list[int]:
        """Token ids of text that continues a prompt (no special tokens added)."""
        return self.tokenizer.encode(text, add_special_tokens=False)
