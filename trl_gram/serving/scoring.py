"""From completions to rewards on the server: which pairs to judge, and how their probabilities become one reward per
completion. Shared by the ``/reward`` (TRL-shaped) and ``/get_reward`` (OpenRLHF) endpoints.

A completion's reward is its mean win probability over its comparisons:

* with a reference per completion (``references`` / OpenRLHF ``labels``): against that reference;
* otherwise within its group, the completions of the same prompt in the request (equal prompts, wherever they are):
  ``"group"`` compares every pair, ``"pivot"`` each completion with the group's first one.

A completion with nothing to compare with (a lone completion and no reference) gets ``None``, as does one whose
comparisons all failed to parse.
"""

from __future__ import annotations

import json
import math

from ..reward import comparisons_within

REFERENCES = ("group", "pivot")
OUTPUTS = ("prob", "logit", "centered")
_EPS = 1e-6


def _key(prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def plan(prompts, completions, references=None, reference: str = "group"):
    """The comparisons ``(i, question, response_i, other, j)`` (``j`` the other completion's index or ``None``)."""
    if len(prompts) != len(completions):
        raise ValueError(f"`prompts` has {len(prompts)} items but `completions` has {len(completions)}.")
    if reference not in REFERENCES:
        raise ValueError(f"`reference` must be one of {REFERENCES}, got {reference!r}.")
    for i, c in enumerate(completions):
        if c is None:
            raise ValueError(f"`completions[{i}]` is null.")
    comparisons = []
    if references is not None:
        if len(references) != len(completions):
            raise ValueError(f"`references` has {len(references)} items for {len(completions)} completions.")
        return [
            (i, prompts[i], completions[i], ref, None) for i, ref in enumerate(references) if ref not in (None, "")
        ]
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(_key(p), []).append(i)
    for members in groups.values():
        comparisons += comparisons_within(members, prompts, completions, reference)
    return comparisons


def aggregate(n: int, comparisons, judgments) -> tuple[list[float | None], dict]:
    """Mean win probability per completion over its parsed comparisons, and summary statistics."""
    sums, counts = [0.0] * n, [0] * n
    for (i, _, _, _, j), jd in zip(comparisons, judgments):
        if jd.failure is not None or math.isnan(jd.prob):
            continue
        sums[i] += jd.prob
        counts[i] += 1
        if j is not None:
            sums[j] += 1.0 - jd.prob
            counts[j] += 1
    runs = [r for jd in judgments for r in jd.runs]
    agreements = [jd.agreement for jd in judgments if jd.agreement is not None]
    stats = {
        "pairs": len(judgments),
        "parse_failure_rate": sum(r.failure is not None for r in runs) / len(runs) if runs else 0.0,
        "swap_agreement": sum(agreements) / len(agreements) if agreements else None,
        "unscored": sum(c == 0 for c in counts),
    }
    return [sums[k] / counts[k] if counts[k] else None for k in range(n)], stats


def transform(value: float | None, output: str) -> float | None:
    if value is None:
        return None
    if output == "prob":
        return float(value)
    if output == "centered":
        return float(value) - 0.5
    p = min(max(float(value), _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


def neutral(output: str) -> float:
    """The reward meaning "no preference" for an output scale."""
    return 0.5 if output == "prob" else 0.0
