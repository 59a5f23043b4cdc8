"""Configuration of the GRAM-R² self-training loop ([`~trl_gram.training.self_training.GramSelfTrainer`])."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..judge.judge import SWAPS
from ..judge.spec import judge_field

LOOP_BACKENDS = ("transformers", "vllm", "openai")
"""The [`~trl_gram.judge.JudgeSpec`] backends the loop's generating stages run on (models in memory, or vLLM)."""


@dataclass
class SelfTrainingConfig:
    r"""
    Settings of the self-training loop. Its judge settings (`pseudo_label_*`, `vllm_*`) take their defaults and help
    from [`~trl_gram.judge.JudgeSpec`] (`votes`, `swap`, `temperature`, `tensor_parallel_size`,
    `gpu_memory_utilization`). The judge's own training settings (learning rate, epochs, `max_length`, mode,
    template, ...) come from the [`GramRewardConfig`] given beside it, whose `output_dir` is the root of the run.

    Parameters:
        rounds (`int`, *optional*, defaults to `3`):
            Self-training rounds after the initial judge (paper: 3). Each round pseudo-labels a new batch of unlabeled
            pairs, keeps the denoised ones, merges them with all earlier synthesized data and retrains.
        unlabeled_per_round (`int`, *optional*):
            Unlabeled pairs per round (consecutive, disjoint slices of the unlabeled pool); `None` splits the pool
            evenly over the rounds.
        pseudo_label_votes (`int`, *optional*, defaults to `1`):
            Judge runs per order when pseudo-labelling (more than 1 samples at `pseudo_label_temperature`).
        pseudo_label_swap (`str`, *optional*, defaults to `"both"`):
            Orders judged when pseudo-labelling (`"both"` makes every vote position-debiased).
        pseudo_label_temperature (`float`, *optional*, defaults to `0.7`):
            Sampling temperature when `pseudo_label_votes > 1`.
        min_vote_agreement (`float`, *optional*, defaults to `0.5`):
            Share of runs (orders × votes; failed runs count against) that must agree with the majority label; a tie
            is dropped unless `drop_tied_votes=False` and `min_vote_agreement=0`.
        drop_tied_votes (`bool`, *optional*, defaults to `True`):
            With `min_vote_agreement=0`, `False` turns the vote rule off entirely: a tied vote, or a predicted label
            that is not the vote majority, keeps the label predicted from the averaged probability (the "no
            denoising" ablation).
        confidence_threshold (`float`, *optional*, defaults to `0.6`):
            Minimum debiased probability of the predicted label; `None` disables the rule.
        max_rationale_tokens (`int`, *optional*, defaults to `512`):
            Rationales longer than this (judge tokenizer) are dropped; `None` disables the rule.
        check_support (`bool`, *optional*, defaults to `True`):
            Drop rationales whose conclusion names the other response. When off, the stages' training also accepts
            such rows (it sets `check_rationale_label=False`), so that they are trained on rather than refused.
        rationale_source (`str`, *optional*, defaults to `"auto"`):
            Who writes the rationales of kept pseudo-labels: `"prover"` (the preference-proving model, Eq. 5
            selection), `"judge"` (the judge's own rationale of a run that agrees with the label), or `"auto"`
            (the prover when a prover model is given or trained, else the judge). The initial judge's data always
            comes from a prover (the base model prompted with the known label when none is given).
        retrain_from (`str`, *optional*, defaults to `"base"`):
            Each round trains from the base model (`"base"`) or continues from the previous round's judge
            (`"previous"`).
        initial_judge (`str`, *optional*):
            A LoRA adapter (over the base model) or a full model folder that the judge's training starts from instead
            of the base model: the initial judge (round 0), and every round when `retrain_from="base"`. E.g. a
            direct-mode warm-up trained by `trl-gram train --mode direct` on labelled pairs. An adapter is trained
            further (not stacked), so the run still ends with one adapter over the base model. The prover still
            starts from the base model.
        prover_model (`str`, *optional*):
            Path of a preference-proving model; by default the base model is the prover.
        train_prover (`bool`, *optional*, defaults to `True`):
            Fine-tune the prover on the seed rationales before it writes any proof.
        prover_num_train_epochs (`float`, *optional*, defaults to `1.0`):
            Epochs of prover training.
        prover_learning_rate (`float`, *optional*):
            Learning rate of prover training (default: the judge's).
        proof_samples (`int`, *optional*, defaults to `4`):
            Proofs sampled per pair (`k`) before Eq. 5 selection.
        proof_temperature (`float`, *optional*, defaults to `0.8`):
            Sampling temperature of proofs.
        proof_max_new_tokens (`int`, *optional*, defaults to `384`):
            Cap on a proof's length in tokens.
        proof_require_finished (`bool`, *optional*, defaults to `True`):
            Only proofs that end within `proof_max_new_tokens` are selectable (a cut-off proof is malformed).
        bootstrap_seed_rationales (`bool`, *optional*, defaults to `False`):
            When the seed data has no rationale column, let the base model write seed rationales for the known labels
            (kept only when they pass the rule checks). Offline stand-in for human rationales.
        final_finetune (`bool`, *optional*, defaults to `True`):
            After the last round, fine-tune the judge on the seed rationale data (continuing from the last judge).
        self_train_eval_max_samples (`int`, *optional*, defaults to `200`):
            Held-out pairs judged after each stage (`None`: all).
        train_command (`str`, *optional*):
            Run each training as a separate process: this command prefix followed by
            `-m trl_gram.cli train --config <stage>/train.yaml` (e.g. `"accelerate launch --config_file
            recipes/accelerate/deepspeed_zero3.yaml"` for multi-GPU DeepSpeed ZeRO-3; `"python"` for one process). The loop
            itself (pseudo-labelling, proofs) stays in the calling process. Needs the model as a path.
        plot (`bool`, *optional*, defaults to `True`):
            Write `self_training.png` (kept fraction and eval accuracy per round).
        judge_backend (`str`, *optional*, defaults to `"transformers"`):
            Backend ([`~trl_gram.judge.JudgeSpec`] vocabulary) of the generating stages (evaluation, pseudo-labelling, proof sampling and Eq. 5 scoring,
            bootstrapped seed rationales): `"transformers"` (the models in memory) or `"vllm"` (each checkpoint is
            loaded into `vllm.LLM`, released before every training stage and reloaded from the new checkpoint after
            it; adapters are merged first) or `"openai"` (running OpenAI-compatible vLLM engines at `engine_urls`
            that serve the base model; each stage's LoRA adapter is loaded into them at runtime, so training must use
            PEFT and the engines need `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`; see
            docs/judge_backends.md). Training itself always runs on transformers.
        vllm_tensor_parallel_size (`int`, *optional*, defaults to `1`):
            GPUs one vLLM engine is split over (`judge_backend="vllm"`).
        vllm_gpu_memory_utilization (`float`, *optional*):
            Share of GPU memory a vLLM engine may take (default: vLLM backend's, see
            [`~trl_gram.judge.backends.vllm.VLLMBackend.load`]).
        engine_urls (`list[str]`, *optional*):
            Base URLs of the engines (`judge_backend="openai"`).
        served_model_name (`str`, *optional*):
            Name the engines serve the base model under (`judge_backend="openai"`; default: the model path, or the
            one model they serve).
    """

    rounds: int = field(default=3, metadata={"help": "Self-training rounds after the initial judge."})
    unlabeled_per_round: int | None = field(
        default=None, metadata={"help": "Unlabeled pairs per round (None: the pool split evenly over the rounds)."}
    )
    pseudo_label_votes: int = judge_field("votes", "Judge runs per order when pseudo-labelling.")
    pseudo_label_swap: str = judge_field("swap", "Orders judged when pseudo-labelling.")
    pseudo_label_temperature: float = judge_field("temperature", "Sampling temperature when pseudo_label_votes > 1.")
    min_vote_agreement: float = field(
        default=0.5, metadata={"help": "Share of runs that must agree with the majority label."}
    )
    drop_tied_votes: bool = field(
        default=True,
        metadata={"help": "False (with min_vote_agreement=0): tied votes keep the averaged-probability label."},
    )
    confidence_threshold: float | None = field(
        default=0.6, metadata={"help": "Minimum probability of the predicted label (None: off)."}
    )
    max_rationale_tokens: int | None = field(
        default=512, metadata={"help": "Drop rationales longer than this many tokens (None: off)."}
    )
    check_support: bool = field(
        default=True, metadata={"help": "Drop rationales whose conclusion names the other response."}
    )
    rationale_source: str = field(
        default="auto",
        metadata={"help": "Who writes rationales of pseudo-labels.", "choices": ["auto", "prover", "judge"]},
    )
    retrain_from: str = field(
        default="base",
        metadata={
            "help": "Train each round from the base model or the previous judge.",
            "choices": ["base", "previous"],
        },
    )
    initial_judge: str | None = field(
        default=None,
        metadata={"help": "LoRA adapter or model folder the judge's training starts from (e.g. a direct warm-up)."},
    )
    prover_model: str | None = field(default=None, metadata={"help": "Path of a preference-proving model."})
    train_prover: bool = field(default=True, metadata={"help": "Fine-tune the prover on the seed rationales."})
    prover_num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs of prover training."})
    prover_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of prover training (default: the judge's)."}
    )
    proof_samples: int = field(default=4, metadata={"help": "Proofs sampled per pair before Eq. 5 selection."})
    proof_temperature: float = field(default=0.8, metadata={"help": "Sampling temperature of proofs."})
    proof_max_new_tokens: int = field(default=384, metadata={"help": "Cap on a proof's length in tokens."})
    proof_require_finished: bool = field(
        default=True, metadata={"help": "Only proofs that end within proof_max_new_tokens are selectable."}
    )
    bootstrap_seed_rationales: bool = field(
        default=False,
        metadata={"help": "Let the base model write seed rationales for known labels when the seed data has none."},
    )
    final_finetune: bool = field(
        default=True, metadata={"help": "Fine-tune the last judge on the seed rationale data."}
    )
    self_train_eval_max_samples: int | None = field(
        default=200, metadata={"help": "Held-out pairs judged after each stage (None: all)."}
    )
    train_command: str | None = field(
        default=None,
        metadata={"help": "Run each training as `<command> -m trl_gram.cli train --config <stage>/train.yaml`."},
    )
    plot: bool = field(default=True, metadata={"help": "Write self_training.png."})
    judge_backend: str = field(
        default="transformers",
        metadata={
            "help": "Engine of the generating stages (a JudgeSpec backend: transformers or vllm).",
            "choices": list(LOOP_BACKENDS),
        },
    )
    vllm_tensor_parallel_size: int = judge_field("tensor_parallel_size")
    vllm_gpu_memory_utilization: float | None = judge_field("gpu_memory_utilization")
    engine_urls: list[str] = judge_field("engine_urls", "Base URLs of the engines (judge_backend=openai).")
    served_model_name: str | None = judge_field("served_model_name", "Base model's name on the engines (openai).")

    def __post_init__(self):
        if self.rounds < 0:
            raise ValueError(f"`rounds` must be >= 0, got {self.rounds}.")
        if self.unlabeled_per_round is not None and self.unlabeled_per_round < 1:
            raise ValueError(f"`unlabeled_per_round` must be positive, got {self.unlabeled_per_round}.")
        if self.pseudo_label_votes < 1:
            raise ValueError(f"`pseudo_label_votes` must be >= 1, got {self.pseudo_label_votes}.")
        for name, choices in (
            ("pseudo_label_swap", SWAPS),
            ("rationale_source", ("auto", "prover", "judge")),
            ("retrain_from", ("base", "previous")),
            ("judge_backend", LOOP_BACKENDS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"`{name}` must be one of {choices}, got {getattr(self, name)!r}.")
        if not 0.0 <= self.min_vote_agreement <= 1.0:
            raise ValueError(f"`min_vote_agreement` must be in [0, 1], got {self.min_vote_agreement}.")
        if self.confidence_threshold is not None and not 0.0 <= self.confidence_threshold <= 1.0:
            raise ValueError(f"`confidence_threshold` must be in [0, 1], got {self.confidence_threshold}.")
        if self.judge_backend == "openai" and not self.engine_urls:
            raise ValueError("`judge_backend='openai'` needs `engine_urls`, the base URLs of the running engines.")
        if self.judge_backend != "openai" and self.engine_urls:
            raise ValueError(f"`engine_urls` is only used with judge_backend 'openai', not {self.judge_backend!r}.")
        if self.initial_judge is not None:
            path = Path(self.initial_judge)
            if not ((path / "adapter_config.json").is_file() or (path / "config.json").is_file()):
                raise ValueError(
                    f"`initial_judge={self.initial_judge!r}` is neither a LoRA adapter folder (adapter_config.json) "
                    "nor a model folder (config.json)."
                )
        if self.proof_samples < 1:
            raise ValueError(f"`proof_samples` must be >= 1, got {self.proof_samples}.")
