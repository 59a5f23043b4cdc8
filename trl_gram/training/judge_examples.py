"""From preference rows to tokenized judge training examples.

Three steps, each usable alone:

1. [`validate_pairs`] reads rows in one of the accepted layouts and returns canonical pairs
   (``question``, ``first``, ``second``, ``label`` = index of the better one, ``rationale``), raising a ``ValueError``
   that names the row, or skipping and counting bad rows.
2. [`render_pairs`] decides the order each pair is shown in (seeded and exactly balanced, both orders, or as
   given) and rewrites rationales for swapped pairs.
3. [`JudgeExampleBuilder`] tokenizes one shown pair into ``input_ids``/``labels`` exactly as the judge reads it at
   inference: the prompt is the judge prompt (chat template applied, ``add_generation_prompt=True``); the completion
   is ``format_verdict(rationale, label)`` plus EOS in ``reason`` mode and the label token alone in ``direct`` mode.
   Prompt and completion are tokenized separately and concatenated (so the label token is exactly the one the judge
   reads, e.g. after GRAM v1's trailing ``"#Preferred: "``), and the label slot is marked
   ([`~trl_gram.training.losses.slot_marker`]) for the label-smoothing loss.

Accepted layouts: ``prompt``/``chosen``/``rejected`` (``chosen`` is better; TRL's plain or conversational
preference format, and the implicit-prompt format whose ``chosen``/``rejected`` are whole conversations), or
``prompt``/``response_a``/``response_b``/``label`` with ``label`` one of the template's label words.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from datasets import Dataset
from transformers.utils import logging

from ..batching import truncate_fields
from ..judge.judge import GramJudgeConfig
from ..judge.rendering import PromptRenderer
from ..templates import JudgeTemplate, is_conversational, question_to_text, response_to_text
from .denoise import before_first_reference, first_sentences, rationale_label, swap_label_mentions
from .losses import slot_marker

logger = logging.get_logger(__name__)

PRETRAIN_PROMPT = "[User Question]\n{question}\n\n"
PRETRAIN_COMPLETION = (
    "[The Start of Assistant A's Answer]\n{first}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{second}\n[The End of Assistant B's Answer]"
)


def _split_implicit_prompt(chosen: list, rejected: list) -> tuple[list, list, list]:
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    return chosen[:n], chosen[n:], rejected[n:]


def detect_layout(columns: list[str], need_label: bool = True) -> str:
    """``"chosen_rejected"``, ``"implicit"`` (no prompt column) or ``"labeled"``; a ``ValueError`` naming the
    missing column otherwise."""
    cols = set(columns)
    if {"chosen", "rejected"} <= cols:
        return "chosen_rejected" if "prompt" in cols else "implicit"
    if {"response_a", "response_b"} <= cols:
        for col in ("prompt",) + (("label",) if need_label else ()):
            if col not in cols:
                raise ValueError(
                    f"The dataset has `response_a`/`response_b` but no `{col}` column (has {sorted(cols)})."
                )
        return "labeled"
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in cols]
    raise ValueError(
        f"The dataset is missing the column(s) {missing}: expected `prompt`/`chosen`/`rejected` (optionally a "
        f"rationale column) or `prompt`/`response_a`/`response_b`/`label`; it has {sorted(cols)}."
    )


def validate_pairs(
    dataset,
    *,
    label_words: tuple[str, str] = ("A", "B"),
    rationale_column: str | None = None,
    need_label: bool = True,
    need_rationale: bool = False,
    check_rationale: bool = True,
    on_invalid: str = "error",
    name: str = "train",
    rationale_sentences: int | None = None,
    rationale_before_reference: bool = False,
) -> tuple[list[dict], Counter]:
    """Canonical pairs from preference rows, and the count of skipped rows per reason.

    Each pair is ``{"question", "first", "second", "label", "rationale", "row"}`` with ``question`` a string or a
    conversation (rendered later), ``first``/``second`` response texts, ``label`` the index (0/1) of the better one
    (``None`` when ``need_label=False`` and the layout has none) and ``rationale`` a string or ``None``: with
    ``rationale_sentences``, its first sentences only ([`~trl_gram.training.denoise.first_sentences`]), and with
    ``rationale_before_reference``, only what precedes its first reference to a response
    ([`~trl_gram.training.denoise.before_first_reference`]; a row whose rationale opens with one is skipped and
    counted as ``rationale_opens_with_reference``, whatever ``on_invalid``), both cut before the checks.
    """
    if on_invalid not in ("error", "skip"):
        raise ValueError(f"`on_invalid` must be 'error' or 'skip', got {on_invalid!r}.")
    columns = list(dataset.column_names or [])
    layout = detect_layout(columns, need_label)
    if need_rationale and (rationale_column is None or rationale_column not in columns):
        raise ValueError(
            f"`reason` mode needs a rationale column `{rationale_column}`, which the {name} dataset lacks (it has "
            f"{sorted(columns)}). Set `rationale_column`, synthesize rationales (PreferenceProver), or use "
            "mode='direct'."
        )
    pairs, skipped = [], Counter()

    def bad(row: int, reason: str, detail: str):
        if on_invalid == "error":
            raise ValueError(
                f"Row {row} of the {name} dataset: {detail}. Fix or drop the row, or set `on_invalid_row='skip'` to "
                "skip such rows (they are counted)."
            )
        skipped[reason] += 1

    for i, row in enumerate(dataset):
        if layout == "labeled":
            cols = ("prompt", "response_a", "response_b") + (("label",) if need_label else ())
        else:
            cols = ("chosen", "rejected") + (("prompt",) if layout == "chosen_rejected" else ())
        missing = [c for c in cols if row.get(c) is None]
        if missing:
            bad(i, "missing_value", f"column `{missing[0]}` is empty (None)")
            continue
        if layout == "implicit":
            if not (is_conversational(row["chosen"]) and is_conversational(row["rejected"])):
                raise ValueError(
                    f"The {name} dataset has no `prompt` column, so `chosen`/`rejected` must be whole conversations "
                    "(implicit prompt); they are not."
                )
            question, first, second = _split_implicit_prompt(row["chosen"], row["rejected"])
            label = 0
        elif layout == "chosen_rejected":
            question, first, second, label = row["prompt"], row["chosen"], row["rejected"], 0
        else:
            question, first, second = row["prompt"], row["response_a"], row["response_b"]
            label = None
            if need_label or row.get("label") is not None:
                value = row.get("label")
                words = [str(w) for w in label_words]
                if not isinstance(value, str) or value.strip() not in words:
                    bad(i, "bad_label", f"`label` is {value!r}, expected one of {words}")
                    continue
                label = words.index(value.strip())
        try:
            first_text = response_to_text(first, "chosen" if layout != "labeled" else "response_a")
            second_text = response_to_text(second, "rejected" if layout != "labeled" else "response_b")
        except ValueError as e:
            bad(i, "bad_response", str(e))
            continue
        if not first_text.strip() or not second_text.strip():
            col = ("chosen", "rejected") if layout != "labeled" else ("response_a", "response_b")
            bad(i, "empty_response", f"the response in `{col[0] if not first_text.strip() else col[1]}` is empty")
            continue
        if first_text.strip() == second_text.strip():
            bad(i, "identical_responses", "both responses are identical, so the pair carries no preference")
            continue
        if isinstance(question, list):
            try:
                question_to_text(question, "prompt")
            except ValueError as e:
                bad(i, "bad_prompt", str(e))
                continue
        rationale = row.get(rationale_column) if rationale_column else None
        if rationale is not None and not isinstance(rationale, str):
            bad(i, "bad_rationale", f"`{rationale_column}` is not a string ({type(rationale).__name__})")
            continue
        if rationale is not None and rationale_sentences is not None:
            rationale = first_sentences(rationale, rationale_sentences)
        if rationale and rationale.strip() and rationale_before_reference:  # an empty one is `missing_rationale`
            rationale = before_first_reference(rationale, label_words)
            if not rationale:
                skipped["rationale_opens_with_reference"] += 1
                continue
        if need_rationale and (rationale is None or not rationale.strip()):
            bad(i, "missing_rationale", f"`{rationale_column}` is empty")
            continue
        if rationale is not None and label is not None and check_rationale:
            said = rationale_label(rationale, label_words)
            if said is not None and said != label_words[label]:
                bad(
                    i,
                    "contradicting_rationale",
                    f"the rationale concludes for {said!r} but the label is {label_words[label]!r} (rationales refer "
                    "to the first response of the row as A)",
                )
                continue
        pairs.append(
            {
                "question": question,
                "first": first_text,
                "second": second_text,
                "label": label,
                "rationale": rationale.strip() if isinstance(rationale, str) else None,
                "row": i,
            }
        )
    if skipped:
        logger.warning(f"Skipped {sum(skipped.values())} bad row(s) of the {name} dataset: {dict(skipped)}.")
    return pairs, skipped


def assign_orders(n: int, swap: str, seed: int, labels: list[int | None] | None = None) -> list[tuple[bool, ...]]:
    """For each of ``n`` pairs, the orders it is shown in (``True`` = swapped).

    ``"random"`` draws, with a seeded shuffle, which pairs end up labeled with the first label word: exactly ``n // 2``
    of them (plus a seeded coin for an odd one), whatever the labels and orientation of the input (``labels``: the
    index of the better response as given; ``None`` entries, or no ``labels``, count as 0).
    """
    if swap == "none":
        return [(False,)] * n
    if swap == "both":
        return [(False, True)] * n
    if swap != "random":
        raise ValueError(f"`swap` must be 'random', 'both' or 'none', got {swap!r}.")
    rng = random.Random(seed)
    targets = [i < n // 2 for i in range(n)]  # True: the example is labeled with the second label word
    if n % 2:
        targets[-1] = rng.random() < 0.5
    rng.shuffle(targets)
    given = [bool(x) for x in labels] if labels is not None else [False] * n
    return [(t != g,) for t, g in zip(targets, given)]


def render_pairs(
    pairs: list[dict], swap: str, seed: int, label_words: tuple[str, str] = ("A", "B"), with_order: bool = False
) -> list[dict]:
    """Shown examples ``{"question", "first", "second", "label", "rationale", "row"}``: ``first`` is shown as the
    first label word and ``label`` is the index of the better shown response. With ``with_order``, each also has
    ``"pair_order"``: ``2 * i + swapped`` for the ``i``-th pair (``swapped``: 1 when shown the other way round)."""
    shown = []
    for i, (pair, orders) in enumerate(zip(pairs, assign_orders(len(pairs), swap, seed, [p["label"] for p in pairs]))):
        for swapped in orders:
            ex = dict(pair)
            if with_order:
                ex["pair_order"] = 2 * i + int(swapped)
            if swapped:
                ex["first"], ex["second"] = pair["second"], pair["first"]
                ex["label"] = None if pair["label"] is None else 1 - pair["label"]
                if pair["rationale"]:
                    ex["rationale"] = swap_label_mentions(pair["rationale"], label_words)
            shown.append(ex)
    return shown


def label_token_ids(tokenizer, template: JudgeTemplate) -> tuple[int, int]:
    """Token ids of the template's two label words; a ``ValueError`` if one is not a single token."""
    ids = []
    for word in template.label_words:
        enc = tokenizer.encode(word, add_special_tokens=False)
        if len(enc) != 1:
            raise ValueError(
                f"The label word {word!r} is {len(enc)} tokens for this tokenizer ({enc}); a judge template's label "
                "words must each be a single token. Choose other `label_words`."
            )
        ids.append(enc[0])
    if ids[0] == ids[1]:
        raise ValueError(f"The label words {template.label_words} map to the same token.")
    return ids[0], ids[1]


def uses_chat_template(tokenizer, template: JudgeTemplate | None) -> bool:
    flag = None if template is None else template.use_chat_template
    return bool(getattr(tokenizer, "chat_template", None)) if flag is None else bool(flag)


@dataclass
class JudgeExampleBuilder:
    """Tokenizes shown pairs into ``{"input_ids", "labels"}`` for one mode (see the module docstring).

    The prompt is rendered by the judge's own renderer ([`~trl_gram.judge.rendering.PromptRenderer`]), so training
    and inference read the same text: ``render_prompt(question, first, second)`` is the trainer's judge's
    (``functools.partial(judge.render_prompt, mode=...)``, with its system prompt, chat-template arguments and reply
    prefix); when it is not given, a renderer with the default judge settings for ``template`` and ``mode`` is built.
    A ``reason_prefix`` that the judge prefills at the end of the prompt is left out of the completion.
    ``__call__`` returns ``None`` for an example whose completion alone cannot fit ``max_length``.
    """

    tokenizer: object
    template: JudgeTemplate | None
    mode: str
    max_length: int | None = None
    min_response_tokens: int = 32
    pretrain_use_chat_template: bool = False
    render_prompt: Callable | None = None
    reason_prefix: str = ""

    def __post_init__(self):
        if self.mode not in ("reason", "direct", "pretrain"):
            raise ValueError(f"`mode` must be 'reason', 'direct' or 'pretrain', got {self.mode!r}.")
        if self.mode != "pretrain":
            if self.template is None:
                raise ValueError(f"mode={self.mode!r} needs a judge template.")
            self.label_ids = label_token_ids(self.tokenizer, self.template)
            renderer = PromptRenderer(self.tokenizer, GramJudgeConfig(mode=self.mode, template=self.template))
            if self.render_prompt is None:
                self.render_prompt = functools.partial(renderer.text, mode=self.mode)
            self._chat = renderer.uses_chat_template(self.template)
        else:
            self._chat = self.pretrain_use_chat_template and bool(getattr(self.tokenizer, "chat_template", None))
        eos = self.tokenizer.eos_token_id
        if eos is None and self.mode != "direct":
            raise ValueError("The tokenizer has no EOS token, which ends every training completion.")
        self.eos_id = eos

    # -- pieces ------------------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def prompt_ids(self, question, first: str, second: str) -> list[int]:
        if self.mode == "pretrain":
            q = question_to_text(question)
            if self._chat:
                text = self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
                )
            else:
                text = PRETRAIN_PROMPT.format(question=q)
        else:
            text = self.render_prompt(question, first, second)
        return self.tokenizer.encode(text, add_special_tokens=not self._chat)

    def completion(self, first: str, second: str, label: int | None, rationale: str | None):
        """``(ids, labels)`` of the completion; the label slot holds the label token in ``ids`` and its marker in
        ``labels``."""
        if self.mode == "pretrain":
            ids = self.encode(PRETRAIN_COMPLETION.format(first=first, second=second)) + [self.eos_id]
            return ids, list(ids)
        if label not in (0, 1):
            raise ValueError(f"a judge example needs a label index 0/1, got {label!r}.")
        if self.mode == "direct":
            return [self.label_ids[label]], [slot_marker(label)]
        if not rationale or not rationale.strip():
            raise ValueError("a `reason` example needs a non-empty rationale.")
        t = self.template
        head_text = f"{t.think_open}\n{rationale.strip()}\n{t.think_close}\n{t.answer_open}\n"
        if self.reason_prefix:  # the prompt already ends with it (the judge prefills it)
            if not head_text.startswith(self.reason_prefix):
                raise ValueError(
                    f"`reason_prefix` {self.reason_prefix!r} is not the start of the judge's output format "
                    f"({head_text[:20]!r}...), so training examples cannot continue it."
                )
            head_text = head_text[len(self.reason_prefix) :]
        head = self.encode(head_text)
        tail = self.encode(f"\n{t.answer_close}") + [self.eos_id]
        ids = head + [self.label_ids[label]] + tail
        return ids, head + [slot_marker(label)] + tail

    # -- one example -------------------------------------------------------------------------------------------------
    def __call__(self, example: dict) -> dict | None:
        q, a, b = example["question"], example["first"], example["second"]
        comp_ids, comp_labels = self.completion(a, b, example.get("label"), example.get("rationale"))
        if self.max_length is not None:
            if self.mode == "pretrain":
                fixed = len(self.prompt_ids("", "", "")) + len(self.completion("", "", None, None)[0])

                def count(q_, a_, b_):
                    return len(self.prompt_ids(q_, a_, b_)) + len(self.completion(a_, b_, None, None)[0])
            else:
                fixed = len(self.prompt_ids("", "", "")) + len(comp_ids)

                def count(q_, a_, b_):
                    return len(self.prompt_ids(q_, a_, b_)) + len(comp_ids)

            if fixed >= self.max_length:
                return None
            q_text = question_to_text(q)
            q_new, a, b, cut = truncate_fields(
                q_text, a, b, count, self.encode, self.tokenizer.decode, self.max_length, self.min_response_tokens
            )
            if cut:
                q = q_new
                if self.mode == "pretrain":
                    comp_ids, comp_labels = self.completion(a, b, None, None)
        prompt = self.prompt_ids(q, a, b)
        if self.max_length is not None and len(prompt) + len(comp_ids) > self.max_length:
            return None
        return {"input_ids": prompt + comp_ids, "labels": [-100] * len(prompt) + comp_labels}


def build_judge_dataset(
    pairs: list[dict],
    builder: JudgeExampleBuilder,
    swap: str,
    seed: int,
    num_proc: int | None = None,
    name: str = "train",
    with_order: bool = False,
) -> tuple[Dataset, Dataset, dict]:
    """Render and tokenize canonical pairs. Returns ``(tokenized, rendered, stats)``: the tokenized dataset
    (``input_ids``, ``labels``, and with ``with_order`` the ``pair_order`` of [`render_pairs`]), the rendered text
    examples, and counts (``examples``, ``label_0``, ``label_1``, ``too_long``)."""
    label_words = builder.template.label_words if builder.template is not None else ("A", "B")
    shown = render_pairs(pairs, swap, seed, label_words, with_order=with_order)
    for ex in shown:
        ex["question"] = question_to_text(ex["question"])
    if not shown:
        empty = Dataset.from_dict({"input_ids": [[0]], "labels": [[-100]]}).select([])
        return empty, Dataset.from_list([]), {"examples": 0, "label_0": 0, "label_1": 0, "too_long": 0}
    rendered = Dataset.from_list(shown)

    def tokenize(example):
        out = builder(example)
        return {
            "input_ids": out["input_ids"] if out else [],
            "labels": out["labels"] if out else [],
            "fits": bool(out),
        }

    keep = ["pair_order"] if with_order else []
    tokenized = rendered.map(
        tokenize,
        remove_columns=[c for c in rendered.column_names if c not in keep],
        num_proc=num_proc,
        desc=f"Tokenizing {name} judge examples",
    )
    too_long = len(tokenized) - sum(tokenized["fits"])
    if too_long:
        why = {
            "reason": "the template, question and rationale alone exceed it",
            "direct": "the template and question alone exceed it",
        }.get(builder.mode, "the question alone exceeds it")
        logger.warning(
            f"{too_long} {name} example(s) do not fit `max_length`={builder.max_length} even with the responses cut "
            f"({why}): dropped."
        )
        tokenized = tokenized.filter(lambda ex: ex["fits"])
    tokenized = tokenized.remove_columns("fits")
    labels = Counter(ex["label"] for ex in shown)
    stats = {
        "examples": len(tokenized),
        "label_0": labels.get(0, 0),
        "label_1": labels.get(1, 0),
        "too_long": too_long,
    }
    return tokenized, rendered, stats


def as_unlabeled(dataset: Dataset, seed: int = 0) -> Dataset:
    """Drop the labels of preference rows: ``prompt``/``response_a``/``response_b`` with the two responses in a
    seeded random order (so the position of the better response carries no signal)."""
    pairs, _ = validate_pairs(dataset, need_label=False, on_invalid="skip", name="unlabeled")
    rng = random.Random(seed)
    rows = []
    for p in pairs:
        a, b = (p["first"], p["second"]) if rng.random() < 0.5 else (p["second"], p["first"])
        rows.append({"prompt": p["question"], "response_a": a, "response_b": b})
    return Dataset.from_list(rows)
