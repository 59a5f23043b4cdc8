"""Judge prompt templates and the rendering of (question, response, response) into judge prompts.

The two released templates are stored byte-identical to the authors' files (see ``templates/NOTICE``): a released
checkpoint only behaves as published when its prompt matches exactly. Users can bring their own template with the same
placeholders and their own label words.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from typing import Any

Message = dict[str, Any]
TextOrMessages = str | list[Message]


def _read_packaged(name: str) -> str:
    with resources.files("trl_gram").joinpath("templates").joinpath(name).open("r", encoding="utf-8", newline="") as f:
        return f.read()


GRAM_R2_PROMPT: str = _read_packaged("gram_r2_pairwise_prompt.txt")
"""The GRAM-R² reasoning template (placeholders ``{user_input}``, ``{response_1}``, ``{response_2}``)."""

GRAM_V1_PROMPT: str = _read_packaged("gram_v1_direct_prompt.txt")
"""The GRAM v1 direct template (placeholders ``{input}``, ``{response_a}``, ``{response_b}``)."""


@dataclass(frozen=True)
class JudgeTemplate:
    r"""
    A pairwise judge prompt and how its verdict is read.

    Args:
        text (`str`):
            The prompt text. It must contain the three placeholders named by `question_field`, `first_field` and
            `second_field` (written `{name}`); nothing else in it is interpreted, so literal braces are safe.
        question_field (`str`):
            Placeholder of the user question.
        first_field (`str`):
            Placeholder of the response shown as "A".
        second_field (`str`):
            Placeholder of the response shown as "B".
        label_words (`tuple[str, str]`, *optional*, defaults to `("A", "B")`):
            The two label words, first for the response shown first. Each must be a single token for the judge's
            tokenizer (checked when a judge is built).
        reasoning (`bool`, *optional*, defaults to `True`):
            Whether the judge writes a rationale before the label (GRAM-R² style) or answers directly.
        answer_open (`str`, *optional*, defaults to `"<answer>"`):
            Tag that opens the answer slot in reasoning output.
        answer_close (`str`, *optional*, defaults to `"</answer>"`):
            Tag that closes it.
        think_open (`str`, *optional*, defaults to `"<think>"`):
            Tag that opens the rationale.
        think_close (`str`, *optional*, defaults to `"</think>"`):
            Tag that closes the rationale.
        direct_prefix (`str`, *optional*, defaults to `""`):
            Text appended after the chat template's generation prompt when the label is read directly (no
            generation). Empty for GRAM v1, whose prompt ends at the label slot.
        use_chat_template (`bool`, *optional*):
            Send the prompt as one user message through the tokenizer's chat template (`None`: when the tokenizer has
            one).
    """

    text: str
    question_field: str
    first_field: str
    second_field: str
    label_words: tuple[str, str] = ("A", "B")
    reasoning: bool = True
    answer_open: str = "<answer>"
    answer_close: str = "</answer>"
    think_open: str = "<think>"
    think_close: str = "</think>"
    direct_prefix: str = ""
    use_chat_template: bool | None = None

    def __post_init__(self):
        for arg in ("question_field", "first_field", "second_field"):
            name = getattr(self, arg)
            if "{" + name + "}" not in self.text:
                raise ValueError(
                    f"template `text` is missing the placeholder '{{{name}}}' (argument `{arg}`); a judge template "
                    f"needs '{{{self.question_field}}}', '{{{self.first_field}}}' and '{{{self.second_field}}}'."
                )
        if len(self.label_words) != 2 or any(not isinstance(w, str) or not w.strip() for w in self.label_words):
            raise ValueError(f"`label_words` must be two non-empty strings, got {self.label_words!r}.")
        if self.label_words[0] == self.label_words[1]:
            raise ValueError(f"`label_words` must differ, got {self.label_words!r}.")

    def replace(self, **changes) -> JudgeTemplate:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def fill(self, question: str, first: str, second: str) -> str:
        """The prompt text with the three placeholders substituted (single pass, so a response that itself contains
        a placeholder string is never substituted again)."""
        slots = {
            "{" + self.question_field + "}": question,
            "{" + self.first_field + "}": first,
            "{" + self.second_field + "}": second,
        }
        out, i, text = [], 0, self.text
        while i < len(text):
            for key, value in slots.items():
                if text.startswith(key, i):
                    out.append(value)
                    i += len(key)
                    break
            else:
                j = text.find("{", i + 1)
                j = len(text) if j < 0 else j
                out.append(text[i:j])
                i = j
        return "".join(out)

    @property
    def answer_prefix(self) -> str:
        """What a well-formed reasoning output has just before the label: ``<answer>`` and a newline."""
        return self.answer_open + "\n"

    def forced_answer_suffix(self) -> str:
        """Text appended to an unfinished rationale to force the answer slot."""
        return "\n" + self.think_close + "\n" + self.answer_prefix


GRAM_R2_TEMPLATE = JudgeTemplate(
    text=GRAM_R2_PROMPT,
    question_field="user_input",
    first_field="response_1",
    second_field="response_2",
    reasoning=True,
)
"""GRAM-R²: rationale in ``<think>…</think>``, then ``<answer>\\nA\\n</answer>``."""

GRAM_V1_TEMPLATE = JudgeTemplate(
    text=GRAM_V1_PROMPT,
    question_field="input",
    first_field="response_a",
    second_field="response_b",
    reasoning=False,
)
"""GRAM v1: no generation, label read at the last position after ``#Preferred: ``."""

GRAM_R2_DIRECT_TEMPLATE = GRAM_R2_TEMPLATE.replace(reasoning=False, direct_prefix="<think>\n\n</think>\n<answer>\n")
"""The GRAM-R² prompt read directly: an empty rationale is prefilled and the label read at the answer slot."""

TEMPLATES: dict[str, JudgeTemplate] = {
    "gram-r2": GRAM_R2_TEMPLATE,
    "gram-v1": GRAM_V1_TEMPLATE,
    "gram-r2-direct": GRAM_R2_DIRECT_TEMPLATE,
}


def get_template(template: str | JudgeTemplate | None, mode: str = "reason") -> JudgeTemplate:
    """Resolve a template argument: a [`JudgeTemplate`], a registered name (``"gram-r2"``, ``"gram-v1"``,
    ``"gram-r2-direct"``), or ``None`` for the default of ``mode`` (GRAM-R² for ``reason``, GRAM v1 for ``direct``)."""
    if template is None:
        if mode not in ("reason", "direct"):
            raise ValueError(f"`mode` must be 'reason' or 'direct', got {mode!r}.")
        return GRAM_R2_TEMPLATE if mode == "reason" else GRAM_V1_TEMPLATE
    if isinstance(template, JudgeTemplate):
        return template
    if isinstance(template, str) and template in TEMPLATES:
        return TEMPLATES[template]
    raise ValueError(f"Unknown `template` {template!r}: pass a JudgeTemplate or one of {sorted(TEMPLATES)}.")


# --------------------------------------------------------------------------------------------------------------------
# Conversational inputs
# --------------------------------------------------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks: keep the text parts
        parts = [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type", "text") == "text"]
        return "".join(p for p in parts if isinstance(p, str))
    return str(content)


def _check_messages(messages: Any, arg: str) -> list[Message]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise ValueError(
            f"`{arg}` must be a string or a list of {{'role', 'content'}} messages, got {messages!r:.120}."
        )
    return messages


def question_to_text(question: TextOrMessages, arg: str = "question") -> str:
    """Render a question for the judge. A string is returned as is. A conversation keeps its last user turn as the
    question and earlier turns (system included) as context, each on its own paragraph as ``Role: content``; a single
    user turn gives just its content (a system message alone is not context worth judging)."""
    if isinstance(question, str):
        return question
    messages = _check_messages(question, arg)
    turns = [m for m in messages if m.get("role") != "system"]
    if not turns:
        raise ValueError(f"`{arg}` has no user turn: {question!r:.120}.")
    last_user = max((i for i, m in enumerate(turns) if m.get("role") == "user"), default=None)
    if last_user is None:
        raise ValueError(f"`{arg}` has no user turn: {question!r:.120}.")
    if len(turns) == 1:
        return _content_text(turns[0].get("content"))
    lines = [f"{str(m['role']).capitalize()}: {_content_text(m.get('content'))}" for m in messages]
    return "\n\n".join(lines)


def response_to_text(response: TextOrMessages, arg: str = "response") -> str:
    """Render a response: a string as is; a list of messages (a TRL conversational completion) as the text of its
    assistant turns joined by blank lines."""
    if isinstance(response, str):
        return response
    messages = _check_messages(response, arg)
    texts = [_content_text(m.get("content")) for m in messages if m.get("role") in ("assistant", None)]
    if not texts:
        texts = [_content_text(m.get("content")) for m in messages]
    return "\n\n".join(texts)


def is_conversational(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and isinstance(value[0], dict) and "role" in value[0]
