import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from tiny_models import tiny_llama, tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def tiny_model(tokenizer):
    return tiny_llama(tokenizer)


@pytest.fixture
def tiny_judge(tiny_model, tokenizer):
    from trl_gram.judge import GramJudge

    return GramJudge(tiny_model, tokenizer, max_new_tokens=16)
