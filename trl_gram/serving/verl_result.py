"""What verl's reward loop gets back for one response, from either route (a trl-gram server, or verl's own GenRM
router): a dict of ``score`` and the judge's health, which verl averages into its step metrics.

This module uses absolute imports: verl loads ``trl_gram/serving/verl.py`` by file path.
"""

from __future__ import annotations

import math


def verl_result(reward: float | None, compared, agreement, failure_reward: float) -> dict:
    """``score`` (``failure_reward`` when the response could not be scored), ``compared`` (comparisons behind the
    score), ``swap_agreement`` (share of its comparisons whose two orders agreed; ``nan`` when none was judged in both
    orders) and ``parse_failure`` (1.0 when unscored)."""
    return {
        "score": failure_reward if reward is None else float(reward),
        "compared": float(compared or 0),
        "swap_agreement": math.nan if agreement is None else float(agreement),
        "parse_failure": 1.0 if reward is None else 0.0,
    }
