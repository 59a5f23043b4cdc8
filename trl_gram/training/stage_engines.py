"""Engines of the generating stages of [`~trl_gram.training.GramSelfTrainer`] (evaluation, pseudo-labelling, proofs):

* [`VLLMEngines`] (`judge_backend="vllm"`): one in-process vLLM engine held at a time, the judge of the current
  checkpoint or the prover, loaded (through [`~trl_gram.judge.load_judge`], the one place a backend is chosen) from a
  checkpoint folder (a PEFT adapter is merged into its base first: vLLM reads whole checkpoints), reused while the
  checkpoint stays the same, and released before a training stage needs the memory.
* [`FleetEngines`] (`judge_backend="openai"`): running OpenAI-compatible vLLM engines (`vllm serve`, as many as
  wanted) that serve the base model. Each stage's checkpoint is a LoRA adapter, loaded into every engine at runtime
  under a name of its own (`POST /v1/load_lora_adapter`) and unloaded when the stage is done; the engines stay up
  while the loop trains.

Both hand out judges and provers through the same two methods, so the loop does not know which it holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from transformers.utils import logging

logger = logging.get_logger(__name__)


def merged_checkpoint(path: Path, load_base) -> Path:
    """`path` itself, or for a PEFT adapter folder its merge into the base model, saved once beside it."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        return path
    merged = path / "merged_for_vllm"
    if not (merged / ".done").is_file():
        from peft import PeftModel
        from transformers import AutoTokenizer

        model = PeftModel.from_pretrained(load_base(), str(path)).merge_and_unload()
        model.save_pretrained(str(merged))
        AutoTokenizer.from_pretrained(str(path)).save_pretrained(str(merged))
        (merged / ".done").write_text("merged\n")
        del model
    return merged


class _StageEngines:
    """What the loop asks of its engines: a judge and a prover on the engine serving a checkpoint."""

    backend_name = ""

    def _engine(self, path):
        raise NotImplementedError

    def judge(self, path, config):
        """A [`~trl_gram.judge.GramJudge`] with `config` on the engine of checkpoint `path`."""
        from ..judge import GramJudge

        return GramJudge(backend=self._engine(path), config=dataclasses.replace(config, backend=self.backend_name))

    def prover(self, path, config, label_words):
        """A [`~trl_gram.training.prover.PreferenceProver`] sampling and scoring on the engine of `path`."""
        from .prover import PreferenceProver

        backend = self._engine(path)
        return PreferenceProver(None, backend.tokenizer, config, label_words=label_words, backend=backend)


class VLLMEngines(_StageEngines):
    """Holds the loop's one vLLM engine.

    Args:
        tensor_parallel_size (`int`): GPUs one engine is split over.
        gpu_memory_utilization (`float` or `None`): As for [`~trl_gram.judge.backends.vllm.VLLMBackend.load`].
        dtype (`str`): Weights' dtype of the engine.
        max_model_len (`int` or `None`): Context length of the engine.
        load_base (`Callable`): Returns a fresh base model (to merge adapters into).
    """

    def __init__(
        self, tensor_parallel_size=1, gpu_memory_utilization=None, dtype="auto", max_model_len=None, load_base=None
    ):
        self.kwargs = dict(
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=str(dtype).replace("torch.", ""),
            max_model_len=max_model_len,
        )
        self.load_base = load_base
        self.path: str | None = None
        self.backend = None

    backend_name = "vllm"

    def _engine(self, path):
        path = str(merged_checkpoint(Path(path), self.load_base))
        if self.backend is None or self.path != path:
            self.release()
            from ..judge import JudgeSpec, load_judge

            logger.info(f"Loading {path} into vLLM for the generating stages.")
            # the one dispatcher loads the engine; the judge and the prover then share it
            self.backend = load_judge(JudgeSpec(model=path, backend="vllm", preset="none", **self.kwargs)).backend
            self.path = path
        return self.backend

    def release(self) -> None:
        """Shut the engine down (before a training stage needs the memory)."""
        if self.backend is not None:
            self.backend.release()
        self.backend = self.path = None


def adapter_model_name(path: Path) -> str:
    """The model name an adapter folder is served under: its weights' digest, so that a resumed run reuses it and two
    stages never share a name."""
    files = sorted(Path(path).glob("adapter_model.*"))
    if not files:
        raise ValueError(f"{path} has adapter_config.json but no adapter_model.* weights.")
    return "trl-gram-" + hashlib.sha256(files[0].read_bytes()).hexdigest()[:16]


class FleetEngines(_StageEngines):
    """Running OpenAI-compatible vLLM engines that serve the base model; each stage's LoRA adapter is loaded into
    all of them at runtime.

    The engines must run with `--enable-lora --max-lora-rank R` (R at least the LoRA rank trained) and
    `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`, and read the run's output folder at the same path (same machine or a
    shared filesystem).

    Args:
        engine_urls (`list[str]`): Base URLs of the engines.
        base (`str`): Path of the base model (the tokenizer; the checkpoint the engines serve as themselves).
        served_model_name (`str`, *optional*): The name the engines serve the base model under (default: `base`, or
            the one model they serve).
    """

    backend_name = "openai"

    def __init__(self, engine_urls, base: str, served_model_name: str | None = None):
        self.urls = list(engine_urls)
        self.base = Path(base).resolve()
        self.served_model_name = served_model_name
        self.path: Path | None = None
        self.adapter: str | None = None
        self.backend = None

    def _engine(self, path):
        from ..judge import JudgeSpec, load_judge
        from ..judge.backends.openai import load_adapter

        path = Path(path).resolve()
        if self.backend is not None and self.path == path:
            return self.backend
        self.release()
        served = self.served_model_name
        if (path / "adapter_config.json").is_file():
            served = adapter_model_name(path)
            logger.info(f"Loading adapter {path} into the engines {self.urls} as {served!r}.")
            load_adapter(self.urls, served, str(path))
            self.adapter = served
        elif path != self.base:
            raise ValueError(
                f"`judge_backend='openai'` serves each stage's checkpoint as a LoRA adapter loaded into the running "
                f"engines, and {path} is a whole model: train with `use_peft` (or use judge_backend 'vllm' or "
                "'transformers')."
            )
        spec = JudgeSpec(
            model=str(self.base), backend="openai", preset="none", engine_urls=self.urls, served_model_name=served
        )
        self.backend = load_judge(spec).backend
        self.path = path
        return self.backend

    def release(self) -> None:
        """Close the connections and unload the stage's adapter from the engines (they keep running)."""
        from ..judge.backends.openai import unload_adapter

        if self.backend is not None:
            self.backend.release()
        if self.adapter is not None:
            unload_adapter(self.urls, self.adapter)
        self.backend = self.path = self.adapter = None
