"""``GramSelfTrainer``: the GRAM-R² pipeline (seed rationales → prover → initial judge → self-training rounds → final
fine-tune), resumable stage by stage.

Layout of ``args.output_dir`` (every stage writes its ``summary.json`` last; a stage with a summary is finished and
never recomputed; inside a stage, finished steps (predictions, kept data, checkpoint) are reused too)::

    base_eval.json          held-out metrics of the untrained base model
    seed/                   seed.jsonl (rationale rows), summary.json
    prover/                 model/ (trained prover), summary.json
    round_00/               initial judge: kept.jsonl (labeled pairs + synthesized rationales), dropped.json,
                            checkpoint/, eval.json, summary.json
    round_01/ …             predictions.jsonl (every pseudo-label and why it was dropped), kept.jsonl,
                            dropped.json, checkpoint/, eval.json, summary.json
    final/                  checkpoint/ after the fine-tune on seed rationales, summary.json
    summary.jsonl           one line per finished stage
    self_training.png       kept fraction and eval accuracy per round
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.trainer_utils import IntervalStrategy, get_last_checkpoint
from transformers.utils import logging

from ..judge import GramJudge, GramJudgeConfig
from .config import GramRewardConfig, resolve_template
from .data import render_pairs, validate_pairs
from .denoise import Candidate, DenoiseRules, denoise, swap_label_mentions
from .evaluation import judge_metrics
from .prover import PreferenceProver, ProverConfig
from .self_training_config import SelfTrainingConfig

__all__ = ["GramSelfTrainer", "SelfTrainingConfig"]

logger = logging.get_logger(__name__)


def _write_json(path: Path, obj):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _write_jsonl(path: Path, rows: list[dict]):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
    os.replace(tmp, path)


def _read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class GramSelfTrainer:
    """Runs the GRAM-R² training pipeline.

    Args:
        model: The base model: a path/id (reloaded whenever a fresh copy is needed) or a loaded causal LM (deep-copied).
        args: A :class:`GramRewardConfig`: how each judge is trained; ``output_dir`` is the root of the run.
        self_training_args: A :class:`SelfTrainingConfig`.
        labeled_dataset: Rationale-free labeled pairs (``prompt``/``chosen``/``rejected``...) for the initial judge;
            a rationale column, when present, is used instead of proofs.
        unlabeled_dataset: Unlabeled pairs (``prompt``/``response_a``/``response_b``; labels, if any, are ignored).
        seed_dataset: Pairs with human rationales (prover training and final fine-tune).
        eval_dataset: Held-out labeled pairs, judged after every stage.
        processing_class: The tokenizer (loaded from ``model`` when ``None``).
        prover: A :class:`PreferenceProver`, or ``None`` (``self_training_args.prover_model`` or the base model).
        template / peft_config / quantization_config / callbacks: Passed to every :class:`GramRewardTrainer`.
        train_config_extra: Extra keys written into each stage's ``train.yaml`` when ``train_command`` is set (e.g.
            the CLI's model arguments).
    """

    def __init__(
        self,
        model,
        args: GramRewardConfig,
        self_training_args: SelfTrainingConfig | None = None,
        labeled_dataset=None,
        unlabeled_dataset=None,
        seed_dataset=None,
        eval_dataset=None,
        processing_class=None,
        prover=None,
        template=None,
        peft_config=None,
        quantization_config=None,
        callbacks=None,
        train_config_extra: dict | None = None,
    ):
        if not isinstance(args, GramRewardConfig):
            raise TypeError(f"`args` must be a GramRewardConfig, got {type(args).__name__}.")
        if args.mode == "pretrain":
            raise ValueError("Self-training trains a judge: use mode='reason' (GRAM-R²) or 'direct'.")
        self.args = args
        self.sargs = self_training_args or SelfTrainingConfig()
        if labeled_dataset is None:
            raise ValueError("`labeled_dataset` (labeled pairs for the initial judge) is required.")
        if self.sargs.rounds > 0 and unlabeled_dataset is None:
            raise ValueError("`unlabeled_dataset` is required when `rounds` > 0.")
        self.base = model
        self.tokenizer = processing_class or AutoTokenizer.from_pretrained(
            model if isinstance(model, str) else model.config._name_or_path
        )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.template = resolve_template(template if template is not None else args.template, args.mode)
        self.labeled, self.unlabeled, self.seed_data, self.eval_data = (
            labeled_dataset,
            unlabeled_dataset,
            seed_dataset,
            eval_dataset,
        )
        self.prover = prover
        self._user_prover = prover is not None
        self.peft_config, self.quantization_config, self.callbacks = peft_config, quantization_config, callbacks
        self.train_config_extra = dict(train_config_extra or {})
        self.root = Path(args.output_dir)
        self.label_words = self.template.label_words
        if self.sargs.train_command and not isinstance(model, str):
            raise ValueError("`train_command` launches training in another process: pass the model as a path.")
        self.eval_pairs = []
        if eval_dataset is not None:
            self.eval_pairs, _ = validate_pairs(
                eval_dataset, label_words=self.label_words, on_invalid="skip", rationale_column=None, name="eval"
            )
            limit = self.sargs.self_train_eval_max_samples
            self.eval_pairs = self.eval_pairs[:limit] if limit is not None else self.eval_pairs
        self.judge_model = None
        self.history: list[dict] = []
        self._vllm = None
        if self.sargs.judge_backend == "vllm":
            from .vllm_engines import VLLMEngines

            self._vllm = VLLMEngines(
                self.sargs.vllm_tensor_parallel_size,
                self.sargs.vllm_gpu_memory_utilization,
                dtype=(self.args.model_init_kwargs or {}).get("dtype", "auto"),
                load_base=self._fresh_base,
            )

    # -----------------------------------------------------------------------------------------------------------------
    # Models
    # -----------------------------------------------------------------------------------------------------------------

    def _fresh_base(self):
        if isinstance(self.base, str):
            kwargs = dict(self.args.model_init_kwargs or {})
            if self.quantization_config is not None:
                kwargs["quantization_config"] = self.quantization_config
            return AutoModelForCausalLM.from_pretrained(self.base, **kwargs)
        return copy.deepcopy(self.base)

    def _load(self, path: Path, trainable: bool = False):
        if (path / "adapter_config.json").is_file():
            from peft import PeftModel

            return PeftModel.from_pretrained(self._fresh_base(), str(path), is_trainable=trainable)
        kwargs = dict(self.args.model_init_kwargs or {})
        return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)

    def _device_model(self, model):
        if not getattr(model, "hf_device_map", None) and not getattr(model, "is_loaded_in_4bit", False):
            model = model.to(self.args.device)
        return model.eval()

    def _judge(self, model, seed: int, **overrides) -> GramJudge:
        fields = dict(
            mode=self.args.mode,
            template=self.template,
            swap="both",
            votes=1,
            max_new_tokens=self.args.judge_eval_max_new_tokens,
            max_length=self.args.max_length or 4096,
            seed=seed,
            show_progress=True,
        )
        fields.update(self.args.judge_kwargs or {})
        fields.update(overrides)
        if self._vllm is not None:
            return self._vllm.judge(self._model_path(model), GramJudgeConfig(**fields))
        return GramJudge(self._device_model(model), self.tokenizer, config=GramJudgeConfig(**fields))

    def _prover_source(self) -> Path | None:
        done = self.root / "prover" / "summary.json"
        path = self.root / "prover" / "model" if done.is_file() else None
        return path or (Path(self.sargs.prover_model) if self.sargs.prover_model else None)

    def _generating_prover(self) -> PreferenceProver:
        """The prover that writes proofs: with `judge_backend="vllm"`, its checkpoint on a vLLM engine."""
        if self._vllm is None or self._user_prover:
            return self._get_prover()
        source = self._prover_source() or self._model_path(None)
        return self._vllm.prover(source, self._get_prover(config_only=True), self.label_words)

    def _model_path(self, model) -> str:
        """The checkpoint folder a vLLM engine loads for `model` (a stage's checkpoint, else the base)."""
        path = getattr(model, "_gram_path", None) or (self.base if isinstance(self.base, str) else None)
        if path is None:
            raise ValueError("`judge_backend='vllm'` needs the base model as a path (vLLM loads checkpoints).")
        return path

    def _get_prover(self, config_only: bool = False) -> PreferenceProver:
        if self.prover is None or config_only:
            source = self._prover_source()
            cfg = ProverConfig(
                num_samples=self.sargs.proof_samples,
                temperature=self.sargs.proof_temperature,
                max_new_tokens=self.sargs.proof_max_new_tokens,
                require_finished=self.sargs.proof_require_finished,
                max_length=self.args.max_length or 2048,
                seed=self.args.seed,
                rules=DenoiseRules(
                    max_rationale_tokens=self.sargs.max_rationale_tokens, check_support=self.sargs.check_support
                ),
            )
            if config_only:
                return cfg
            model = self._load(source) if source is not None else self._fresh_base()
            self.prover = PreferenceProver(
                self._device_model(model), self.tokenizer, cfg, label_words=self.label_words
            )
        return self.prover

    def _rationale_source(self) -> str:
        if self.args.mode == "direct":
            return "none"
        if self.sargs.rationale_source != "auto":
            return self.sargs.rationale_source
        has_prover = (
            self._user_prover or self.sargs.prover_model or (self.sargs.train_prover and (self.seed_data is not None))
        )
        return "prover" if has_prover else "judge"

    # -----------------------------------------------------------------------------------------------------------------
    # Stages
    # -----------------------------------------------------------------------------------------------------------------

    def run(self) -> list[dict]:
        """Run (or resume) the whole pipeline; returns the stage summaries."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.history = []
        if self.eval_pairs:
            path = self.root / "base_eval.json"
            if not path.is_file():
                _write_json(path, self._evaluate(self._fresh_base()))
            self.history.append({"stage": "base", "round": None, "eval": json.loads(path.read_text())})
        seed_rows = self._seed_stage()
        if self._rationale_source() == "prover" and self.sargs.train_prover and seed_rows and not self._user_prover:
            self._prover_stage(seed_rows)
        rounds = range(0, self.sargs.rounds + 1)
        for r in tqdm(rounds, desc="GRAM self-training rounds"):
            self.history.append(self._round(r))
            self._write_summary()
        if self.sargs.final_finetune and seed_rows and self.args.mode == "reason":
            self.history.append(self._final_stage(seed_rows))
            self._write_summary()
        return self.history

    def _seed_stage(self) -> list[dict]:
        if self.seed_data is None or self.args.mode != "reason":
            return []
        d = self.root / "seed"
        if (d / "summary.json").is_file():
            return _read_jsonl(d / "seed.jsonl")
        d.mkdir(parents=True, exist_ok=True)
        col = self.args.rationale_column
        if col in self.seed_data.column_names:
            pairs, skipped = validate_pairs(
                self.seed_data,
                label_words=self.label_words,
                rationale_column=col,
                need_rationale=True,
                on_invalid=self.args.on_invalid_row,
                name="seed",
            )
            rows = [self._row(p["question"], p["first"], p["second"], p["label"], p["rationale"]) for p in pairs]
            info = {"source": "dataset", "skipped": dict(skipped)}
        elif self.sargs.bootstrap_seed_rationales:
            pairs, _ = validate_pairs(self.seed_data, label_words=self.label_words, on_invalid="skip", name="seed")
            rows, dropped = self._prove(pairs, self._generating_prover(), seed=self.args.seed)
            info = {
                "source": "bootstrapped: written by the prover (the base model unless prover_model is set), told the label",
                "dropped": dropped,
            }
        else:
            raise ValueError(
                f"The seed dataset has no `{col}` column: supply human rationales or set bootstrap_seed_rationales."
            )
        _write_jsonl(d / "seed.jsonl", rows)
        _write_json(d / "summary.json", {"stage": "seed", "rows": len(rows), **info})
        return rows

    def _prover_stage(self, seed_rows: list[dict]):
        d = self.root / "prover"
        if (d / "summary.json").is_file():
            return
        if self._vllm is not None:
            self._vllm.release()  # training needs the memory
        prover = self._get_prover()
        pargs = copy.deepcopy(self.args)
        pargs.output_dir = str(d / "trainer")
        pargs.num_train_epochs = self.sargs.prover_num_train_epochs
        pargs.learning_rate = self.sargs.prover_learning_rate or self.args.learning_rate
        self._no_eval(pargs)
        last = get_last_checkpoint(pargs.output_dir) if Path(pargs.output_dir).is_dir() else None
        pargs.resume_from_checkpoint = last
        trainer = prover.train(Dataset.from_list(seed_rows), pargs, peft_config=self.peft_config)
        prover.model = self._device_model(trainer.accelerator.unwrap_model(trainer.model))
        prover.save_pretrained(str(d / "model"))
        _write_json(
            d / "summary.json",
            {
                "stage": "prover",
                "train_rows": len(seed_rows),
                "train_loss": trainer.state.log_history[-1].get("train_loss"),
            },
        )

    @staticmethod
    def _no_eval(args):
        args.eval_strategy = IntervalStrategy.NO
        args.do_eval = False
        args.load_best_model_at_end = False

    def _row(self, question, first, second, label: int, rationale: str | None) -> dict:
        row = {"prompt": question, "response_a": first, "response_b": second, "label": self.label_words[label]}
        if rationale is not None:
            row["rationale"] = rationale
        return row

    def _shown(self, pairs: list[dict], seed: int | None = None):
        """Each pair in a seeded, exactly balanced random order: ``((question, first, second, label), rationale)``,
        the rationale's references rewritten for swapped pairs. With ``swap="none"`` every pair keeps the order it
        is given in (e.g. rationales written for that order)."""
        how = "none" if self.args.swap == "none" else "random"
        for ex in render_pairs(pairs, how, self.args.seed if seed is None else seed, self.label_words):
            yield (ex["question"], ex["first"], ex["second"], ex["label"]), ex["rationale"]

    def _prove(self, pairs: list[dict], prover: PreferenceProver, seed: int) -> tuple[list[dict], dict]:
        """Rationales for labeled pairs (shown in a seeded, balanced random order) from the prover."""
        shown = [s for s, _ in self._shown(pairs, seed)]
        proofs = prover.prove(
            [s[0] for s in shown],
            [s[1] for s in shown],
            [s[2] for s in shown],
            [self.label_words[s[3]] for s in shown],
        )
        rows = [self._row(q, a, b, lab, pr.rationale) for (q, a, b, lab), pr in zip(shown, proofs) if pr.rationale]
        return rows, {"no_valid_proof": len(shown) - len(rows), "kept": len(rows)}

    def _round(self, r: int) -> dict:
        d = self.root / f"round_{r:02d}"
        if (d / "summary.json").is_file():
            return json.loads((d / "summary.json").read_text())
        d.mkdir(parents=True, exist_ok=True)
        if (d / "kept.jsonl").is_file():
            kept, dropped = _read_jsonl(d / "kept.jsonl"), json.loads((d / "dropped.json").read_text())
        else:
            kept, dropped = self._round_data(r, d)
            _write_json(d / "dropped.json", dropped)
            _write_jsonl(d / "kept.jsonl", kept)
        merged = [row for k in range(r) for row in _read_jsonl(self.root / f"round_{k:02d}" / "kept.jsonl")] + kept
        if self.sargs.retrain_from == "previous" and r > 0:
            init = self.root / f"round_{r - 1:02d}" / "checkpoint"
        else:
            init = None
        model = self._train(merged, d, init)
        metrics = self._eval_stage(d, model)
        n_in = dropped.get("candidates", len(kept))
        balance = Counter(row["label"] for row in kept)
        summary = {
            "stage": "initial" if r == 0 else "self-train",
            "round": r,
            "candidates": n_in,
            "kept": len(kept),
            "kept_fraction": len(kept) / n_in if n_in else 0.0,
            "dropped": {k: v for k, v in dropped.items() if k not in ("candidates", "kept")},
            "label_balance": {w: balance.get(w, 0) for w in self.label_words},
            "train_rows": len(merged),
            "checkpoint": str(d / "checkpoint"),
            "eval": metrics,
        }
        _write_json(d / "summary.json", summary)
        logger.warning(f"GRAM self-training: {json.dumps({k: v for k, v in summary.items() if k != 'checkpoint'})}")
        return summary

    def _round_data(self, r: int, d: Path) -> tuple[list[dict], dict]:
        if r == 0:  # labeled pairs; rationales from the data, else from the prover
            col = self.args.rationale_column
            has_rationale = col in self.labeled.column_names
            pairs, skipped = validate_pairs(
                self.labeled,
                label_words=self.label_words,
                rationale_column=col if has_rationale else None,
                need_rationale=has_rationale and self.args.mode == "reason",
                on_invalid=self.args.on_invalid_row,
                name="labeled",
            )
            if self.args.mode == "direct" or has_rationale:
                rows = [self._row(*shown, rationale) for shown, rationale in self._shown(pairs)]
                return rows, {"candidates": len(pairs), "kept": len(rows), **skipped}
            rows, dropped = self._prove(pairs, self._generating_prover(), seed=self.args.seed)
            return rows, {"candidates": len(pairs), **dropped, **skipped}
        batch = self._unlabeled_batch(r)
        records = self._pseudo_label(r, batch, d)
        return self._select(records, batch)

    def _unlabeled_batch(self, r: int) -> list[dict]:
        pairs, _ = validate_pairs(self.unlabeled, need_label=False, on_invalid="skip", name="unlabeled")
        size = self.sargs.unlabeled_per_round or max(len(pairs) // max(self.sargs.rounds, 1), 1)
        return pairs[(r - 1) * size : r * size]

    def _current_judge_model(self, r: int):
        """The judge of round ``r - 1`` (in memory when just trained, else loaded from its checkpoint)."""
        path = self.root / f"round_{r - 1:02d}" / "checkpoint"
        if self.judge_model is None or getattr(self.judge_model, "_gram_path", None) != str(path):
            self.judge_model = self._load(path)
            self.judge_model._gram_path = str(path)
        return self.judge_model

    def _pseudo_label(self, r: int, batch: list[dict], d: Path) -> list[dict]:
        path = d / "predictions.jsonl"
        if path.is_file():
            return _read_jsonl(path)
        judge = self._judge(
            self._current_judge_model(r),
            seed=self.args.seed + r,
            swap=self.sargs.pseudo_label_swap,
            votes=self.sargs.pseudo_label_votes,
            temperature=self.sargs.pseudo_label_temperature,
        )
        judgments = judge.judge(
            [p["question"] for p in batch], [p["first"] for p in batch], [p["second"] for p in batch]
        )
        records = []
        for p, j in zip(batch, judgments):
            label = j.label
            conf = None if j.prob != j.prob else (j.prob if label == self.label_words[0] else 1.0 - j.prob)
            votes = [None if run.winner is None else self.label_words[run.winner - 1] for run in j.runs]
            rationale = None
            for run in j.runs:  # the judge's own rationale, from a run agreeing with the label, in pair order
                if run.failure is None and run.winner is not None and self.label_words[run.winner - 1] == label:
                    text = run.rationale
                    rationale = swap_label_mentions(text, self.label_words) if run.order == "BA" else text
                    break
            records.append(
                {
                    "prompt": p["question"],
                    "response_a": p["first"],
                    "response_b": p["second"],
                    "label": label,
                    "confidence": conf,
                    "votes": votes,
                    "judge_rationale": rationale,
                }
            )
        _write_jsonl(path, records)
        return records

    def _select(self, records: list[dict], batch: list[dict]) -> tuple[list[dict], dict]:
        source = self._rationale_source()
        rules = DenoiseRules(
            min_vote_agreement=self.sargs.min_vote_agreement,
            drop_tied_votes=self.sargs.drop_tied_votes,
            confidence_threshold=self.sargs.confidence_threshold,
            max_rationale_tokens=self.sargs.max_rationale_tokens,
            check_support=self.sargs.check_support,
            require_rationale=source == "judge",
        )
        cands = [
            Candidate(
                rec["label"], rec["confidence"], rec["votes"], rec["judge_rationale"] if source == "judge" else None
            )
            for rec in records
        ]
        count = lambda t: len(self.tokenizer.encode(t, add_special_tokens=False))  # noqa: E731
        reasons, counts = denoise(cands, rules, self.label_words, count)
        keep = [i for i, reason in enumerate(reasons) if reason is None]
        rows = []
        if source == "prover" and keep:
            proofs = self._generating_prover().prove(
                [records[i]["prompt"] for i in keep],
                [records[i]["response_a"] for i in keep],
                [records[i]["response_b"] for i in keep],
                [records[i]["label"] for i in keep],
            )
            counts["no_valid_proof"] = 0
            for i, proof in zip(keep, proofs):
                if proof.rationale is None:
                    reasons[i] = "no_valid_proof"
                    counts["no_valid_proof"] += 1
                else:
                    rows.append(
                        {
                            **self._row(
                                records[i]["prompt"],
                                records[i]["response_a"],
                                records[i]["response_b"],
                                self.label_words.index(records[i]["label"]),
                                proof.rationale,
                            )
                        }
                    )
        else:
            for i in keep:
                rec = records[i]
                rows.append(
                    self._row(
                        rec["prompt"],
                        rec["response_a"],
                        rec["response_b"],
                        self.label_words.index(rec["label"]),
                        rec["judge_rationale"] if source == "judge" else None,
                    )
                )
        counts["kept"] = len(rows)
        counts["candidates"] = len(records)
        return rows, counts

    # -----------------------------------------------------------------------------------------------------------------
    # Training and evaluation
    # -----------------------------------------------------------------------------------------------------------------

    def _train(self, rows: list[dict], d: Path, init: Path | None):
        ckpt = d / "checkpoint"
        if self._vllm is not None and not (ckpt / ".done").is_file():
            self._vllm.release()  # training needs the memory; the next generating stage loads the new checkpoint
        if (ckpt / ".done").is_file():
            model = self._load(ckpt)
        elif not rows:
            # Nothing survived (e.g. every proof was cut off): no training; the stage keeps its starting model so
            # the folder layout, evaluation and later rounds stay as usual.
            logger.warning(f"GRAM self-training: no training rows for {d.name}; keeping its starting model.")
            model = self._load(init) if init is not None else self._fresh_base()
            model.save_pretrained(str(ckpt))
            self.tokenizer.save_pretrained(str(ckpt))
            (ckpt / ".done").write_text("no rows: starting model kept\n")
        elif self.sargs.train_command:
            self._train_subprocess(rows, d, init)
            model = self._load(ckpt)
        else:
            from .trainer import GramRewardTrainer

            start = self._load(init, trainable=True) if init is not None else self._fresh_base()
            targs = copy.deepcopy(self.args)
            targs.output_dir = str(d / "trainer")
            targs.check_rationale_label = self._check_rationale_label()
            self._no_eval(targs)
            peft = self.peft_config if not hasattr(start, "peft_config") else None
            trainer = GramRewardTrainer(
                start,
                targs,
                train_dataset=Dataset.from_list(rows),
                processing_class=self.tokenizer,
                template=self.template,
                peft_config=peft,
                callbacks=self.callbacks,
            )
            last = get_last_checkpoint(targs.output_dir) if Path(targs.output_dir).is_dir() else None
            trainer.train(resume_from_checkpoint=last)
            trainer.save_model(str(ckpt))
            self.tokenizer.save_pretrained(str(ckpt))
            model = trainer.accelerator.unwrap_model(trainer.model)
            (ckpt / ".done").write_text("finished\n")
        model._gram_path = str(ckpt)
        self.judge_model = model
        return model

    def _check_rationale_label(self) -> bool:
        """Whether a stage's training refuses rows whose rationale concludes against the label. With the support rule
        off (``check_support=False``), such pseudo-labels are kept on purpose, so training must accept them."""
        return self.args.check_rationale_label and self.sargs.check_support

    def _release_models(self):
        """Free the loop's models before a training process needs the accelerators (reloaded lazily)."""
        self.judge_model = None
        if self.prover is not None and getattr(self.prover, "_owned", False):
            self.prover = None
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _train_subprocess(self, rows: list[dict], d: Path, init: Path | None):
        import yaml

        self._release_models()

        _write_jsonl(d / "train.jsonl", rows)
        defaults = {
            f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            for f in dataclasses.fields(GramRewardConfig)
            if f.init
        }
        skip = ("output_dir", "logging_dir", "hub_token", "resume_from_checkpoint")
        values = self.args.to_dict()
        values.update({k: getattr(self.args, k) for k in values if k.endswith("_token")})  # to_dict masks these
        chosen = {
            k: v
            for k, v in values.items()
            if k in defaults and v != defaults[k] and k not in skip and not k.startswith("_")
        }
        config = {
            **chosen,
            **self.train_config_extra,
            "model_name_or_path": str(init or self.base),
            "dataset_name": str(d / "train.jsonl"),
            "output_dir": str(d / "checkpoint"),
            "eval_strategy": "no",
            "check_rationale_label": self._check_rationale_label(),
        }
        if isinstance(self.args.template, str) or self.args.template is None:
            config["template"] = self.args.template
        (d / "train.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
        cmd = shlex.split(self.sargs.train_command) + [
            "-m",
            "trl_gram.cli",
            "train",
            "--config",
            str(d / "train.yaml"),
        ]
        logger.warning(f"Launching: {' '.join(cmd)}")
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        (d / "checkpoint" / ".done").write_text("finished\n")

    def _evaluate(self, model) -> dict:
        if not self.eval_pairs:
            return {}
        judge = self._judge(model, seed=self.args.seed)
        return judge_metrics(judge, self.eval_pairs, swap="both")

    def _eval_stage(self, d: Path, model) -> dict:
        path = d / "eval.json"
        if not path.is_file():
            _write_json(path, self._evaluate(model))
        return json.loads(path.read_text())

    def _final_stage(self, seed_rows: list[dict]) -> dict:
        d = self.root / "final"
        if (d / "summary.json").is_file():
            return json.loads((d / "summary.json").read_text())
        d.mkdir(parents=True, exist_ok=True)
        last = self.root / f"round_{self.sargs.rounds:02d}" / "checkpoint"
        model = self._train(seed_rows, d, last)
        summary = {
            "stage": "final",
            "round": None,
            "train_rows": len(seed_rows),
            "checkpoint": str(d / "checkpoint"),
            "eval": self._eval_stage(d, model),
        }
        _write_json(d / "summary.json", summary)
        return summary

    def _write_summary(self):
        _write_jsonl(self.root / "summary.jsonl", self.history)
        if self.sargs.plot:
            from .plotting import plot_self_training

            plot_self_training(self.history, self.root / "self_training.png")

    @property
    def final_model_path(self) -> str | None:
        for name in ["final"] + [f"round_{r:02d}" for r in range(self.sargs.rounds, -1, -1)]:
            if (self.root / name / "summary.json").is_file():
                return str(self.root / name / "checkpoint")
        return None
