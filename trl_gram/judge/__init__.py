"""The pairwise judge: [`GramJudge`] (rendering, verdicts) over an inference backend ([`backends`])."""

from .judge import ENGINES, SWAPS, GramJudge, GramJudgeConfig
from .loading import BACKENDS, load_judge
from .rendering import MODES, PromptRenderer, forced_text
from .results import JudgeRun, PairJudgment, combine_runs

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
