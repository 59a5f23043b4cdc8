#!/usr/bin/env bash
# The reproduction experiment on one GPU: research/reproduction/configs/reproduce_gpu.yaml as parallel
# `python -m research.reproduction.harness` processes sharing one output folder, three per task x seed (the arms of one group depend on each other; the groups
# do not):
#   direct group:  zero_shot_direct, direct, direct_st
#   reason group:  zero_shot_reason, reason, reason_st, adapt (adapt needs reason_st; it runs for the hh task only)
#   nodenoise:     reason_st_nodenoise, started once `reason` is finished (it reuses reason's round 0)
# Needs the judge weights, wheels and data that research/reproduction/analysis/prepare_gpu_reproduce.sh packs (its
# header gives the two device calls). Each process stops LIMIT_S seconds after the start (the experiment is resumable: rerun to go on). At
# the end the run folder, less model weights, is packed into $OUT/<RUN's name>.tgz (or runs/); unpack it under runs/
# and write the report (and its results table, reproduction_gpu/results.json) with
#   python -m research.reproduction.harness --config research/reproduction/configs/reproduce_gpu.yaml --report-only
#
# Env: RECIPE (default research/reproduction/configs/reproduce_gpu.yaml), RUN (output folder, default
#      runs/reproduce_gpu), SEEDS (default "0 1"), TASKS (default "hh synthetic"), ARM_GROUPS (the arm groups to
#      run, default "direct reason nodenoise"), REASON_ARMS (the reason group, default
#      "zero_shot_reason,reason,reason_st,adapt"), LIMIT_S (default 470), PYTHON (default python3), RESTORE (a
#      report's results.json: its finished arms are restored into RUN first). The archive is named after RUN, so two
#      instances with different RUNs can share $OUT.
set -uo pipefail
cd "$(dirname "$0")/../../.."
PY=${PYTHON:-python3}
RECIPE=${RECIPE:-research/reproduction/configs/reproduce_gpu.yaml}
RUN=${RUN:-runs/reproduce_gpu}
SEEDS=${SEEDS:-0 1}
TASKS=${TASKS:-hh synthetic}
ARM_GROUPS=${ARM_GROUPS:-direct reason nodenoise}
REASON_ARMS=${REASON_ARMS:-zero_shot_reason,reason,reason_st,adapt}
LIMIT_S=${LIMIT_S:-470}
DEST=${OUT:-runs}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
mkdir -p "$RUN/logs" "$DEST"
start=$(date +%s)
# One group of arms in its own process, stopped at the deadline (LIMIT_S after the start of this script).
reproduce() {
  local left=$(( start + LIMIT_S - $(date +%s) ))
  [ "$left" -gt 0 ] || return 124
  timeout "$left" "$PY" -m research.reproduction.harness --config "$RECIPE" --output_dir "$RUN" --report '' "$@"
}

# The base model once (GGUF conversion or the smoke recipe's random model), before the processes race for it.
"$PY" - "$RECIPE" "$RUN" <<'PY' || exit 1
import sys
from pathlib import Path
from research.reproduction.harness.config import ReproductionConfig
from research.reproduction.harness.runner import resolve_base
cfg = ReproductionConfig.from_yaml(sys.argv[1], output_dir=sys.argv[2])
Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
print("base model:", resolve_base(cfg, Path(cfg.output_dir)))
PY

if [ -n "${RESTORE:-}" ]; then
  "$PY" -m research.reproduction.harness --config "$RECIPE" --output_dir "$RUN" --restore "$RESTORE" --report-only \
    --report '' || exit 1
fi

pids=()
for seed in $SEEDS; do
  for task in $TASKS; do
    tag="$task-seed$seed"
    if [[ " $ARM_GROUPS " == *" direct "* ]]; then
      reproduce --tasks "$task" --seeds "$seed" --arms zero_shot_direct,direct,direct_st >"$RUN/logs/$tag-direct.log" 2>&1 &
      pids+=($!)
    fi
    if [[ " $ARM_GROUPS " == *" reason "* ]]; then
      reproduce --tasks "$task" --seeds "$seed" --arms "$REASON_ARMS" >"$RUN/logs/$tag-reason.log" 2>&1 &
      pids+=($!)
    fi
    [[ " $ARM_GROUPS " == *" nodenoise "* ]] || continue
    (
      while [ ! -f "$RUN/$task/reason/seed$seed/DONE" ]; do
        [ $(( $(date +%s) - start )) -lt "$LIMIT_S" ] || exit 124
        sleep 5
      done
      reproduce --tasks "$task" --seeds "$seed" --arms reason_st_nodenoise
    ) >"$RUN/logs/$tag-nodenoise.log" 2>&1 &
    pids+=($!)
  done
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
echo "=== gpu_reproduce: ${#pids[@]} processes, $failed stopped or failed, $(( $(date +%s) - start )) s"
grep -h "done in" "$RUN"/logs/*.log | sed 's/.*reproduce: /  /' | sort
for f in "$RUN"/logs/*.log; do
  if grep -q "Traceback" "$f"; then echo "=== traceback in $f"; grep -A30 "Traceback" "$f" | tail -32; fi
done
archive="$DEST/$(basename "$RUN").tgz"
tar czf "$archive" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' --exclude='*.pth' \
  --exclude='checkpoint-*' --exclude='tokenizer.json' "$RUN"
ls -la "$archive"
