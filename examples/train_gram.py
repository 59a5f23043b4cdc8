"""Train a generative judge (GRAM-R² reasoning, GRAM v1 direct, or GRAM v1 pair pre-training).

Same as ``trl-gram train``; every ``GramRewardConfig``/``ModelConfig`` field is a flag, or use a YAML recipe::

    python examples/train_gram.py --config recipes/gram_v1_finetune.yaml
    python examples/train_gram.py --dataset_name ../shared/data/hh_rlhf_harmless_base_test.jsonl.gz \\
        --dataset_select 0:256 --mode direct --output_dir runs/direct_judge --use_cpu --bf16 false
    accelerate launch --config_file recipes/accelerate/deepspeed_zero3.yaml examples/train_gram.py --config recipes/gram_v1_finetune.yaml

Without ``--model_name_or_path`` the embedded SmolLM2-135M-Instruct is trained (offline).
"""

import sys

from trl_gram.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
