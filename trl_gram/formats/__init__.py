"""Data formats, read once for every command: the rows of a file ([`records`]), one reader per published layout
([`readers`]: RewardBench 1/2, RM-Bench, JudgeBench, PandaLM, LLMBar, MT-Bench, hh-rlhf, TRL preference), whole-file
validation for `trl-gram eval` ([`files`]) and training pairs for the trainers ([`pairs`]).

Both `trl_gram.training` and `trl_gram.evaluation` import from here; neither imports the other.
"""

from .files import EvalData, read_eval_file
from .pairs import load_pairs
from .readers import (
    FORMATS,
    READERS,
    AmbiguousFormat,
    Comparison,
    detect_format,
    judgebench_category,
    rm_bench_domain,
    split_transcript,
)
from .records import DataError, read_records

__all__ = [
    "FORMATS",
    "AmbiguousFormat",
    "READERS",
    "Comparison",
    "DataError",
    "EvalData",
    "detect_format",
    "judgebench_category",
    "load_pairs",
    "read_eval_file",
    "read_records",
    "rm_bench_domain",
    "split_transcript",
]
