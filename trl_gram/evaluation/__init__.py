"""``trl-gram eval`` on the benchmarks people report: format readers and validation ([`formats`]), each benchmark's
official aggregate ([`metrics`]), and the terminal table, JSON and PNG ([`report`])."""

from ..formats import FORMATS, Comparison, DataError, EvalData, detect_format, read_eval_file
from .metrics import official_aggregate

__all__ = ["FORMATS", "official_aggregate", "Comparison", "DataError", "EvalData", "detect_format", "read_eval_file"]
