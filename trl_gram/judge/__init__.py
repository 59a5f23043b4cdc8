"""The pairwise judge: [`GramJudge`] (rendering, verdicts) over an inference backend ([`backends`]), described by a
[`JudgeSpec`] and loaded by [`load_judge`] (the one dispatcher of the `backend` choice)."""

from .judge import BACKENDS, SWAPS, GramJudge, GramJudgeConfig
from .loading import load_judge
from .rendering import JUDGE_MODES, PromptRenderer, forced_text
from .results import JudgeRun, PairJudgment, combine_runs
from .spec import JudgeSpec, judge_arguments

__all__ = [
    "BACKENDS",
    "JUDGE_MODES",
    "SWAPS",
    "GramJudge",
    "GramJudgeConfig",
    "JudgeRun",
    "JudgeSpec",
    "PairJudgment",
    "PromptRenderer",
    "combine_runs",
    "forced_text",
    "judge_arguments",
    "load_judge",
]
