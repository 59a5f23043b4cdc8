"""Training generative judges: [`~trl_gram.training.trainer.GramRewardTrainer`] (reason / direct / pretrain, on
TRL's ``SFTTrainer``), [`~trl_gram.training.prover.PreferenceProver`] (GRAM-R²'s preference-proving model) and
[`~trl_gram.training.self_training.GramSelfTrainer`] (the GRAM-R² self-training pipeline).

Modules: ``config`` (GramRewardConfig), ``data`` (rendering judge examples), ``losses`` (label-smoothing loss),
``trainer``, ``prover``, ``denoise`` (rule checks), ``self_training`` / ``self_training_config``, ``datasets``
(loaders by path), ``evaluation``, ``plotting``, ``cli`` (``trl-gram train / self-train / eval``).
"""
