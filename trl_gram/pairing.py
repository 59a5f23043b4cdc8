"""From completions to rewards: which pairs a judge sees, and how its verdicts become one reward per completion.

One module for [`~reward.GenerativeRewardFunction`] (in-process) and the reward server
([`~serving.server.create_app`]), so both give the same reward to the same completions.

* **Groups.** Completions of the same prompt form a group, wherever they sit in the batch (equal prompts, compared as
  text, or as JSON for chat messages). Groups are listed in the order of their first member.
* **Comparisons.** A completion with a reference (a reference answer, a label, the policy's greedy response) is
  compared with it. The others are compared within their group, among the members that have no reference:
  ``"group"`` compares every pair (G(G-1)/2 comparisons for G members), ``"pivot"`` each member with the group's
  first (G-1).
* **Aggregation.** A completion's reward is its mean win probability over its comparisons whose verdict could be
  read. A completion with no comparison at all ("nothing to compare with": a lone completion and no reference) or
  whose comparisons all failed gets ``None``; callers choose what that becomes.
* **Outputs.** ``"prob"`` (the win probability), ``"logit"`` (its log-odds, clipped at [`EPS`]), ``"centered"``
  (prob - 0.5).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

GROUP_REFERENCES = ("group", "pivot")
OUTPUTS = ("prob", "logit", "centered")
EPS = 1e-6


def prompt_key(prompt) -> str:
    """The text two prompts must share to be in the same group (chat messages are compared as sorted JSON)."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def groups(prompts: Sequence, members: Sequence[int] | None = None) -> list[list[int]]:
    """Indices of equal prompts, wherever they are, in the order of each group's first index.

    Args:
        prompts (`Sequence`):
            One prompt per completion (strings or chat messages).
        members (`Sequence[int]`, *optional*):
            Only group these indices (default: all).
    """
    out: dict[str, list[int]] = {}
    for i in range(len(prompts)) if members is None else members:
        out.setdefault(prompt_key(prompts[i]), []).append(i)
    return list(out.values())


def comparisons_within(members: Sequence[int], prompts, completions, reference: str = "group") -> list[tuple]:
    """The comparisons ``(i, question, response_i, other, j)`` inside one group.

    Args:
        members (`Sequence[int]`):
            The group's indices, in order.
        prompts, completions:
            The whole batch.
        reference (`str`):
            ``"group"`` (every pair) or ``"pivot"`` (each member against the first).
    """
    if reference not in GROUP_REFERENCES:
        raise ValueError(f"`reference` must be one of {GROUP_REFERENCES}, got {reference!r}.")
    members = list(members)
    if reference == "group":
        return [
            (i, prompts[i], completions[i], completions[j], j) for k, i in enumerate(members) for j in members[k + 1 :]
        ]
    pivot = members[0]
    return [(i, prompts[i], completions[i], completions[pivot], pivot) for i in members[1:]]


def has_reference(value) -> bool:
    """Whether ``value`` is a usable reference (not ``None`` and not blank text)."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def plan(
    prompts: Sequence,
    completions: Sequence,
    references: Sequence | None = None,
    reference: str = "group",
    skip: set[int] | None = None,
) -> list[tuple]:
    """Every comparison of a batch: ``(i, question, response_i, other, j)``, ``j`` the other completion's index or
    ``None`` when ``other`` is a reference.

    Args:
        prompts (`Sequence`), completions (`Sequence`):
            One prompt per completion.
        references (`Sequence`, *optional*):
            One reference per completion or ``None``; a completion without one is compared within its group.
        reference (`str`):
            ``"group"`` or ``"pivot"`` (see [`comparisons_within`]).
        skip (`set[int]`, *optional*):
            Indices left out (e.g. items a server found malformed).
    """
    if len(prompts) != len(completions):
        raise ValueError(f"`prompts` has {len(prompts)} items but `completions` has {len(completions)}.")
    if references is not None and len(references) != len(completions):
        raise ValueError(f"`references` has {len(references)} items for {len(completions)} completions.")
    skip = skip or set()
    comparisons, within = [], []
    for i in range(len(completions)):
        if i in skip:
            continue
        if references is not None and has_reference(references[i]):
            comparisons.append((i, prompts[i], completions[i], references[i], None))
        else:
            within.append(i)
    for members in groups(prompts, within):
        comparisons += comparisons_within(members, prompts, completions, reference)
    return comparisons


@dataclass
class Aggregate:
    """Per-completion result of [`mean_win_rates`].

    Args:
        probs (`list[float | None]`): Mean win probability, ``None`` without a usable comparison.
        counts (`list[int]`): Comparisons that entered each mean.
        compared (`list[int]`): Comparisons each completion took part in (0: nothing to compare with).
        first (`list`): The first judgment involving each completion (``None`` if none).
    """

    probs: list
    counts: list
    compared: list
    first: list

    @property
    def failed(self) -> list[bool]:
        """Completions that had comparisons, none of them usable."""
        return [c == 0 and k > 0 for c, k in zip(self.counts, self.compared)]


def mean_win_rates(n: int, comparisons, judgments, use_failed: bool = False) -> Aggregate:
    """Mean win probability per completion over its comparisons.

    Args:
        n (`int`): Number of completions.
        comparisons: From [`plan`].
        judgments: One [`~judge.PairJudgment`] per comparison (``prob`` = P(response_i is better)).
        use_failed (`bool`): Also count verdicts whose output could not be parsed (their probability is still read
            at the answer slot).
    """
    sums, counts, compared = [0.0] * n, [0] * n, [0] * n
    first = [None] * n
    for (i, _, _, _, j), jd in zip(comparisons, judgments):
        for k in (i, j):
            if k is not None:
                compared[k] += 1
                if first[k] is None:
                    first[k] = jd
        if jd is None or math.isnan(jd.prob) or (jd.failure is not None and not use_failed):
            continue
        sums[i] += jd.prob
        counts[i] += 1
        if j is not None:
            sums[j] += 1.0 - jd.prob
            counts[j] += 1
    probs = [sums[k] / counts[k] if counts[k] else None for k in range(n)]
    return Aggregate(probs, counts, compared, first)


def transform(value: float | None, output: str = "prob") -> float | None:
    """A win probability on the ``output`` scale (``None`` stays ``None``)."""
    if output not in OUTPUTS:
        raise ValueError(f"`output` must be one of {OUTPUTS}, got {output!r}.")
    if value is None:
        return None
    if output == "prob":
        return float(value)
    if output == "centered":
        return float(value) - 0.5
    p = min(max(float(value), EPS), 1 - EPS)
    return math.log(p / (1 - p))


def neutral(output: str = "prob") -> float:
    """The reward meaning "no preference" on an output scale."""
    return 0.5 if output == "prob" else 0.0
