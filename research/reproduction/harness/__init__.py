"""The reproduction experiment: the GRAM-R² paper's claims in miniature, on a small judge.

Run it with ``python -m research.reproduction.harness --config research/reproduction/configs/<name>.yaml``.
"""

from .config import ARMS, ReproductionConfig, compact_template
from .splits import Splits, make_splits
from .synthetic import is_correct, make_arithmetic_pairs, make_comparison_pairs, make_synthetic_pairs

__all__ = [
    "ARMS",
    "ReproductionConfig",
    "Splits",
    "compact_template",
    "is_correct",
    "make_arithmetic_pairs",
    "make_comparison_pairs",
    "make_splits",
    "make_synthetic_pairs",
]
