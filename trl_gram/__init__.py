"""trl-gram: generative foundation reward models (GRAM-R², GRAM) for Hugging Face TRL.

Public names are imported lazily, so ``import trl_gram`` is cheap and never touches the network.
"""

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "JudgeTemplate": "templates",
    "GRAM_R2_TEMPLATE": "templates",
    "GRAM_V1_TEMPLATE": "templates",
    "GRAM_R2_DIRECT_TEMPLATE": "templates",
    "get_template": "templates",
    "Verdict": "parsing",
    "parse_verdict": "parsing",
    "format_verdict": "parsing",
    "GramJudge": "judge",
    "load_judge": "judge",
    "GramJudgeConfig": "judge",
    "JudgeSpec": "judge",
    "PairJudgment": "judge",
    "GenerativeRewardFunction": "reward",
    "AsyncGenerativeRewardFunction": "reward",
    "best_of_n": "ranking",
    "knockout": "ranking",
    "linear_search": "ranking",
    "rank_all": "ranking",
    "default_model_path": "default_model",
    "default_judge_path": "default_model",
    "GramRewardConfig": "training.config",
    "GramRewardTrainer": "training.trainer",
    "PreferenceProver": "training.prover",
    "GramSelfTrainer": "training.self_training",
    "SelfTrainingConfig": "training.self_training",
    "GramPPOConfig": "ppo.config",
    "GramPPOTrainer": "ppo.trainer",
    "RemoteGenerativeRewardFunction": "serving.remote_reward",
    "GramWinRateCallback": "callbacks",
    "GramPreset": "presets",
    "get_preset": "presets",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trl_gram' has no attribute {name!r}")


def __dir__():
    return __all__


if TYPE_CHECKING:  # pragma: no cover  (every entry of _EXPORTS, for IDEs and type checkers)
    from .callbacks import GramWinRateCallback  # noqa: F401
    from .default_model import default_judge_path, default_model_path  # noqa: F401
    from .judge import GramJudge, GramJudgeConfig, JudgeSpec, PairJudgment, load_judge  # noqa: F401
    from .parsing import Verdict, format_verdict, parse_verdict  # noqa: F401
    from .ppo.config import GramPPOConfig  # noqa: F401
    from .ppo.trainer import GramPPOTrainer  # noqa: F401
    from .presets import GramPreset, get_preset  # noqa: F401
    from .ranking import best_of_n, knockout, linear_search, rank_all  # noqa: F401
    from .reward import AsyncGenerativeRewardFunction, GenerativeRewardFunction  # noqa: F401
    from .serving.remote_reward import RemoteGenerativeRewardFunction  # noqa: F401
    from .templates import (  # noqa: F401
        GRAM_R2_DIRECT_TEMPLATE,
        GRAM_R2_TEMPLATE,
        GRAM_V1_TEMPLATE,
        JudgeTemplate,
        get_template,
    )
    from .training.config import GramRewardConfig  # noqa: F401
    from .training.prover import PreferenceProver  # noqa: F401
    from .training.self_training import GramSelfTrainer, SelfTrainingConfig  # noqa: F401
    from .training.trainer import GramRewardTrainer  # noqa: F401
