"""vLLM engines for the generating stages of [`~trl_gram.training.GramSelfTrainer`] (`judge_backend="vllm"`).

One engine is held at a time: the judge of the current checkpoint or the prover. It is loaded (through
[`~trl_gram.judge.load_judge`], the one place a backend is chosen) from a checkpoint folder
(a PEFT adapter is merged into its base first: vLLM reads whole checkpoints), reused while the checkpoint stays the
same, and released before a training stage needs the memory.
"""

from __future__ import annotations

import dataclasses
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


class VLLMEngines:
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

    def judge(self, path, config):
        """A [`~trl_gram.judge.GramJudge`] with `config` on the engine of checkpoint `path`."""
        from ..judge import GramJudge

        return GramJudge(backend=self._engine(path), config=dataclasses.replace(config, backend="vllm"))

    def prover(self, path, config, label_words):
        """A [`~trl_gram.training.prover.PreferenceProver`] sampling and scoring on the engine of `path`."""
        from .prover import PreferenceProver

        backend = self._engine(path)
        return PreferenceProver(None, backend.tokenizer, config, label_words=label_words, backend=backend)

    def release(self) -> None:
        """Shut the engine down (before a training stage needs the memory)."""
        if self.backend is not None:
            self.backend.release()
        self.backend = self.path = None
