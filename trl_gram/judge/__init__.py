"""The pairwise judge: [`GramJudge`] (rendering, verdicts) over an inference backend ([`backends`])."""

from .judge import ENGINES, SWAPS, GramJudge, GramJudgeConfig, JudgeRun, PairJudgment, combine_runs
from .loading import BACKENDS, load_judge
from .rendering import MODES, PromptRenderer, forced_text

__all__ = [
    "BACKENDS",
    "ENGINES",
    "MODES",
    "SWAPS",
    "GramJudge",
    "GramJudgeConfig",
    "JudgeRun",
    "PairJudgment",
    "PromptRenderer",
    "combine_runs",
    "forced_text",
    "load_judge",
]
