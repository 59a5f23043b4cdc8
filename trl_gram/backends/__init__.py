"""Alternative inference backends for :class:`~trl_gram.judge.GramJudge` (``VLLMGramJudge`` needs ``trl-gram[vllm]``)."""


def __getattr__(name):
    if name == "VLLMGramJudge":
        from .vllm_backend import VLLMGramJudge

        return VLLMGramJudge
    raise AttributeError(f"module 'trl_gram.backends' has no attribute {name!r}")
