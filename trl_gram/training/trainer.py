"""``GramRewardTrainer``: train a generative judge (GRAM-R² reasoning, GRAM v1 direct, or GRAM v1 pair pre-training)
on preference pairs, on top of TRL's ``SFTTrainer``."""

from __future__ import annotations

import functools

import torch
from accelerate.utils import gather_object, is_peft_model
from datasets import Dataset, concatenate_datasets
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.utils import logging
from trl import SFTTrainer

from ..judge import GramJudge, GramJudgeConfig
from ..judge_metrics import judge_outcomes, metrics_from_outcomes
from ..templates import JudgeTemplate
from .config import GramRewardConfig, resolve_template
from .judge_examples import JudgeExampleBuilder, build_judge_dataset, validate_pairs
from .losses import is_slot, label_logits_at_slots, label_smoothing_loss, pairwise_label_loss, split_label_slots
from .pair_batches import PairedOrderSampler, PairOrderCollator, complete_pairs

logger = logging.get_logger(__name__)


class GramRewardTrainer(SFTTrainer):
    """Trainer for generative pairwise judges.

    It turns preference pairs into judge examples (prompt rendered as the judge renders it, label position balanced,
    completion = rationale + label, label alone, or both responses for pair pre-training), then trains with
    ``SFTTrainer`` (completion-only loss, packing, PEFT, quantization, DeepSpeed all apply), optionally replacing the
    label token's loss by GRAM v1's 2-way label-smoothing loss. Each evaluation also judges the eval pairs with
    [`~trl_gram.judge.GramJudge`] and logs ``accuracy``, ``swap_agreement`` and ``parse_failure_rate``.

    Args:
        model (`str` or [`~transformers.PreTrainedModel`]):
            Model id/path, or a loaded causal LM (PEFT models included).
        args ([`GramRewardConfig`], *optional*):
            Training and judge-evaluation settings (default: `GramRewardConfig("<model name>-GRAM")`).
        train_dataset ([`~datasets.Dataset`], *optional*):
            Preference rows (`prompt`/`chosen`/`rejected`, plain or conversational, or
            `prompt`/`response_a`/`response_b`/`label`), with a rationale column in `reason` mode. An already
            tokenized dataset (`input_ids`) is used as is. Files: [`~trl_gram.formats.load_pairs`].
        eval_dataset ([`~datasets.Dataset`] or `dict[str, Dataset]`, *optional*):
            The same kind of rows (or a dict of them); rationales are optional (without them, only the judge metrics
            are computed, through [`~trl_gram.judge_metrics`]).
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The tokenizer (loaded from the model when `None`).
        template ([`~trl_gram.templates.JudgeTemplate`] or `str`, *optional*):
            A template overriding `args.template`.
        data_collator, callbacks, optimizers, peft_config, quantization_config (*optional*):
            As in `SFTTrainer`.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from trl_gram import GramRewardConfig, GramRewardTrainer, default_model_path
    >>> pairs = Dataset.from_list([{"prompt": "2 + 2?", "chosen": "4", "rejected": "5"}] * 8)
    >>> args = GramRewardConfig("runs/judge", mode="direct", max_steps=2, use_cpu=True, report_to="none")
    >>> trainer = GramRewardTrainer(default_model_path(), args=args, train_dataset=pairs)
    >>> trainer.train()
    ```
    """

    _tag_names = ["trl", "sft", "trl-gram", "gram-reward-model"]
    _name = "GRAM"

    def __init__(
        self,
        model,
        args: GramRewardConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        template: JudgeTemplate | str | None = None,
        data_collator=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config=None,
        quantization_config=None,
    ):
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
            args = GramRewardConfig(f"{str(name).rstrip('/').split('/')[-1]}-GRAM")
        elif not isinstance(args, GramRewardConfig):
            raise TypeError(f"`args` must be a GramRewardConfig, got {type(args).__name__}.")
        if train_dataset is None:
            raise ValueError("`train_dataset` is required.")
        if processing_class is None:
            source = model if isinstance(model, str) else model.config._name_or_path
            processing_class = AutoTokenizer.from_pretrained(source, trust_remote_code=args.trust_remote_code)
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        tokenizer = processing_class

        self.mode = args.mode
        self.pairwise = args.pairwise_batches
        self.template = resolve_template(template if template is not None else args.template, args.mode)
        self.judge = None
        render = None
        if self.mode != "pretrain":
            # The judge renders the training prompts too, so training and inference read the same text.
            self.judge = GramJudge(None, tokenizer, config=self._judge_config(args, self.template))
            render = functools.partial(self.judge.render_prompt, mode=self.mode)
        self.builder = JudgeExampleBuilder(
            tokenizer,
            self.template,
            self.mode,
            max_length=args.max_length,
            min_response_tokens=args.min_response_tokens,
            pretrain_use_chat_template=args.pretrain_use_chat_template,
            render_prompt=render,
            reason_prefix=(args.judge_kwargs or {}).get("reason_prefix", ""),
        )
        # Direct examples beside reasoning ones (`direct_examples`): the same pairs, rendered as direct mode renders them.
        self.direct_builder = None
        if self.mode == "reason" and args.direct_examples:
            direct_template = resolve_template(args.direct_template, "direct")
            direct_judge = GramJudge(None, tokenizer, config=self._judge_config(args, direct_template, "direct"))
            self.direct_builder = JudgeExampleBuilder(
                tokenizer,
                direct_template,
                "direct",
                max_length=args.max_length,
                min_response_tokens=args.min_response_tokens,
                render_prompt=functools.partial(direct_judge.render_prompt, mode="direct"),
            )
            if self.direct_builder.label_ids != self.builder.label_ids:
                raise ValueError("`direct_template` must use the same label words as `template`.")
        self.label_token_ids = getattr(self.builder, "label_ids", None)
        self.data_stats: dict[str, dict] = {}
        self._eval_pairs: dict[str, tuple[list[dict], list | None]] = {}
        self.rendered_train_dataset = None

        train_dataset = self._prepare_pairs(train_dataset, args, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self._prepare_pairs(v, args, f"eval_{k}") for k, v in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = self._prepare_pairs(eval_dataset, args, "eval")

        super().__init__(
            model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            peft_config=peft_config,
            quantization_config=quantization_config,
        )
        self._captured_hidden = None
        self._capturing = False
        if self.pairwise:
            self.data_collator = PairOrderCollator(self.data_collator)
        if self.mode != "pretrain" and args.label_loss in ("label_smoothing", "pairwise"):
            causal = self.model.get_base_model() if is_peft_model(self.model) else self.model
            causal.base_model.register_forward_hook(self._capture_hidden)

    # -----------------------------------------------------------------------------------------------------------------
    # Data
    # -----------------------------------------------------------------------------------------------------------------

    @staticmethod
    def _judge_config(args: GramRewardConfig, template: JudgeTemplate, mode: str | None = None) -> GramJudgeConfig:
        extra = dict(args.judge_kwargs or {})
        extra.setdefault("max_length", args.max_length or 4096)
        return GramJudgeConfig(
            mode=mode or args.mode,
            template=template,
            swap=args.judge_eval_swap,
            votes=args.judge_eval_votes,
            max_new_tokens=args.judge_eval_max_new_tokens,
            seed=args.seed,
            show_progress=False,
            **extra,
        )

    def _prepare_pairs(self, dataset, args: GramRewardConfig, name: str):
        """Validate and tokenize one dataset; keep its pairs for judge evaluation (eval sets)."""
        if not isinstance(dataset, Dataset):
            raise TypeError(f"The {name} dataset must be a `datasets.Dataset`, got {type(dataset).__name__}.")
        if "input_ids" in dataset.column_names:
            return dataset
        is_train = name == "train"
        label_words = self.template.label_words if self.template is not None else ("A", "B")
        with_rationale = args.rationale_column in dataset.column_names
        pairs, skipped = validate_pairs(
            dataset,
            label_words=label_words,
            rationale_column=args.rationale_column,
            need_label=self.mode != "pretrain",
            need_rationale=self.mode == "reason" and is_train,
            check_rationale=args.check_rationale_label,
            on_invalid=args.on_invalid_row,
            name=name,
            rationale_sentences=args.rationale_max_sentences,
            rationale_before_reference=args.rationale_before_reference,
        )
        if not is_train:
            subset_col = args.judge_eval_subset_column
            subsets = [dataset[p["row"]][subset_col] for p in pairs] if subset_col in dataset.column_names else None
            prefix = "eval" if name == "eval" else name
            self._eval_pairs[prefix] = (pairs, subsets)
            if self.mode == "reason":
                pairs = [p for p in pairs if p["rationale"]] if with_rationale else []
        swap = args.swap if is_train else "both"
        with_order = args.label_loss == "pairwise" and is_train
        tokenized, rendered, stats = build_judge_dataset(
            pairs, self.builder, swap, args.seed, num_proc=args.dataset_num_proc, name=name, with_order=with_order
        )
        if with_order:
            tokenized = self._whole_pairs(tokenized, stats)
        if is_train and self.direct_builder is not None:
            direct_order = args.direct_loss == "pairwise"
            direct, _, direct_stats = build_judge_dataset(
                pairs,
                self.direct_builder,
                args.direct_swap or swap,
                args.seed,
                num_proc=args.dataset_num_proc,
                name=f"{name} direct",
                with_order=direct_order,
            )
            if direct_order:
                direct = self._whole_pairs(direct, direct_stats)
                stats["direct_unpaired_dropped"] = direct_stats["unpaired_dropped"]
                if with_order:  # both kinds paired: the direct pairs' codes follow the reasoning ones'
                    direct = direct.map(lambda ex: {"pair_order": ex["pair_order"] + 2 * len(pairs)})
            if direct_order != with_order:  # the unpaired kind: single units between the pairs
                if direct_order:
                    tokenized = tokenized.add_column("pair_order", [-1] * len(tokenized))
                else:
                    direct = direct.add_column("pair_order", [-1] * len(direct))
            tokenized = concatenate_datasets([tokenized, direct]).shuffle(seed=args.seed)
            stats["direct_examples"] = direct_stats["examples"]
        stats["skipped"] = dict(skipped)
        self.data_stats[name] = stats
        if is_train:
            self.rendered_train_dataset = rendered
            if not len(tokenized):
                raise ValueError(
                    f"No usable training example is left: {stats['too_long']} example(s) do not fit `max_length`="
                    f"{args.max_length} and {sum(skipped.values())} row(s) were skipped as invalid."
                )
            logger.info(f"GRAM training data: {stats}")
        return tokenized

    @staticmethod
    def _whole_pairs(tokenized: Dataset, stats: dict) -> Dataset:
        """The pairwise loss needs both orders: drop an order whose other one did not fit (``unpaired_dropped``)."""
        kept = sorted(i for rows in complete_pairs(tokenized["pair_order"]) for i in rows)
        stats["unpaired_dropped"] = len(tokenized) - len(kept)
        if stats["unpaired_dropped"]:
            tokenized = tokenized.select(kept)
            stats["examples"] = len(tokenized)
        return tokenized

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.pairwise and "pair_order" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "pair_order"]

    def _get_train_sampler(self, train_dataset=None):
        """With the pairwise label loss: whole pairs, their two orders side by side, and the examples of a kind that
        is not paired as single units between them ([`PairedOrderSampler`]), so that no batch splits a pair; otherwise
        the `Trainer`'s sampler."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.pairwise or "pair_order" not in getattr(dataset, "column_names", []):
            return super()._get_train_sampler(train_dataset)
        strategy = self.args.train_sampling_strategy
        lengths = [len(ids) for ids in dataset["input_ids"]] if strategy == "group_by_length" else None
        return PairedOrderSampler(
            dataset["pair_order"],
            group_size=self.args.train_batch_size * self.args.gradient_accumulation_steps,
            lengths=lengths,
            shuffle=strategy != "sequential",
            batch_size=self._train_batch_size,
        )

    # -----------------------------------------------------------------------------------------------------------------
    # Loss
    # -----------------------------------------------------------------------------------------------------------------

    def _capture_hidden(self, module, inputs, output):
        if self._capturing:
            self._captured_hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state

    def _label_only_forward(self, model, inputs):
        """The forward of a batch whose only targets are label slots (direct examples with the 2-way loss): the
        backbone's hidden states are captured by the hook and the LM head runs on the last position only
        (``logits_to_keep=1``), instead of the full-vocabulary logits, entropy and token accuracy of every position
        that ``SFTTrainer.compute_loss`` computes. The model is still called through its (DDP / DeepSpeed) wrapper.
        Returns a float32 zero (the next-token part of the loss; the 2-way term is added by the caller) and the
        outputs."""
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**model_inputs, use_cache=False, logits_to_keep=1)
        if self.model.training:
            if "attention_mask" in inputs:
                local = inputs["attention_mask"].sum()
            else:  # padding-free batches carry position_ids instead
                local = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
            self._total_train_tokens += self.accelerator.gather_for_metrics(local).sum().item() // self._tp_size
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        return torch.zeros((), dtype=torch.float32, device=outputs.logits.device), outputs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pair_order = inputs.pop("pair_order", None)
        labels = inputs.get("labels")
        if labels is None or self.label_token_ids is None or not bool(is_slot(labels).any()):
            if labels is not None and self.label_token_ids is not None:
                inputs["labels"] = split_label_slots(labels, self.label_token_ids, keep_in_lm=True)[0]
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.args.label_loss == "nll":
            inputs["labels"] = split_label_slots(labels, self.label_token_ids, keep_in_lm=True)[0]
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        # Direct judges: the 2-way loss replaces the label token's loss (GRAM v1). Reasoning judges generate the label,
        # so its next-token loss stays and the 2-way term is added.
        keep = self.mode == "reason"
        lm_labels, slot_mask, targets = split_label_slots(labels, self.label_token_ids, keep_in_lm=keep)
        n_out_of_lm = 0  # label slots whose token is trained by the 2-way term alone
        if keep and pair_order is not None:  # paired direct examples beside reasoning ones: no per-order token loss
            direct_rows = ((labels != -100) & ~slot_mask).sum(dim=1) == 0  # a direct example: its label alone
            paired = (pair_order.to(slot_mask.device) >= 0) & direct_rows
            paired_slots = slot_mask & paired.unsqueeze(1)
            lm_labels = lm_labels.masked_fill(paired_slots, -100)
            n_out_of_lm = int(paired_slots.sum())
        inputs["labels"] = lm_labels
        label_only = not bool((lm_labels != -100).any())  # direct examples: no next-token target at all
        self._capturing = True
        try:
            if label_only:
                loss, outputs = self._label_only_forward(model, inputs)
            else:
                result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
                loss, outputs = result if return_outputs else (result, None)
            hidden = self._captured_hidden
        finally:
            self._capturing, self._captured_hidden = False, None
        causal = self.accelerator.unwrap_model(model)
        if is_peft_model(causal):
            causal = causal.get_base_model()
        text_config = causal.config.get_text_config()
        logits = label_logits_at_slots(
            hidden, slot_mask, causal.get_output_embeddings(), self.label_token_ids, text_config
        )
        targets = targets.to(logits.device)
        pair_stats = None
        if self.pairwise and pair_order is not None:
            per_row, pair_stats = pairwise_label_loss(
                logits,
                targets,
                pair_order.to(logits.device),
                self.args.label_smoothing_epsilon,
                self.args.pairwise_tilt_weight,
            )
            ls_sum = per_row.sum()
        else:
            ls_sum = label_smoothing_loss(logits, targets, self.args.label_smoothing_epsilon, "sum")
        n_slots = int(slot_mask.sum())
        n_lm = int((lm_labels[:, 1:] != -100).sum()) if lm_labels.dim() == 2 else int((lm_labels != -100).sum())
        weight = self.args.label_loss_weight
        if num_items_in_batch is not None:
            term = weight * ls_sum / torch.as_tensor(num_items_in_batch, device=ls_sum.device)
            if self.args.average_tokens_across_devices:
                term = term * (self.accelerator.num_processes // self.get_tp_size())
            loss = loss + term.to(loss.dtype)
        else:  # the parent divided the LM sum by its own token count: re-weight both over all supervised positions
            total = n_lm + n_out_of_lm if keep else n_lm + n_slots
            loss = (loss * max(n_lm, 1) + weight * ls_sum.to(loss.dtype)) / max(total, 1)
        mode = "train" if self.model.training else "eval"
        with torch.no_grad():
            correct = (logits.argmax(-1) == targets).float().sum()
            values = [correct, ls_sum.detach().float(), torch.tensor(float(n_slots), device=correct.device)]
            if pair_stats is not None:
                values += [pair_stats["pair_correct"], pair_stats["tilt"], pair_stats["pairs"]]
            stats = self.accelerator.gather_for_metrics(torch.stack(values).unsqueeze(0)).sum(0)
        if stats[2] > 0:
            self._metrics[mode]["label_accuracy"].append((stats[0] / stats[2]).item())
            self._metrics[mode]["label_loss"].append((stats[1] / stats[2]).item())
        if pair_stats is not None and stats[5] > 0:  # the pairwise loss: accuracy of s, mean position tilt b
            self._metrics[mode]["pair_accuracy"].append((stats[3] / stats[5]).item())
            self._metrics[mode]["position_tilt"].append((stats[4] / stats[5]).item())
        return (loss, outputs) if return_outputs else loss

    # -----------------------------------------------------------------------------------------------------------------
    # Evaluation
    # -----------------------------------------------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Loss on the tokenized eval examples and, unless ``judge_eval=False``, the judge metrics on the eval pairs.
        A raw preference dataset (or a dict of them) passed here is prepared like the ones given at construction."""
        if isinstance(eval_dataset, dict):
            eval_dataset = {
                k: self._prepare_pairs(v, self.args, f"{metric_key_prefix}_{k}") if isinstance(v, Dataset) else v
                for k, v in eval_dataset.items()
            }
        elif isinstance(eval_dataset, Dataset) and "input_ids" not in eval_dataset.column_names:
            eval_dataset = self._prepare_pairs(eval_dataset, self.args, metric_key_prefix)
        return super().evaluate(
            eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        entry = self._eval_pairs.get(metric_key_prefix)
        if self.args.judge_eval and self.judge is not None and entry is not None and entry[0]:
            metrics = self.judge_metrics(*entry)
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in metrics.items()})
        return output

    @torch.no_grad()
    def judge_metrics(self, pairs: list[dict], subsets: list | None = None) -> dict[str, float]:
        """Judge (up to ``judge_eval_max_samples``) pairs with the model being trained and return the metrics."""
        limit = self.args.judge_eval_max_samples
        if limit is not None:
            pairs, subsets = pairs[:limit], (subsets[:limit] if subsets is not None else None)
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        # A fresh judge per evaluation: nothing judged with earlier weights can be reused.
        judge = GramJudge(model, self.processing_class, config=self.judge.config)
        # Under ZeRO-3 every rank must run the same generate calls; otherwise each rank judges its own shard.
        shard = self.accelerator.num_processes > 1 and not is_deepspeed_zero3_enabled()
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        indices = list(range(rank, len(pairs), world)) if shard else list(range(len(pairs)))
        try:
            outcomes = judge_outcomes(judge, [pairs[i] for i in indices], swap=self.args.judge_eval_swap)
        finally:
            if was_training:
                model.train()
        if shard:
            gathered = gather_object([(i, o) for i, o in zip(indices, outcomes)])
            outcomes = [o for _, o in sorted(gathered, key=lambda x: x[0])]
        metrics = metrics_from_outcomes(outcomes, subsets)
        return {k: float(v) for k, v in metrics.items()}  # NaN: undefined (judge_metrics)
