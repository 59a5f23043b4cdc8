"""Configuration of [`~trl_gram.training.trainer.GramRewardTrainer`]."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import SFTConfig

from ..judge.judge import GramJudgeConfig
from ..judge.spec import judge_field
from ..templates import TEMPLATES, JudgeTemplate, get_template

TRAINING_MODES = ("reason", "direct", "pretrain")


@dataclass
class GramRewardConfig(SFTConfig):
    r"""
    Configuration for [`GramRewardTrainer`]: every field of TRL's `SFTConfig` (optimisation, `max_length`, packing,
    PEFT-related, logging, ...) plus the fields below, which say how preference pairs become judge training examples
    and how the judge is evaluated during training. The `judge_eval_*` fields take their defaults and help from
    [`~trl_gram.judge.JudgeSpec`] (`swap`, `max_new_tokens`, `votes`): each judge default is written once.

    Parameters:
        mode (`str`, *optional*, defaults to `"reason"`):
            `"reason"`: the judge writes a rationale then the label (GRAM-R²; rows need a rationale);
            `"direct"`: the judge writes the label only (GRAM v1); `"pretrain"`: unsupervised pair pre-training
            (GRAM v1: language-modelling loss on generating both responses given the question; no label needed).
        template (`str`, *optional*):
            Judge template: a registered name (`"gram-r2"`, `"gram-v1"`, `"gram-r2-direct"`) or the path of a text
            file holding a prompt with the GRAM-R² (`{user_input}`, `{response_1}`, `{response_2}`) or GRAM v1
            (`{input}`, `{response_a}`, `{response_b}`) placeholders. Defaults to GRAM-R² for `reason` and GRAM v1
            for `direct`. Python callers may also pass a `JudgeTemplate` to the trainer.
        swap (`str`, *optional*, defaults to `"random"`):
            Position of the better response in the rendered examples: `"random"` (a seeded assignment in which
            exactly half of the examples are labeled with each label word, whatever the input's orientation),
            `"both"` (every pair in both orders) or `"none"` (as given: `chosen` first, or `response_a` first; the
            self-training loop then also keeps its labeled pairs in their given order).
        rationale_column (`str`, *optional*, defaults to `"rationale"`):
            Column holding the rationale of each row (needed in `reason` mode). Its references ("Response A") follow
            the order of the row: `chosen` is A in `prompt`/`chosen`/`rejected` rows; `response_a` is A in
            `prompt`/`response_a`/`response_b`/`label` rows. They are rewritten when a pair is shown swapped.
        rationale_max_sentences (`int`, *optional*):
            Train on the first `rationale_max_sentences` sentences of each rationale only (a sentence ends at `.`, `!`
            or `?` before a space, or at a line break), cut before the rationale checks. Machine-written rationales
            (the prover's proofs, capped in tokens) often stop mid-sentence or repeat a line, so a judge trained on
            them cannot tell where a rationale ends, loops, and never writes its answer slot; a rationale that ends
            where a sentence ends teaches it to close the rationale after that sentence.
        rationale_before_reference (`bool`, *optional*, defaults to `False`):
            Train on each rationale only up to its first reference to a response ("Response B", "the first
            response", "B is better"), cut after `rationale_max_sentences`. A short rationale that names the better
            response ("The better response is Response B.") makes the decision in a rationale token, trained by the
            ordinary next-token loss one order at a time, and the label slot copies it; cut there, the decision is
            made at the label slot, where the 2-way and pairwise losses act. Rows whose rationale opens with a
            reference are skipped (counted in the data stats as `rationale_opens_with_reference`).
        label_loss (`str`, *optional*):
            Loss on the label token: `"nll"` (its ordinary next-token loss) or `"label_smoothing"`: cross-entropy over
            the two label tokens' logits only, with smoothing `label_smoothing_epsilon` (GRAM v1). In `direct` mode it
            replaces the label token's loss; in `reason` mode it is added to the ordinary loss of the rationale and
            label tokens (a reasoning judge must still generate the label word). `"pairwise"` (`swap="both"`; in
            `reason` mode the 2-way term, the label token keeping its next-token loss): each batch holds both orders
            of its pairs, and the loss is the 2-way label-smoothing loss on
            the pair's debiased log-odds `s = (d_1 - d_2) / 2` (a Bradley-Terry loss; `d_k` is the log-odds of "the
            first shown response is better" in order `k`, the two orders showing the pair's responses the other way
            round) plus `pairwise_tilt_weight` times the squared position tilt `b = (d_1 + d_2) / 2`. Unlike the
            per-order loss, the label term cannot be lowered by a position preference, and no batch is tilted by an
            unequal number of A and B labels. Defaults to `"label_smoothing"` in `direct` mode and `"nll"` in `reason`
            mode.
        label_smoothing_epsilon (`float`, *optional*, defaults to `0.1`):
            Smoothing ε of the label-smoothing loss.
        label_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the label-smoothing term relative to one token of language-modelling loss.
        pairwise_tilt_weight (`float`, *optional*, defaults to `0.1`):
            Weight of the squared position tilt `b` of each pair in the `"pairwise"` label loss.
        on_invalid_row (`str`, *optional*, defaults to `"error"`):
            What to do with a bad row (missing value, empty response, `chosen == rejected`, label outside the label
            words, rationale that contradicts its label): `"error"` raises a `ValueError` naming the row, `"skip"`
            drops it and logs the count per reason.
        check_rationale_label (`bool`, *optional*, defaults to `True`):
            Whether a supplied rationale whose conclusion names the other response counts as a bad row.
        min_response_tokens (`int`, *optional*, defaults to `32`):
            When an example is longer than `max_length`, the responses are cut first (heads kept), then the question
            (tail kept), never below this many tokens per response; the template and the completion are never cut.
        pretrain_use_chat_template (`bool`, *optional*, defaults to `False`):
            Whether pair pre-training prompts go through the chat template (GRAM v1 used plain text).
        judge_eval (`bool`, *optional*, defaults to `True`):
            Whether each evaluation also runs the judge (through `GramJudge`) on the pairs of `eval_dataset` and logs
            `eval_accuracy`, `eval_swap_agreement` and `eval_parse_failure_rate` (not in `pretrain` mode).
        judge_eval_max_samples (`int`, *optional*, defaults to `200`):
            At most this many eval pairs are judged (the first ones); `None` judges all of them.
        judge_eval_swap (`str`, *optional*, defaults to `"both"`):
            Orders judged at evaluation (`"both"` measures swap agreement).
        judge_eval_max_new_tokens (`int`, *optional*, defaults to `1024`):
            Generation budget of the rationale when evaluating a reasoning judge.
        judge_eval_votes (`int`, *optional*, defaults to `1`):
            Rationales sampled per order at evaluation (`1` is greedy; more are sampled at the judge's temperature
            and majority-voted).
        judge_kwargs (`dict[str, Any]`, *optional*):
            Extra [`~trl_gram.judge.GramJudgeConfig`] fields (checked against them) (e.g. `system_prompt`, `reason_prefix`, `chat_template_kwargs`,
            `token_budget`, `temperature`). They shape the prompt, so training examples are rendered with the same
            judge settings as inference: use the same values when you load the trained judge.
        judge_eval_subset_column (`str`, *optional*, defaults to `"subset"`):
            Column whose values split the eval metrics into subsets, when `eval_dataset` has it.
        direct_examples (`bool`, *optional*, defaults to `False`):
            In `reason` mode, also train every training pair as a `direct` example (the prompt of `direct_template`,
            the label token alone), with the same position balance, so that one judge (or one adapter) serves both
            modes. The label token's loss follows `label_loss`.
        direct_template (`str`, *optional*):
            Template of the direct examples: a registered name or a prompt file, as `template`. Default: the template
            `direct` mode uses by default (GRAM v1).
        direct_swap (`str`, *optional*):
            Orders of the direct examples, as `swap` (`"random"`, `"both"`, `"none"`). Defaults to `swap`. `"both"`
            shows each pair in both orders with the label following the better response, the cheapest lesson
            against position bias (direct examples carry no rationale).
        direct_label_loss (`str`, *optional*):
            Label loss of the direct examples (`direct_examples`; the reasoning examples' `label_loss` must be
            `"label_smoothing"` or `"pairwise"`): `"label_smoothing"` or `"pairwise"` (`direct_swap="both"`), the loss
            `label_loss="pairwise"` gives a direct judge, on the direct examples of each batch, whose two orders the
            sampler keeps together; their label token leaves the next-token loss, so nothing trains it per order.
            Examples of a kind that is not paired are single units between the pairs. Defaults to `label_loss`.
    """

    _VALID_DICT_FIELDS = SFTConfig._VALID_DICT_FIELDS + ["judge_kwargs"]

    mode: str = field(
        default="reason",
        metadata={"help": "Judge training mode.", "choices": list(TRAINING_MODES)},
    )
    template: str | None = field(
        default=None,
        metadata={
            "help": "Judge template: a registered name (gram-r2, gram-v1, gram-r2-direct) or a path to a prompt file "
            "with the GRAM-R² or GRAM v1 placeholders. Default: gram-r2 for reason, gram-v1 for direct."
        },
    )
    swap: str = field(
        default="random",
        metadata={
            "help": "Position of the better response: random (seeded, exactly balanced), both (every pair in both "
            "orders) or none (as given).",
            "choices": ["random", "both", "none"],
        },
    )
    rationale_column: str = field(
        default="rationale",
        metadata={
            "help": "Column holding each row's rationale (reason mode); its 'Response A' is the first response."
        },
    )
    rationale_max_sentences: int | None = field(
        default=None,
        metadata={
            "help": "Reason mode: train on the first N sentences of each rationale only (a sentence ends at . ! ? or "
            "a line break), compact rationales that end where a sentence ends. Default: the whole rationale."
        },
    )
    rationale_before_reference: bool = field(
        default=False,
        metadata={
            "help": 'Reason mode: train on each rationale only up to its first reference to a response ("Response '
            'B", "the first response"), so the label slot, not a rationale token, makes the decision. Rows whose '
            "rationale opens with one are skipped."
        },
    )
    label_loss: str | None = field(
        default=None,
        metadata={
            "help": "Loss on the label token: nll (next-token loss) or label_smoothing (2-way cross-entropy over the "
            "label tokens' logits) or pairwise (swap=both: the 2-way loss on each pair's debiased log-odds over its "
            "two orders, plus a position-tilt penalty). Default: label_smoothing in direct mode, nll "
            "in reason mode.",
            "choices": ["nll", "label_smoothing", "pairwise"],
        },
    )
    label_smoothing_epsilon: float = field(
        default=0.1, metadata={"help": "Smoothing epsilon of the label-smoothing loss."}
    )
    label_loss_weight: float = field(
        default=1.0, metadata={"help": "Weight of the label-smoothing term (per label slot, vs. one LM token)."}
    )
    pairwise_tilt_weight: float = field(
        default=0.1,
        metadata={"help": "Weight of each pair's squared position tilt in the pairwise label loss."},
    )
    on_invalid_row: str = field(
        default="error",
        metadata={
            "help": "Bad rows: error (ValueError naming the row) or skip (dropped and counted).",
            "choices": ["error", "skip"],
        },
    )
    check_rationale_label: bool = field(
        default=True, metadata={"help": "Treat a rationale concluding for the other response as a bad row."}
    )
    min_response_tokens: int = field(
        default=32, metadata={"help": "Floor per response when over-long examples are cut to max_length."}
    )
    pretrain_use_chat_template: bool = field(
        default=False, metadata={"help": "Send pair pre-training prompts through the chat template."}
    )
    judge_eval: bool = field(
        default=True,
        metadata={"help": "Also judge the eval pairs at each evaluation (accuracy, swap agreement, parse failures)."},
    )
    judge_eval_max_samples: int | None = field(
        default=200, metadata={"help": "Number of eval pairs judged at each evaluation (None: all)."}
    )
    judge_eval_swap: str = judge_field("swap", "Orders judged at evaluation.")
    judge_eval_max_new_tokens: int = judge_field("max_new_tokens", "Rationale length cap at evaluation (reason mode).")
    judge_eval_votes: int = judge_field("votes", "Rationales per order at evaluation (1: greedy).")
    judge_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Extra GramJudgeConfig fields (system_prompt, reason_prefix, chat_template_kwargs, token_budget, "
            "...), used to render training prompts exactly as the judge renders them, and for evaluation."
        },
    )
    judge_eval_subset_column: str = field(
        default="subset", metadata={"help": "Column splitting the eval metrics into subsets, when present."}
    )
    direct_examples: bool = field(
        default=False,
        metadata={
            "help": "Reason mode: also train every pair in direct mode (the label alone after `direct_template`), so "
            "one judge serves both modes."
        },
    )
    direct_template: str | None = field(
        default=None,
        metadata={"help": "Template of the direct examples (`direct_examples`). Default: direct mode's, gram-v1."},
    )
    direct_swap: str | None = field(
        default=None,
        metadata={"help": "Orders of the direct examples (random, both, none). Default: `swap`."},
    )
    direct_label_loss: str | None = field(
        default=None,
        metadata={
            "help": "Label loss of the direct examples (`direct_examples`; label_loss label_smoothing or pairwise): "
            "label_smoothing, or pairwise (direct_swap=both: each pair's two orders in one batch, the pairwise loss, "
            "and their label token out of the next-token loss). Default: `label_loss`.",
            "choices": ["label_smoothing", "pairwise"],
        },
    )

    @property
    def direct_loss(self) -> str | None:
        """The label loss of the direct examples (`direct_examples`): `direct_label_loss`, else `label_loss`."""
        return (self.direct_label_loss or self.label_loss) if self.direct_examples else None

    @property
    def pairwise_batches(self) -> bool:
        """Whether some examples use the pairwise loss, so training batches must keep each pair's two orders."""
        return "pairwise" in (self.label_loss, self.direct_loss)

    def __post_init__(self):
        super().__post_init__()
        if self.mode not in TRAINING_MODES:
            raise ValueError(f"`mode` must be one of {TRAINING_MODES}, got {self.mode!r}.")
        if self.judge_kwargs is None:
            self.judge_kwargs = {}
        unknown = set(self.judge_kwargs) - {f.name for f in dataclasses.fields(GramJudgeConfig)}
        if unknown:
            raise ValueError(f"`judge_kwargs` has keys that are not GramJudgeConfig fields: {sorted(unknown)}.")
        reserved = {"mode", "template", "swap", "votes", "max_new_tokens", "seed"} & set(self.judge_kwargs)
        if reserved:
            raise ValueError(
                f"`judge_kwargs` may not set {sorted(reserved)}: use `mode`, `template`, `judge_eval_swap`, "
                "`judge_eval_votes`, `judge_eval_max_new_tokens` and `seed`."
            )
        if self.direct_examples and self.mode != "reason":
            raise ValueError(f"`direct_examples` adds direct examples to reason training; `mode` is {self.mode!r}.")
        if self.label_loss is None:
            self.label_loss = "label_smoothing" if self.mode == "direct" else "nll"
        if self.label_loss not in ("nll", "label_smoothing", "pairwise"):
            raise ValueError(f"`label_loss` must be 'nll', 'label_smoothing' or 'pairwise', got {self.label_loss!r}.")
        if self.label_loss == "pairwise" and (self.mode not in ("direct", "reason") or self.swap != "both"):
            raise ValueError(
                "`label_loss='pairwise'` compares the two orders of each pair: it needs `mode` 'direct' or 'reason' "
                f"and `swap='both'` (got mode={self.mode!r}, swap={self.swap!r})."
            )
        if self.direct_label_loss not in (None, "label_smoothing", "pairwise"):
            raise ValueError(
                f"`direct_label_loss` must be 'label_smoothing' or 'pairwise', got {self.direct_label_loss!r}."
            )
        if self.direct_label_loss is not None:
            if not self.direct_examples:
                raise ValueError("`direct_label_loss` is the loss of the direct examples: set `direct_examples=True`.")
            if self.label_loss == "nll":
                raise ValueError(
                    "`direct_label_loss` needs the 2-way label term on the reasoning examples too: `label_loss` "
                    f"'label_smoothing' or 'pairwise', got {self.label_loss!r}."
                )
        if self.direct_loss == "pairwise" and (self.direct_swap or self.swap) != "both":
            raise ValueError(
                "The pairwise loss of the direct examples compares the two orders of each pair: set "
                f"`direct_swap='both'` (got {self.direct_swap or self.swap!r})."
            )
        if self.pairwise_batches:
            what = "`label_loss='pairwise'`" if self.label_loss == "pairwise" else "`direct_label_loss='pairwise'`"
            if self.per_device_train_batch_size % 2:
                raise ValueError(
                    f"{what} keeps both orders of a pair in one batch: `per_device_train_batch_size` must be even, "
                    f"got {self.per_device_train_batch_size}."
                )
            if self.train_sampling_strategy == "batch_rebalance":
                raise ValueError(
                    f"{what} samples whole pairs: use `train_sampling_strategy` 'random', 'group_by_length' or "
                    "'sequential', not 'batch_rebalance'."
                )
            if self.packing or self.padding_free:
                raise ValueError(f"{what} needs one example per row: set `packing` and `padding_free` off.")
        if self.rationale_max_sentences is not None and self.rationale_max_sentences < 1:
            raise ValueError(f"`rationale_max_sentences` must be >= 1, got {self.rationale_max_sentences}.")
        if self.pairwise_tilt_weight < 0:
            raise ValueError(f"`pairwise_tilt_weight` must be >= 0, got {self.pairwise_tilt_weight}.")
        if not 0.0 <= self.label_smoothing_epsilon < 1.0:
            raise ValueError(f"`label_smoothing_epsilon` must be in [0, 1), got {self.label_smoothing_epsilon}.")
        if self.label_loss_weight < 0:
            raise ValueError(f"`label_loss_weight` must be >= 0, got {self.label_loss_weight}.")
        for name in ("swap", "direct_swap"):
            value = getattr(self, name)
            if value not in ("random", "both", "none") and not (name == "direct_swap" and value is None):
                raise ValueError(f"`{name}` must be 'random', 'both' or 'none', got {value!r}.")
        if self.direct_swap is not None and not self.direct_examples:
            raise ValueError("`direct_swap` sets the orders of the direct examples: set `direct_examples=True`.")
        if self.on_invalid_row not in ("error", "skip"):
            raise ValueError(f"`on_invalid_row` must be 'error' or 'skip', got {self.on_invalid_row!r}.")
        if self.label_smoothing_factor > 0:
            raise ValueError(
                "`label_smoothing_factor` (smoothing over the whole vocabulary) is not used by GramRewardTrainer: set "
                "`label_loss='label_smoothing'` and `label_smoothing_epsilon` for the 2-way label-smoothing loss."
            )
        if self.assistant_only_loss:
            raise ValueError(
                "`assistant_only_loss` does not apply: GramRewardTrainer builds its own completion-only labels."
            )


_PLACEHOLDERS = {
    "user_input": ("user_input", "response_1", "response_2"),
    "input": ("input", "response_a", "response_b"),
}


def resolve_template(template: str | JudgeTemplate | None, mode: str) -> JudgeTemplate | None:
    """The judge template for ``mode``: a [`JudgeTemplate`], a registered name, a prompt file path, or ``None``
    for the mode's default. ``None`` in ``pretrain`` mode (which uses no judge template)."""
    if mode == "pretrain":
        return (
            template if isinstance(template, JudgeTemplate) else (None if template is None else _load(template, mode))
        )
    resolved = _load(template, mode)
    if mode == "direct" and resolved.reasoning and resolved is TEMPLATES["gram-r2"]:
        resolved = TEMPLATES["gram-r2-direct"]
    if resolved.reasoning != (mode == "reason"):
        kind = "a reasoning" if resolved.reasoning else "a direct"
        raise ValueError(
            f"`template` is {kind} template but `mode` is {mode!r}: use a template with reasoning={mode == 'reason'} "
            "(e.g. template.replace(reasoning=...))."
        )
    return resolved


def _load(template, mode) -> JudgeTemplate:
    if isinstance(template, JudgeTemplate) or template is None or template in TEMPLATES:
        return get_template(template, "direct" if mode == "direct" else "reason")
    path = Path(str(template))
    if not path.is_file():
        raise ValueError(
            f"Unknown `template` {template!r}: pass one of {sorted(TEMPLATES)} or the path of a prompt text file."
        )
    text = path.read_text(encoding="utf-8")
    for key, (q, a, b) in _PLACEHOLDERS.items():
        if "{" + key + "}" in text:
            return JudgeTemplate(
                text=text, question_field=q, first_field=a, second_field=b, reasoning=mode != "direct"
            )
    raise ValueError(
        f"The template file {path} has neither the GRAM-R² placeholders ({{user_input}}, {{response_1}}, "
        "{response_2}) nor the GRAM v1 ones ({input}, {response_a}, {response_b})."
    )
