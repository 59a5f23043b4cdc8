"""The GRAM-R² pipeline: seed rationales → preference-proving model → initial judge → self-training rounds on
unlabeled pairs (pseudo-labels, denoising, Eq. 5 proofs) → final fine-tune. Resumable: rerun the same command.

Same as ``trl-gram self-train``::

    python examples/self_train_gram.py --config recipes/gram_r2_cpu_smoke.yaml     # CPU, minutes-to-tens-of-minutes
    python examples/self_train_gram.py --config recipes/gram_r2_llama31_8b.yaml    # 8 GPUs, DeepSpeed ZeRO-3

Results: ``<output_dir>/summary.jsonl`` (one line per stage: kept fraction, drops per rule, label balance, held-out
accuracy) and ``<output_dir>/self_training.png``.
"""

import sys

from trl_gram.cli import main

if __name__ == "__main__":
    sys.exit(main(["self-train", *sys.argv[1:]]))
