#!/usr/bin/env bash
# Run HERE (the dev machine) before benchmarks/gpu_bench.sh: copies what the GPU machine cannot fetch into .gpu_speed/
# (about 5 MB, git-ignored): the default judge's tokenizer, config and chat template (not its weights: 515 MB would not
# travel) and the hh-rlhf questions. Then run gpu_bench.sh there with carry=[".gpu_speed"].
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.gpu_speed
mkdir -p "$DEST/smollm2" "$DEST/data"
SRC=$(python -c "from trl_gram.default_model import default_model_path; print(default_model_path())")
for f in config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja; do
  cp "$SRC/$f" "$DEST/smollm2/"
done
if [ -f ../shared/data/hh_rlhf_harmless_base_test.jsonl.gz ]; then
  cp ../shared/data/hh_rlhf_harmless_base_test.jsonl.gz ../shared/data/LICENSE.hh-rlhf "$DEST/data/"
fi
grep -qx "/$DEST/" .git/info/exclude 2>/dev/null || echo "/$DEST/" >> .git/info/exclude
du -sh "$DEST"
