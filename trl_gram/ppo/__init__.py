"""PPO with generative rewards: [`GramPPOConfig`] and [`GramPPOTrainer`].

`GramPPOTrainer` takes its rewards through TRL's reward-function contract (the one of `GRPOTrainer.reward_funcs`), so
the same [`GenerativeRewardFunction`] works in GRPO, RLOO, OnlineDPO and PPO.
"""

from .config import GramPPOConfig
from .trainer import GramPPOTrainer

__all__ = ["GramPPOConfig", "GramPPOTrainer"]
