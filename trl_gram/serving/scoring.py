"""Reading reward requests item by item: each completion becomes an [`Item`] that is either ready to judge or carries
the reason it cannot be (``error``), so one bad sample never costs the rest of its batch.

Two request shapes:

* TRL-shaped ``/reward``: ``prompts``, ``completions``, optional ``references`` (strings or chat messages);
* OpenRLHF's ``/get_reward``: ``query`` (prompt + response as one decoded string), ``prompts``, optional ``labels``.

A request is refused as a whole (``ValueError``, answered 400) only when it is malformed as a whole: a required list
missing or of the wrong type, lists of different lengths. Everything about one item (a wrong type, a lone surrogate,
a message without ``content``, a query that does not contain its prompt, a label that is a dict) is that item's error,
named after the client's own field (``labels[3]``, ``references[0]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..pairing import has_reference, prompt_key


@dataclass
class Item:
    """One completion to score.

    Args:
        prompt: The question for the judge (text or chat messages), ``None`` when unusable.
        completion: The response to score.
        reference: What to compare it with (``None``: within its prompt's group).
        error: Why the item cannot be scored (then it gets the failure value), else ``None``.
        key: Its prompt's group key when the prompt could be read (also for an item with an error: a batched
            request's group that lost a sample is still whole in that request).
    """

    prompt: object = None
    completion: object = None
    reference: object = None
    error: str | None = None
    key: str | None = None


class ItemError(ValueError):
    """A problem with one item; the message names the client's field."""


def check_text(value: str, where: str) -> str:
    """``value`` if it encodes as UTF-8 (JSON allows lone surrogates such as ``"\\ud800"``; tokenizers do not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ItemError(f"`{where}` contains a lone surrogate (text that is not valid Unicode).") from None
    return value


def text_or_messages(value, where: str):
    """A string, or chat messages: a non-empty list of objects with string ``role`` and string ``content``."""
    if isinstance(value, str):
        return check_text(value, where)
    if isinstance(value, list) and value:
        for k, m in enumerate(value):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise ItemError(f"`{where}[{k}]` must be an object with a string `role` and a string `content`.")
            if not isinstance(m.get("content"), str):
                raise ItemError(f"`{where}[{k}]` has no string `content`.")
            check_text(m["role"], f"{where}[{k}].role")
            check_text(m["content"], f"{where}[{k}].content")
        return value
    raise ItemError(f"`{where}` must be a string or a non-empty list of {{role, content}} messages.")


def as_reference(value, where: str):
    """A reference or label: text (blank means none), chat messages, or a number (compared as its text)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float, list)):
        raise ItemError(f"`{where}` must be a string (a reference answer) or a number, got {type(value).__name__}.")
    if isinstance(value, (int, float)):
        return str(value)
    return text_or_messages(value, where)


def field(body: dict, name: str, kind=list, required: bool = True):
    """A top-level field of the body; a missing or mistyped one makes the whole request malformed."""
    value = body.get(name)
    if value is None:
        if required:
            raise ValueError(f"Missing field `{name}`.")
        return None
    if not isinstance(value, kind):
        raise ValueError(f"Field `{name}` must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}.")
    return value


def _same_length(body, names):
    lists = {n: body[n] for n in names if isinstance(body.get(n), list)}
    first = next(iter(lists))
    for n, v in lists.items():
        if len(v) != len(lists[first]):
            raise ValueError(f"`{n}` has {len(v)} items but `{first}` has {len(lists[first])}; pass one per item.")


def reward_items(body: dict) -> list[Item]:
    """Items of a TRL-shaped ``/reward`` request."""
    prompts, completions = field(body, "prompts"), field(body, "completions")
    references = field(body, "references", required=False)
    _same_length(body, ("prompts", "completions", "references"))
    items = []
    for i in range(len(completions)):
        item = Item()
        try:
            item.prompt = text_or_messages(prompts[i], f"prompts[{i}]")
            item.key = prompt_key(item.prompt)
            if completions[i] is None:
                raise ItemError(f"`completions[{i}]` is null.")
            item.completion = text_or_messages(completions[i], f"completions[{i}]")
            if references is not None:
                item.reference = as_reference(references[i], f"references[{i}]")
        except ItemError as e:
            item.error = str(e)
        items.append(item)
    return items


def strip_tokens(text: str, tokens) -> str:
    for t in tokens:
        text = text.replace(t, "")
    return text


def _overlap(prompt: str, query: str) -> int:
    """Length of the longest suffix of ``prompt`` that ``query`` starts with (a prompt cut from the left)."""
    head = query[: len(prompt)]
    s = head + "\0" + prompt  # prefix function: the longest prefix of `head` that ends `prompt`
    pi = [0] * len(s)
    for k in range(1, len(s)):
        j = pi[k - 1]
        while j and s[k] != s[j]:
            j = pi[j - 1]
        if s[k] == s[j]:
            j += 1
        pi[k] = j
    return pi[-1]


def _common_head(prompt: str, query: str) -> int:
    """Length of the longest start of ``prompt`` that ``query`` starts with (a prompt cut from the right)."""
    n = 0
    for a, b in zip(prompt, query):
        if a != b:
            break
        n += 1
    return n


MIN_OVERLAP = 8

# Role markup of the common chat templates, once their end-of-turn tokens are stripped: (turn start, role) pairs.
# Each family is recognised only when the prompt starts with one of its turn markers (after a BOS token).
_BOS = re.compile(r"^(?:\s|<s>|<bos>|<\|begin_of_text\|>|<\|startoftext\|>)*")
_ROLE = {"human": "user", "model": "assistant", "bot": "assistant"}
CHAT_MARKUP = {
    "chatml": re.compile(r"<\|im_start\|>(system|user|assistant|tool)[ \t]*\n?"),
    "llama-3": re.compile(r"<\|start_header_id\|>(system|user|assistant|ipython|tool)<\|end_header_id\|>\s*"),
    "gemma": re.compile(r"<start_of_turn>(system|user|model)[ \t]*\n?"),
    "phi": re.compile(r"<\|(system|user|assistant)\|>[ \t]*\n?"),
    "mistral": re.compile(r"\[(INST|/INST)\]\s*"),
    "human-assistant": re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]*"),
}


def chat_messages(text: str) -> list[dict] | None:
    """The turns of a prompt rendered with a common chat template (ChatML, Llama 3, Gemma, Phi, Mistral
    ``[INST]``, ``Human:``/``Assistant:``) as ``{role, content}`` messages, the empty assistant turn that opens the
    answer dropped; ``None`` when ``text`` does not start with such markup (it is then judged as it is)."""
    body = text[_BOS.match(text).end() :]
    for name, marker in CHAT_MARKUP.items():
        found = list(marker.finditer(body))
        if not found or found[0].start() != 0 or (name == "human-assistant" and not body.startswith("Human:")):
            continue
        messages = []
        for k, m in enumerate(found):
            end = found[k + 1].start() if k + 1 < len(found) else len(body)
            role = m.group(1).lower()
            role = {"inst": "user", "/inst": "assistant"}.get(role, _ROLE.get(role, role))
            messages.append({"role": role, "content": body[m.end() : end].strip()})
        if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
            messages.pop()
        if any(m["role"] == "user" and m["content"] for m in messages):
            return messages
    return None


def judge_question(prompt: str):
    """What the judge reads of an OpenRLHF prompt: its chat turns when it carries a chat template's role markup (the
    judge then sees the question as a TRL conversational prompt, without the policy's markup), else the text."""
    return chat_messages(prompt) or prompt.strip()


def split_query(query: str, prompt: str, tokens, i: int) -> tuple[object, str]:
    """Question and response of OpenRLHF's ``query[i]`` (prompt + response) given ``prompts[i]``.

    Special-token strings in ``tokens`` are removed from both first. When the query does not contain the whole
    prompt, it holds a cut prompt: its end (current OpenRLHF keeps the last ``prompt_max_len`` tokens) or its start
    (OpenRLHF 0.9.0 cuts with the tokenizer's ``truncation_side``, usually ``right``). The response starts after the
    longer of the prompt's end and start that the query begins with (at least [`MIN_OVERLAP`] characters, or the
    whole prompt when shorter). The judge still reads the whole prompt ([`judge_question`]).
    """
    if not isinstance(query, str):
        raise ItemError(f"`query[{i}]` must be a string, got {type(query).__name__}.")
    if not isinstance(prompt, str):
        raise ItemError(f"`prompts[{i}]` must be a string, got {type(prompt).__name__}.")
    query = strip_tokens(check_text(query, f"query[{i}]"), tokens)
    prompt = strip_tokens(check_text(prompt, f"prompts[{i}]"), tokens)
    at = query.find(prompt)
    if at >= 0:
        return judge_question(prompt), query[at + len(prompt) :].strip()
    cut = query.lstrip("\ufffd")  # a cut through a multi-byte character decodes as U+FFFD
    n = max(_overlap(prompt, cut), _common_head(prompt, query))
    if n >= min(MIN_OVERLAP, len(prompt)) and n > 0:
        rest = cut[n:] if _overlap(prompt, cut) == n else query[n:]
        return judge_question(prompt), rest.lstrip("\ufffd").strip()
    raise ItemError(
        f"`query[{i}]` contains neither `prompts[{i}]`, nor its end, nor its start: cannot tell the response apart "
        "(is `prompts` the text the policy was given?)."
    )


def openrlhf_items(body: dict, tokens) -> list[Item]:
    """Items of an OpenRLHF ``/get_reward`` request (``query``, ``prompts``, optional ``labels``)."""
    queries = field(body, "query")
    prompts = field(body, "prompts", required=False)
    if prompts is None:
        raise ValueError("Missing field `prompts`: the judge needs each prompt to tell the response apart.")
    labels = field(body, "labels", required=False)
    _same_length(body, ("query", "prompts", "labels"))
    items = []
    for i in range(len(queries)):
        item = Item()
        if isinstance(prompts[i], str):
            item.key = prompt_key(strip_tokens(prompts[i], tokens).strip())
        try:
            item.prompt, item.completion = split_query(queries[i], prompts[i], tokens, i)
            if labels is not None:
                item.reference = as_reference(labels[i], f"labels[{i}]")
        except ItemError as e:
            item.error = str(e)
        items.append(item)
    return items


def is_grouped(item: Item) -> bool:
    """Whether the item is compared within its prompt's group (no error, no reference)."""
    return item.error is None and not has_reference(item.reference)
