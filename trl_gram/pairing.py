"""From completions to rewards: which pairs a judge sees, and how its verdicts become one reward per completion.

One module for [`~reward.GenerativeRewardFunction`] (in-process) and the reward server
([`~serving.server.create_app`]), so both give the same reward to the same completions.

* **Groups.** Completions of the same prompt form a group, wherever they sit in the batch (equal prompts, compared as
  text, or as JSON for chat messages). Groups are listed in the order of their first member.
* **Comparisons.** A completion with a reference (a reference answer, a label, the policy's greedy response) is
  compared with it. The others are compared within their group, among the members that have no reference:
  ``"group"`` compares every pair (G(G-1)/2 comparisons for G members), ``"pivot"`` each member with the group's
  first (G-1). ``schedule`` ([`~schedules`]) thins the pairs of ``"group"``: ``"all"`` (the default), or a
  ``"sparse"`` or ``"circular"`` graph of degree ``schedule_degree`` (d G / 2 comparisons instead of G(G-1)/2).
* **Orders.** ``second_order="always"`` judges both orders of every comparison (the judge's ``swap``);
  ``"adaptive"`` judges one order first and the second only where it matters (see [`~adaptive`]).
* **Aggregation.** ``aggregate="mean"``: a completion's reward is its mean win probability over its comparisons whose
  verdict could be read. ``"bradley_terry"``: strengths fitted to the win probabilities of the whole group
  ([`~bradley_terry`]), a completion's reward its expected win probability against the rest of its group. A
  completion with no comparison at all ("nothing to compare with": a lone completion and no reference) or whose
  comparisons all failed gets ``None``; callers choose what that becomes.
* **Length control** (opt-in, [`length_controlled`]): the part of the rewards that the completions' lengths explain
  within their groups is removed.
* **Outputs.** ``"prob"`` (the win probability), ``"logit"`` (its log-odds, clipped at [`EPS`]), ``"centered"``
  (prob - 0.5).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import bradley_terry, schedules

GROUP_REFERENCES = ("group", "pivot")
OUTPUTS = ("prob", "logit", "centered")
SCHEDULES = schedules.SCHEDULES
AGGREGATES = ("mean", "bradley_terry")
SECOND_ORDERS = ("always", "adaptive")
EPS = 1e-6


@dataclass
class ComparisonConfig:
    r"""How the completions of one prompt are compared and their verdicts turned into rewards. The same settings (and
    names) on [`~reward.GenerativeRewardFunction`], the reward server ([`~serving.config.ServeConfig`]), its clients
    and [`~ranking.rank_all`]; see ``docs/reward.md`` for when to use which.

    Args:
        schedule (`str`, *optional*, defaults to `"all"`):
            Pairs judged within a group: ``"all"`` (every pair), ``"sparse"`` (a random connected regular graph of
            degree ``schedule_degree``, drawn per group) or ``"circular"`` (each completion against its
            ``schedule_degree`` nearest neighbours on a circle).
        schedule_degree (`int`, *optional*, defaults to `4`):
            Comparisons per completion of a sparse or circular schedule (all pairs when it reaches G - 1).
        aggregate (`str`, *optional*, defaults to `"mean"`):
            ``"mean"`` (mean win probability over a completion's comparisons) or ``"bradley_terry"`` (expected win
            probability against the group from a Bradley–Terry fit of all the group's verdicts).
        second_order (`str`, *optional*, defaults to `"always"`):
            ``"always"``: every comparison in both orders (the judge's ``swap``). ``"adaptive"``: one order first
            (each completion shown first in half of its comparisons), the second order only where the first is
            within ``second_order_margin`` of 0.5, failed, or could reorder the group.
        second_order_margin (`float`, *optional*, defaults to `0.2`):
            A first-order verdict closer than this to 0.5 is judged again in the other order.
        max_judge_calls_per_group (`int`, *optional*):
            Budget of judge passes per group for second orders and extra votes, first orders included (these are
            always judged). ``None``: no budget.
        extra_votes (`int`, *optional*, defaults to `0`):
            With ``"adaptive"``: a comparison still within the margin after both orders is judged again with this many
            sampled rationales per order (reason mode; a direct judge gives the same verdict again).
        length_control (`bool`, *optional*, defaults to `False`):
            Remove the within-group effect of response length from the rewards (see [`length_controlled`]).
        schedule_seed (`int`, *optional*, defaults to `0`):
            Seed of the sparse schedules' random graphs.
    """

    schedule: str = field(
        default="all",
        metadata={
            "help": "Pairs judged within a group: all, sparse (random regular) or circular.",
            "choices": list(SCHEDULES),
        },
    )
    schedule_degree: int = field(
        default=4, metadata={"help": "Comparisons per completion of a sparse or circular schedule."}
    )
    aggregate: str = field(
        default="mean",
        metadata={
            "help": "Verdicts to rewards: mean win probability or a Bradley-Terry fit.",
            "choices": list(AGGREGATES),
        },
    )
    second_order: str = field(
        default="always",
        metadata={"help": "Both orders always, or the second only where it matters.", "choices": list(SECOND_ORDERS)},
    )
    second_order_margin: float = field(
        default=0.2, metadata={"help": "Adaptive: judge the other order when the first is this close to 0.5."}
    )
    max_judge_calls_per_group: int | None = field(
        default=None, metadata={"help": "Adaptive: budget of judge passes per group (None: no budget)."}
    )
    extra_votes: int = field(
        default=0, metadata={"help": "Adaptive: sampled votes per order for comparisons still near 0.5."}
    )
    length_control: bool = field(
        default=False, metadata={"help": "Remove the within-group effect of response length from the rewards."}
    )
    schedule_seed: int = field(default=0, metadata={"help": "Seed of the sparse schedules."})

    def __post_init__(self):
        check_comparison_settings(self)

    def comparison_settings(self) -> ComparisonConfig:
        """These settings alone (for a subclass such as the server's configuration)."""
        return ComparisonConfig(**{f: getattr(self, f) for f in COMPARISON_FIELDS})


COMPARISON_FIELDS = (
    "schedule",
    "schedule_degree",
    "aggregate",
    "second_order",
    "second_order_margin",
    "max_judge_calls_per_group",
    "extra_votes",
    "length_control",
    "schedule_seed",
)


def comparison_overrides(**given) -> dict:
    """The group-comparison settings a client sends to a reward server: those given (not ``None``), checked here so
    a bad value fails at once rather than in every request."""
    unknown = sorted(set(given) - set(COMPARISON_FIELDS))
    if unknown:
        raise ValueError(f"Unknown group-comparison settings {unknown}; known: {list(COMPARISON_FIELDS)}.")
    given = {k: v for k, v in given.items() if v is not None}
    ComparisonConfig(**given)
    return given


def check_comparison_settings(c) -> None:
    """Clear errors for bad [`ComparisonConfig`] values (also used by the server for per-request values)."""
    for name, allowed in (("schedule", SCHEDULES), ("aggregate", AGGREGATES), ("second_order", SECOND_ORDERS)):
        if getattr(c, name) not in allowed:
            raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(c, name)!r}.")
    if isinstance(c.schedule_degree, bool) or not isinstance(c.schedule_degree, int) or c.schedule_degree < 2:
        raise ValueError(f"`schedule_degree` must be an integer >= 2, got {c.schedule_degree!r}.")
    if isinstance(c.second_order_margin, bool) or not isinstance(c.second_order_margin, (int, float)):
        raise ValueError(f"`second_order_margin` must be a number, got {c.second_order_margin!r}.")
    if not 0 <= c.second_order_margin <= 0.5:
        raise ValueError(f"`second_order_margin` must be within [0, 0.5], got {c.second_order_margin}.")
    budget = c.max_judge_calls_per_group
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise ValueError(f"`max_judge_calls_per_group` must be a positive integer or None, got {budget!r}.")
    if isinstance(c.extra_votes, bool) or not isinstance(c.extra_votes, int) or c.extra_votes < 0:
        raise ValueError(f"`extra_votes` must be a non-negative integer, got {c.extra_votes!r}.")
    if not isinstance(c.length_control, bool):
        raise ValueError(f"`length_control` must be true or false, got {c.length_control!r}.")


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


def comparisons_within(
    members: Sequence[int],
    prompts,
    completions,
    reference: str = "group",
    schedule: str = "all",
    degree: int = 4,
    rng: random.Random | None = None,
    balanced: bool = False,
) -> list[tuple]:
    """The comparisons ``(i, question, response_i, other, j)`` inside one group (``i`` shown first when one order is
    judged).

    Args:
        members (`Sequence[int]`):
            The group's indices, in order.
        prompts, completions:
            The whole batch.
        reference (`str`):
            ``"group"`` (every pair, or the pairs of ``schedule``) or ``"pivot"`` (each member against the first).
        schedule (`str`), degree (`int`), rng (`random.Random`, *optional*):
            The pairs of ``"group"`` ([`~schedules.schedule`]).
        balanced (`bool`):
            Orient all pairs (or the pivot's comparisons) so that each member is shown first in half of its
            comparisons ([`~schedules.orient`]); sparse and circular schedules always are.
    """
    if reference not in GROUP_REFERENCES:
        raise ValueError(f"`reference` must be one of {GROUP_REFERENCES}, got {reference!r}.")
    members = list(members)
    if reference == "group" and schedule == "all" and not balanced:
        return [
            (i, prompts[i], completions[i], completions[j], j) for k, i in enumerate(members) for j in members[k + 1 :]
        ]
    if reference == "group":
        edges = schedules.schedule(len(members), schedule, degree, rng)
    else:
        edges = [(k, 0) for k in range(1, len(members))]  # each against the pivot, the first member
        if balanced:
            edges = schedules.orient(len(members), edges)
    m = members
    return [(m[a], prompts[m[a]], completions[m[a]], completions[m[b]], m[b]) for a, b in edges]


def has_reference(value) -> bool:
    """Whether ``value`` is a usable reference (not ``None`` and not blank text)."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def plan(
    prompts: Sequence,
    completions: Sequence,
    references: Sequence | None = None,
    reference: str = "group",
    skip: set[int] | None = None,
    settings: ComparisonConfig | None = None,
    rng: random.Random | None = None,
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
        settings ([`ComparisonConfig`], *optional*):
            The schedule of ``"group"``, and with ``second_order="adaptive"`` balanced orders.
        rng (`random.Random`, *optional*):
            Draws the sparse schedules (default: ``Random(settings.schedule_seed)``).
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
    settings = settings or ComparisonConfig()
    rng = rng if rng is not None else random.Random(settings.schedule_seed)
    balanced = settings.second_order == "adaptive"
    for members in groups(prompts, within):
        comparisons += comparisons_within(
            members, prompts, completions, reference, settings.schedule, settings.schedule_degree, rng, balanced
        )
    return comparisons


@dataclass
class Aggregate:
    """Per-completion result of [`score_completions`].

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


def score_completions(n: int, comparisons, judgments, use_failed: bool = False, method: str = "mean") -> Aggregate:
    """Win probability per completion over its comparisons.

    Args:
        n (`int`): Number of completions.
        comparisons: From [`plan`].
        judgments: One [`~judge.PairJudgment`] per comparison (``prob`` = P(response_i is better)).
        use_failed (`bool`): Also count verdicts whose output could not be parsed (their probability is still read
            at the answer slot).
        method (`str`): ``"mean"`` (mean win probability over a completion's comparisons) or ``"bradley_terry"``
            (within a group: expected win probability against the group's other scored members, from a
            [`~bradley_terry.fit`] of the group's usable verdicts; comparisons with a reference keep the mean).
    """
    if method not in AGGREGATES:
        raise ValueError(f"`aggregate` must be one of {AGGREGATES}, got {method!r}.")
    sums, counts, compared = [0.0] * n, [0] * n, [0] * n
    first = [None] * n
    outcomes = []  # usable within-group verdicts (i, j, P(i beats j))
    for (i, _, _, _, j), jd in zip(comparisons, judgments):
        for k in (i, j):
            if k is not None:
                compared[k] += 1
                if first[k] is None:
                    first[k] = jd
        if not usable(jd, use_failed):
            continue
        sums[i] += jd.prob
        counts[i] += 1
        if j is not None:
            sums[j] += 1.0 - jd.prob
            counts[j] += 1
            outcomes.append((i, j, jd.prob))
    probs = [sums[k] / counts[k] if counts[k] else None for k in range(n)]
    if method == "bradley_terry":
        for members in components(n, outcomes):
            local = {k: m for m, k in enumerate(members)}
            strengths = bradley_terry.fit(
                len(members), [(local[i], local[j], p) for i, j, p in outcomes if i in local]
            )
            for k, e in zip(members, bradley_terry.expected_wins(strengths)):
                probs[k] = float(e)
    return Aggregate(probs, counts, compared, first)


def usable(jd, use_failed: bool = False) -> bool:
    """Whether a verdict enters the rewards: judged, a probability, and parsed (or ``use_failed``)."""
    return not (jd is None or math.isnan(jd.prob) or (jd.failure is not None and not use_failed))


def components(n: int, links) -> list[list[int]]:
    """The completions linked by within-group comparisons, in groups (``links``: ``(i, j, ...)`` with ``j`` not
    ``None``; completions in no link are left out), each sorted, in the order of their smallest member."""
    parent = list(range(n))

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    linked = set()
    for i, j, *_ in links:
        if j is None:
            continue
        linked |= {i, j}
        parent[root(i)] = root(j)
    out: dict[int, list[int]] = {}
    for k in sorted(linked):
        out.setdefault(root(k), []).append(k)
    return list(out.values())


def text_length(completion) -> int:
    """Characters of a completion (text, or the contents of its chat messages): the length of [`length_controlled`]."""
    if isinstance(completion, str):
        return len(completion)
    return sum(len(m.get("content") or "") if isinstance(m, dict) else len(str(m)) for m in completion)


def length_controlled(probs: Sequence, lengths: Sequence[float], groups: Sequence[Sequence[int]]) -> list:
    """Rewards with the within-group effect of response length removed.

    On the log-odds scale ``y = logit(p)``, with ``x = log(length + 1)``, the slope ``beta`` of ``y`` on ``x`` is
    fitted by least squares within groups, pooled over all the groups of the call (each group centered on its own
    means, with [`~win_rate.centered_moments`], the length-win statistic of the win-rate callback). Each completion
    then gets ``sigmoid(y - beta (x - mean_group(x)))``: a completion is no longer rewarded for being longer (or
    shorter) than its group's others, and the group's ranking among equally long completions is unchanged.
    ``None`` stays ``None``; with no length variation nothing changes.

    Args:
        probs: Win probabilities (``None`` for unscored completions).
        lengths: One length per completion (tokens or characters).
        groups: The groups of completion indices (e.g. from [`components`]).
    """
    from .win_rate import centered_moments

    out = list(probs)
    logit = [None if p is None else transform(p, "logit") for p in probs]
    x = [math.log(float(n) + 1.0) for n in lengths]
    sxy = sxx = 0.0
    scored = []
    for members in groups:
        members = [k for k in members if logit[k] is not None]
        if len(members) < 2:
            continue
        gxy, gxx, _ = centered_moments([x[k] for k in members], [logit[k] for k in members])
        sxy, sxx = sxy + gxy, sxx + gxx
        scored.append(members)
    if sxx <= 0:
        return out
    beta = sxy / sxx
    for members in scored:
        mean_x = sum(x[k] for k in members) / len(members)
        for k in members:
            out[k] = 1.0 / (1.0 + math.exp(-(logit[k] - beta * (x[k] - mean_x))))
    return out


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
