"""RLHF in miniature: a judge trained with [`~trl_gram.training.GramRewardTrainer`] is the only reward of
a policy trained with TRL's [`~trl.GRPOTrainer`] and with [`~trl_gram.ppo.GramPPOTrainer`], and an oracle the judge
and the policy never see says whether the policy got better. Run with ``python -m research.rlhf_miniature``."""
