"""[`GramSelfTrainer`]: the GRAM-R² pipeline (seed rationales → prover → initial judge → self-training rounds → final
fine-tune), resumable stage by stage.

The round loop and the models live here; the run folder and its resume rule in [`~trl_gram.training.run_folder`], the
pseudo-labels and their denoising in [`~trl_gram.training.pseudo_label`], the training in another process
(``train_command``) in [`~trl_gram.training.train_launcher`].

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
import gc
import json
from collections import Counter
from pathlib import Path

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import AutoTokenizer
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from ..judge import GramJudge, GramJudgeConfig
from ..judge_metrics import judge_metrics
from .config import GramRewardConfig, resolve_template
from .denoise import DenoiseRules
from .judge_examples import render_pairs, validate_pairs
from .prover import PreferenceProver, ProverConfig
from .pseudo_label import pair_row, pseudo_label, select
from .run_folder import RunFolder, read_jsonl, write_json, write_jsonl
from .self_training_config import SelfTrainingConfig
from .stage_training import ModelSource, is_trained, keep_start, train_stage, without_eval
from .train_launcher import launch_training, train_config

__all__ = ["GramSelfTrainer", "SelfTrainingConfig"]

logger = logging.get_logger(__name__)


class GramSelfTrainer:
    r"""
    Runs the GRAM-R² training pipeline: prover, initial judge, self-training rounds, final fine-tune.

    Args:
        model (`str` or [`~transformers.PreTrainedModel`]):
            The base model: a path/id (reloaded whenever a fresh copy is needed) or a loaded causal LM (deep-copied).
        args ([`GramRewardConfig`]):
            How each judge is trained; `output_dir` is the root of the run.
        self_training_args ([`SelfTrainingConfig`], *optional*):
            The loop's settings (default: `SelfTrainingConfig()`).
        labeled_dataset ([`~datasets.Dataset`], *optional*):
            Rationale-free labeled pairs (`prompt`/`chosen`/`rejected`...) for the initial judge; a rationale column,
            when present, is used instead of proofs.
        unlabeled_dataset ([`~datasets.Dataset`], *optional*):
            Unlabeled pairs (`prompt`/`response_a`/`response_b`; labels, if any, are ignored).
        seed_dataset ([`~datasets.Dataset`], *optional*):
            Pairs with human rationales (prover training and final fine-tune).
        eval_dataset ([`~datasets.Dataset`], *optional*):
            Held-out labeled pairs, judged after every stage ([`~trl_gram.judge_metrics.judge_metrics`]).
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The tokenizer (loaded from `model` when `None`).
        prover ([`PreferenceProver`], *optional*):
            The preference-proving model (default: `self_training_args.prover_model`, else the base model).
        template, peft_config, quantization_config, callbacks (*optional*):
            Passed to every [`GramRewardTrainer`].
        train_config_extra (`dict`, *optional*):
            Extra keys written into each stage's `train.yaml` when `train_command` is set (e.g. the CLI's model
            arguments).

    Example:

    ```python
    >>> from trl_gram import GramRewardConfig, GramSelfTrainer, SelfTrainingConfig, default_model_path
    >>> from trl_gram.formats import load_pairs
    >>> labeled, _ = load_pairs("pairs.jsonl", select="0:64")
    >>> unlabeled, _ = load_pairs("pairs.jsonl", select="64:256")
    >>> args = GramRewardConfig("runs/gram_r2", mode="direct", use_cpu=True, report_to="none")
    >>> trainer = GramSelfTrainer(default_model_path(), args, SelfTrainingConfig(rounds=1),
    ...                           labeled_dataset=labeled, unlabeled_dataset=unlabeled)
    >>> history = trainer.run()
    ```
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
        self.folder = RunFolder(self.root)
        self.models = ModelSource(model, args, quantization_config)
        self.label_words = self.template.label_words
        if (
            self.sargs.initial_judge
            and self.peft_config is not None
            and not (Path(self.sargs.initial_judge) / "adapter_config.json").is_file()
        ):
            raise ValueError(
                f"`initial_judge={self.sargs.initial_judge!r}` is a full model, but the stages train LoRA adapters, "
                "which are loaded over the base model: give a LoRA adapter, or train without PEFT."
            )
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
        self.judge_model_path: str | None = None  # the checkpoint `judge_model` was loaded from or saved to
        self.history: list[dict] = []
        self._engines = None  # the generating stages' engines (None: the transformers models in memory)
        if self.sargs.judge_backend == "vllm":
            from .stage_engines import VLLMEngines

            self._engines = VLLMEngines(
                self.sargs.vllm_tensor_parallel_size,
                self.sargs.vllm_gpu_memory_utilization,
                dtype=(self.args.model_init_kwargs or {}).get("dtype", "auto"),
                load_base=self.models.fresh,
            )
        elif self.sargs.judge_backend == "openai":
            from .stage_engines import FleetEngines

            if self.peft_config is None:
                raise ValueError(
                    "`judge_backend='openai'` loads each stage's checkpoint into the running engines as a LoRA "
                    "adapter: train with PEFT (`use_peft` / `peft_config`)."
                )
            self._engines = FleetEngines(
                self.sargs.engine_urls, self._model_path(None), served_model_name=self.sargs.served_model_name
            )

    # -----------------------------------------------------------------------------------------------------------------
    # Models
    # -----------------------------------------------------------------------------------------------------------------

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
        if self._engines is not None:
            return self._engines.judge(self._model_path(model), GramJudgeConfig(**fields))
        return GramJudge(self.models.on_device(model), self.tokenizer, config=GramJudgeConfig(**fields))

    def _prover_source(self) -> Path | None:
        path = self.folder.stage("prover") / "model" if self.folder.is_done("prover") else None
        return path or (Path(self.sargs.prover_model) if self.sargs.prover_model else None)

    def _generating_prover(self) -> PreferenceProver:
        """The prover that writes proofs: with `judge_backend` "vllm" or "openai", its checkpoint on the engines."""
        if self._engines is None or self._user_prover:
            return self._get_prover()
        source = self._prover_source() or self._model_path(None)
        return self._engines.prover(source, self._get_prover(config_only=True), self.label_words)

    def _model_path(self, model) -> str:
        """The checkpoint folder the engines serve for `model` (a stage's checkpoint, else the base)."""
        path = None
        if model is not None:  # the stage's judge (trained in place, so its own path first), else a loaded checkpoint
            path = self.judge_model_path if model is self.judge_model else self.models.path_of(model)
        path = path or (self.base if isinstance(self.base, str) else None)
        if path is None:
            raise ValueError(
                f"`judge_backend={self.sargs.judge_backend!r}` needs the base model as a path (engines load checkpoints)."
            )
        return str(path)

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
            model = self.models.load(source) if source is not None else self.models.fresh()
            self.prover = PreferenceProver(
                self.models.on_device(model), self.tokenizer, cfg, label_words=self.label_words
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
            metrics = self.folder.cached(self.root / "base_eval.json", lambda: self._evaluate(self.models.fresh()))
            self.history.append({"stage": "base", "round": None, "eval": metrics})
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
        if self._engines is not None:
            self._engines.release()  # the engines free the last stage (in-process vLLM: its memory; a fleet: its adapter)
        return self.history

    def _seed_stage(self) -> list[dict]:
        if self.seed_data is None or self.args.mode != "reason":
            return []
        if self.folder.is_done("seed"):
            return read_jsonl(self.folder.stage("seed") / "seed.jsonl")
        d = self.folder.stage("seed", create=True)
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
            rows = [self._pair_row(p["question"], p["first"], p["second"], p["label"], p["rationale"]) for p in pairs]
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
        write_jsonl(d / "seed.jsonl", rows)
        self.folder.finish("seed", {"stage": "seed", "rows": len(rows), **info})
        return rows

    def _prover_stage(self, seed_rows: list[dict]):
        if self.folder.is_done("prover"):
            return
        d = self.folder.stage("prover")
        if self._engines is not None:
            self._engines.release()  # training needs the memory
        prover = self._get_prover()
        pargs = copy.deepcopy(self.args)
        pargs.output_dir = str(d / "trainer")
        pargs.num_train_epochs = self.sargs.prover_num_train_epochs
        pargs.learning_rate = self.sargs.prover_learning_rate or self.args.learning_rate
        without_eval(pargs)
        last = get_last_checkpoint(pargs.output_dir) if Path(pargs.output_dir).is_dir() else None
        pargs.resume_from_checkpoint = last
        trainer = prover.train(Dataset.from_list(seed_rows), pargs, peft_config=self.peft_config)
        prover.model = self.models.on_device(trainer.accelerator.unwrap_model(trainer.model))
        prover.save_pretrained(str(d / "model"))
        self.folder.finish(
            "prover",
            {
                "stage": "prover",
                "train_rows": len(seed_rows),
                "train_loss": trainer.state.log_history[-1].get("train_loss"),
            },
        )

    def _pair_row(self, question, first, second, label: int, rationale: str | None) -> dict:
        return pair_row(question, first, second, label, rationale, self.label_words)

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
        rows = [
            self._pair_row(q, a, b, lab, pr.rationale) for (q, a, b, lab), pr in zip(shown, proofs) if pr.rationale
        ]
        return rows, {"no_valid_proof": len(shown) - len(rows), "kept": len(rows)}

    def _round(self, r: int) -> dict:
        name = f"round_{r:02d}"
        if self.folder.is_done(name):
            return self.folder.summary(name)
        d = self.folder.stage(name, create=True)
        if (d / "kept.jsonl").is_file():
            kept, dropped = read_jsonl(d / "kept.jsonl"), json.loads((d / "dropped.json").read_text())
        else:
            kept, dropped = self._round_data(r, d)
            write_json(d / "dropped.json", dropped)
            write_jsonl(d / "kept.jsonl", kept)
        merged = [row for k in range(r) for row in read_jsonl(self.root / f"round_{k:02d}" / "kept.jsonl")] + kept
        if self.sargs.retrain_from == "previous" and r > 0:
            init = self.root / f"round_{r - 1:02d}" / "checkpoint"
        else:
            init = Path(self.sargs.initial_judge) if self.sargs.initial_judge else None
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
        self.folder.finish(name, summary)
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
                rows = [self._pair_row(*shown, rationale) for shown, rationale in self._shown(pairs)]
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
        path = str(self.root / f"round_{r - 1:02d}" / "checkpoint")
        if self.judge_model is None or self.judge_model_path != path:
            self.judge_model, self.judge_model_path = self.models.load(Path(path)), path
        return self.judge_model

    def _pseudo_label(self, r: int, batch: list[dict], d: Path) -> list[dict]:
        def label():
            judge = self._judge(
                self._current_judge_model(r),
                seed=self.args.seed + r,
                swap=self.sargs.pseudo_label_swap,
                votes=self.sargs.pseudo_label_votes,
                temperature=self.sargs.pseudo_label_temperature,
            )
            return pseudo_label(judge, batch, self.label_words)

        return self.folder.cached(d / "predictions.jsonl", label, rows=True)

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
        count = lambda t: len(self.tokenizer.encode(t, add_special_tokens=False))  # noqa: E731
        prove = (lambda *a: self._generating_prover().prove(*a)) if source == "prover" else None
        return select(records, rules, self.label_words, count, source, prove=prove)

    # -----------------------------------------------------------------------------------------------------------------
    # Training and evaluation
    # -----------------------------------------------------------------------------------------------------------------

    def _train(self, rows: list[dict], d: Path, init: Path | None):
        """The judge of stage ``d``: its finished checkpoint, or trained now (here or by ``train_command``)."""
        if self._engines is not None and not is_trained(d):
            self._engines.release()  # training needs the memory; the next generating stage loads the new checkpoint
        if is_trained(d):
            model = self.models.load(d / "checkpoint")
        elif not rows:  # e.g. every proof was cut off: the stage keeps its starting model
            logger.warning(f"GRAM self-training: no training rows for {d.name}; keeping its starting model.")
            model = keep_start(self.models.load(init) if init is not None else self.models.fresh(), self.tokenizer, d)
        elif self.sargs.train_command:
            self._train_subprocess(rows, d, init)
            model = self.models.load(d / "checkpoint")
        else:
            start = self.models.load(init, trainable=True) if init is not None else self.models.fresh()
            args = copy.deepcopy(self.args)
            args.check_rationale_label = self._check_rationale_label()
            model = train_stage(start, rows, d, args, self.tokenizer, self.template, self.peft_config, self.callbacks)
        self.judge_model, self.judge_model_path = model, str(d / "checkpoint")
        return model

    def _check_rationale_label(self) -> bool:
        """Whether a stage's training refuses rows whose rationale concludes against the label. With the support rule
        off (``check_support=False``), such pseudo-labels are kept on purpose, so training must accept them."""
        return self.args.check_rationale_label and self.sargs.check_support

    def _release_models(self):
        """Free the loop's models before a training process needs the accelerators (reloaded lazily)."""
        self.judge_model = self.judge_model_path = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _train_subprocess(self, rows: list[dict], d: Path, init: Path | None):
        self._release_models()
        config = train_config(
            self.args, init or self.base, d, self._check_rationale_label(), extra=self.train_config_extra
        )
        launch_training(self.sargs.train_command, rows, d, config)

    def _evaluate(self, model) -> dict:
        if not self.eval_pairs:
            return {}
        judge = self._judge(model, seed=self.args.seed)
        return judge_metrics(judge, self.eval_pairs, swap="both")

    def _eval_stage(self, d: Path, model) -> dict:
        return self.folder.cached(d / "eval.json", lambda: self._evaluate(model))

    def _final_stage(self, seed_rows: list[dict]) -> dict:
        if self.folder.is_done("final"):
            return self.folder.summary("final")
        d = self.folder.stage("final", create=True)
        last = self.root / f"round_{self.sargs.rounds:02d}" / "checkpoint"
        model = self._train(seed_rows, d, last)
        summary = {
            "stage": "final",
            "round": None,
            "train_rows": len(seed_rows),
            "checkpoint": str(d / "checkpoint"),
            "eval": self._eval_stage(d, model),
        }
        return self.folder.finish("final", summary)

    def _write_summary(self):
        write_jsonl(self.root / "summary.jsonl", self.history)
        if self.sargs.plot:
            from .plotting import plot_self_training

            plot_self_training(self.history, self.root / "self_training.png")

    @property
    def final_model_path(self) -> str | None:
        for name in ["final"] + [f"round_{r:02d}" for r in range(self.sargs.rounds, -1, -1)]:
            if self.folder.is_done(name):
                return str(self.root / name / "checkpoint")
        return None
