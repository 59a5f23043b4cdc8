"""``ReproductionConfig``: every knob of the reproduction experiment, read from a recipe YAML file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl_gram.templates import JudgeTemplate, get_template

from .synthetic import ORACLE_STYLES, RULES

ARMS = (
    "zero_shot_direct",  # the base model, label read directly
    "zero_shot_reason",  # the base model, rationale then label
    "direct",  # direct judge trained on the labeled slice
    "reason",  # reasoning judge trained on the labeled slice (rationales from the prover)
    "reason_oracle",  # the same with correct, rule-written rationales (control task only)
    "reason_oracle_st",  # reason_oracle + self-training rounds 1..R, denoising on (control task only)
    "reason_st",  # reason + self-training rounds 1..R, denoising on
    "reason_st_nodenoise",  # the same with the denoising rules off
    "direct_st",  # direct + self-training (optional)
    "adapt",  # few-shot adaptation to a second domain, from the self-trained judge vs from the base model
)
TASKS = ("hh", "synthetic")
ADAPT_STARTS = ("base", "self_trained", "labeled_only")
_SIZE_KEYS = ("labeled", "unlabeled_per_round", "test")
_TRAINING_KEYS = ("learning_rate", "num_train_epochs")

COMPACT_PROMPT = (
    "Which response answers the user better (helpful, correct, harmless)? Reason briefly, then answer A or B.\n\n"
    "[Question]\n{user_input}\n\n[Response A]\n{response_1}\n\n[Response B]\n{response_2}"
)
"""A ~40-token judge prompt with the GRAM-R² placeholders, for small judges on a CPU (the released GRAM-R² prompt is
~450 tokens: 3x the length of a short hh-rlhf pair, so it would dominate every forward pass)."""


def compact_template(reasoning: bool = True) -> JudgeTemplate:
    """The compact template: reasoning (``<think>…</think><answer>L</answer>``) or direct (empty rationale prefilled,
    label read at the answer slot, exactly as ``gram-r2-direct`` reads the released prompt)."""
    base = JudgeTemplate(
        text=COMPACT_PROMPT,
        question_field="user_input",
        first_field="response_1",
        second_field="response_2",
        reasoning=True,
    )
    return base if reasoning else base.replace(reasoning=False, direct_prefix="<think>\n\n</think>\n<answer>\n")


@dataclass
class ReproductionConfig:
    """Settings of the reproduction harness (``research/reproduction/configs/reproduce_cpu.yaml`` is a documented
    example).

    Sizes (``labeled``, ``unlabeled_per_round``, ``test``) apply to the hh-rlhf task; ``synthetic`` overrides them for
    the arithmetic control, and may also set its own ``learning_rate`` / ``num_train_epochs`` (a control task with few
    labels needs more optimizer steps than the shared setting gives). ``tiny_model`` (a dict of ``LlamaConfig``
    fields) replaces the judge by a random model of that shape with the base model's tokenizer: for smoke runs of the
    plumbing only.
    """

    output_dir: str = field(metadata={"help": "Root folder of the run (one sub-folder per task/arm/seed)."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Base judge (None: embedded SmolLM2)."})
    tiny_model: dict | None = field(default=None, metadata={"help": "LlamaConfig fields of a random smoke model."})
    hh_path: str | None = field(default=None, metadata={"help": "hh-rlhf JSON-lines file (needed by the hh task)."})
    pandalm_path: str | None = field(default=None, metadata={"help": "PandaLM test set (None: not evaluated)."})
    judgebench_path: str | None = field(default=None, metadata={"help": "JudgeBench file (None: not evaluated)."})
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    test_seed: int = 1234
    labeled: int = 256
    unlabeled_per_round: int = 512
    rounds: int = 2
    test: int = 400
    max_chars: int | None = 600
    ood_max_pairs: int = 200
    ood_max_chars: int | None = 1200
    synthetic: dict = field(default_factory=lambda: {"labeled": 64, "unlabeled_per_round": 256, "test": 200})
    synthetic_digits: int = 2
    synthetic_rule: str = field(
        default="arithmetic",
        metadata={"help": "Control task: 'arithmetic' (sums), 'compare' (larger number) or 'smaller'."},
    )
    template: str = "compact"
    finetune: str = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    learning_rate: float = 2e-4
    num_train_epochs: float = 2.0
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    judge_max_new_tokens: int = 64
    token_budget: int = 16384
    reason_prefix: str = "<think>\n"
    proof_samples: int = 2
    proof_max_new_tokens: int = 64
    confidence_threshold: float | None = 0.6
    min_vote_agreement: float = 0.5
    drop_tied_votes: bool = field(
        default=True,
        metadata={
            "help": "False (with min_vote_agreement 0): a pair whose two orders disagree keeps the label of its "
            "order-averaged probability, so only the other rules (confidence, length, support) filter it."
        },
    )
    max_rationale_tokens: int | None = 96
    oracle_rationale: str = field(
        default="per_response",
        metadata={
            "help": "Rationales of the `reason_oracle` arm: 'per_response' checks each response in the order shown, "
            "then concludes; 'fact' states the true fact, then names the response that says it."
        },
    )
    adapt_domain: str = "pandalm"
    adapt_rule: str | None = field(
        default=None,
        metadata={"help": "Control rule of a synthetic adaptation domain (None: `synthetic_rule`, i.e. in-domain)."},
    )
    adapt_source_task: str = "hh"
    adapt_source_arm: str = field(
        default="reason_st",
        metadata={
            "help": "Self-trained judge that adaptation starts from: 'reason_st' (adapts as a reasoning judge) or "
            "'direct_st' (adapts as a direct judge, no rationales)."
        },
    )
    adapt_starts: list[str] = field(
        default_factory=lambda: ["base", "self_trained"],
        metadata={
            "help": "Start points of the adaptation curves: 'base', 'self_trained' (the source arm's judge) and "
            "'labeled_only' (the source task's judge trained on its labeled slice alone: `reason` or `direct`)."
        },
    )
    adapt_num_train_epochs: float | None = field(
        default=None, metadata={"help": "Epochs of each adaptation run (None: the adaptation domain's setting)."}
    )
    adapt_budgets: list[int] = field(default_factory=lambda: [64, 128, 256])
    adapt_test: int = 200
    speed_check_steps: int = 0
    speed_check_model: str | None = None
    extra_train_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name, value, allowed in (("tasks", self.tasks, TASKS), ("arms", self.arms, ARMS)):
            bad = [v for v in value if v not in allowed]
            if bad:
                raise ValueError(f"`{name}` has unknown entries {bad}; choose from {list(allowed)}.")
        if self.finetune not in ("lora", "full"):
            raise ValueError(f"`finetune` must be 'lora' or 'full', got {self.finetune!r}.")
        if self.oracle_rationale not in ORACLE_STYLES:
            raise ValueError(
                f"`oracle_rationale` must be one of {list(ORACLE_STYLES)}, got {self.oracle_rationale!r}."
            )
        if self.adapt_domain not in ("pandalm", "synthetic"):
            raise ValueError(f"`adapt_domain` must be 'pandalm' or 'synthetic', got {self.adapt_domain!r}.")
        for name in ("synthetic_rule", "adapt_rule"):
            value = getattr(self, name)
            if value not in RULES and not (name == "adapt_rule" and value is None):
                raise ValueError(f"`{name}` must be one of {list(RULES)}, got {value!r}.")
        if self.adapt_source_arm not in ("reason_st", "direct_st"):
            raise ValueError(f"`adapt_source_arm` must be 'reason_st' or 'direct_st', got {self.adapt_source_arm!r}.")
        bad = [s for s in self.adapt_starts if s not in ADAPT_STARTS]
        if bad or not self.adapt_starts:
            raise ValueError(f"`adapt_starts` must be a non-empty subset of {list(ADAPT_STARTS)}, got {bad or []}.")
        if not self.seeds:
            raise ValueError("`seeds` must name at least one seed.")
        if sorted(self.adapt_budgets) != list(self.adapt_budgets) or any(b < 1 for b in self.adapt_budgets):
            raise ValueError(f"`adapt_budgets` must be increasing positive sizes, got {self.adapt_budgets}.")
        unknown = set(self.synthetic) - set(_SIZE_KEYS) - set(_TRAINING_KEYS)
        if unknown:
            allowed = "/".join(_SIZE_KEYS + _TRAINING_KEYS)
            raise ValueError(f"`synthetic` accepts {allowed}, got {sorted(unknown)}.")

    def task_sizes(self, task: str) -> dict:
        sizes = {"labeled": self.labeled, "unlabeled_per_round": self.unlabeled_per_round, "test": self.test}
        if task == "synthetic":
            sizes.update({k: v for k, v in self.synthetic.items() if k in _SIZE_KEYS})
        return sizes

    def task_training(self, task: str | None) -> dict:
        """``learning_rate`` and ``num_train_epochs`` of a task's training runs (``synthetic`` may override them)."""
        out = {"learning_rate": self.learning_rate, "num_train_epochs": self.num_train_epochs}
        if task == "synthetic":
            out.update({k: v for k, v in self.synthetic.items() if k in _TRAINING_KEYS})
        return out

    def adapt_synthetic_rule(self) -> str:
        """Rule of a synthetic adaptation domain: ``adapt_rule``, or the control task's own rule when it is unset."""
        return self.adapt_rule or self.synthetic_rule

    def adapt_training(self) -> dict:
        """``learning_rate`` and ``num_train_epochs`` of the adaptation runs: the adaptation domain's setting, with
        ``adapt_num_train_epochs`` when it is set."""
        out = self.task_training("synthetic" if self.adapt_domain == "synthetic" else None)
        if self.adapt_num_train_epochs is not None:
            out["num_train_epochs"] = self.adapt_num_train_epochs
        return out

    def judge_template(self, mode: str) -> JudgeTemplate:
        if self.template == "compact":
            return compact_template(reasoning=mode == "reason")
        if mode == "direct" and self.template == "gram-r2":
            return get_template("gram-r2-direct")
        return get_template(self.template, mode)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> ReproductionConfig:
        return recipe_from_yaml(cls, path, overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def recipe_from_yaml(cls, path: str | Path, overrides: dict):
    """An instance of the dataclass ``cls`` from the YAML mapping at ``path``, with the non-``None`` ``overrides`` on
    top; an unknown key is an error naming the file and the known keys."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe must be a YAML mapping, got {type(data).__name__}.")
    data.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{path}: unknown recipe key(s) {unknown}; known: {sorted(names)}.")
    return cls(**data)
