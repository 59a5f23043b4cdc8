"""Groups that form across requests: per-sample clients (current OpenRLHF, verl's reward loop) send the n responses of
one prompt as n separate, concurrent requests; the server collects them into one group and judges it as a batched
client's group would be judged.

A group is keyed by its prompt (the question as the judge reads it, [`~pairing.prompt_key`]). It closes when
``group_size`` responses have arrived (OpenRLHF's ``--n_samples_per_prompt``, verl's ``rollout.n``) or at its deadline,
``timeout_s`` after its first response, whichever comes first. At the deadline the group is judged with what arrived:
every pair among the members present (``"group"``, or the pairs of a sparse schedule) or each against the first to
arrive (``"pivot"``), with the group-comparison settings of the request that opened the group. A response
alone in its group at the deadline has nothing to compare with: it gets ``None`` (the server's failure value) with a
reason, a warning in the log and a count in ``/stats``. A response that arrives after its group closed starts a new
group.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from transformers.utils import logging

from .. import adaptive, pairing

logger = logging.get_logger(__name__)


@dataclass(eq=False)
class _Group:
    prompts: list = field(default_factory=list)
    completions: list = field(default_factory=list)
    futures: list = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    settings: pairing.ComparisonConfig | None = None


class GroupCollector:
    """Collects the responses of one prompt from concurrent requests and judges them together.

    Args:
        judge_pairs: ``async (questions, first, second) -> judgments`` (the server's batcher).
        group_size (`int`, *optional*): Responses per prompt; a group closes as soon as it has that many.
            ``None``: groups close only at their deadline.
        timeout_s (`float`): Deadline of a group, from its first response.
        reference (`str`): ``"group"`` or ``"pivot"``.
        settings ([`~pairing.ComparisonConfig`], *optional*): Default schedule, aggregate and orders of a group.
        rng (`random.Random`, *optional*): Draws the sparse schedules.
        on_cost (`Callable`, *optional*): Called with each group's [`~adaptive.JudgeCost`].
    """

    def __init__(
        self,
        judge_pairs,
        group_size: int | None,
        timeout_s: float,
        reference: str = "group",
        settings: pairing.ComparisonConfig | None = None,
        rng: random.Random | None = None,
        on_cost=None,
    ):
        if group_size is not None and group_size < 1:
            raise ValueError(f"`group_size` must be positive or None, got {group_size}.")
        self.judge_pairs = judge_pairs
        self.group_size = group_size
        self.timeout_s = timeout_s
        self.reference = reference
        self.settings = settings or pairing.ComparisonConfig()
        self.rng = rng or random.Random(self.settings.schedule_seed)
        self.on_cost = on_cost
        self._open: dict[str, _Group] = {}
        self._tasks: set = set()
        self._hinted = False
        self.stats = {"groups": 0, "complete": 0, "at_deadline": 0, "nothing_to_compare": 0, "pending": 0}

    def complete_in(self, count: int) -> bool:
        """Whether ``count`` responses of one prompt in one request already make a whole group."""
        return count >= (2 if self.group_size is None else self.group_size)

    async def add(self, prompts, completions, settings=None) -> list[tuple[float | None, dict]]:
        """Add responses of one prompt; returns, once their group is judged, ``(prob, info)`` for each. ``settings``
        (a [`~pairing.ComparisonConfig`]) count when they open the group."""
        loop = asyncio.get_running_loop()
        key = pairing.prompt_key(prompts[0])
        group = self._open.get(key)
        if group is None:
            group = self._open[key] = _Group(settings=settings or self.settings)
            group.timer = loop.call_later(self.timeout_s, self._close, key, group, "deadline")
        futures = [loop.create_future() for _ in completions]
        group.prompts += list(prompts)
        group.completions += list(completions)
        group.futures += futures
        self.stats["pending"] = sum(len(g.futures) for g in self._open.values())
        if self.group_size is not None and len(group.futures) >= self.group_size:
            self._close(key, group, "complete")
        return list(await asyncio.gather(*futures))

    def _close(self, key, group: _Group, why: str) -> None:
        if self._open.get(key) is not group:
            return
        del self._open[key]
        group.timer.cancel()
        self.stats["groups"] += 1
        self.stats["complete" if why == "complete" else "at_deadline"] += 1
        if why == "deadline" and self.group_size is None and not self._hinted:
            self._hinted = True
            logger.warning(
                f"Groups of per-sample requests close only at their {self.timeout_s:g} s deadline: start the server "
                "with `--group_size` = the client's samples per prompt so complete groups are judged at once."
            )
        self.stats["pending"] = sum(len(g.futures) for g in self._open.values())
        task = asyncio.get_running_loop().create_task(self._judge(group, why))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _judge(self, group: _Group, why: str) -> None:
        n = len(group.futures)
        info = {"group": n, "group_closed": why}
        if n == 1:
            self.stats["nothing_to_compare"] += 1
            reason = (
                f"nothing to compare with: no other response to this prompt arrived within {self.timeout_s:g} s "
                "and it has no reference (set the server's group size to the client's samples per prompt)"
            )
            logger.warning(f"A response had nothing to compare with ({self.stats['nothing_to_compare']} so far).")
            self._resolve(group.futures[0], (None, {**info, "compared": 0, "failure": reason}))
            return
        settings = group.settings
        comparisons = pairing.comparisons_within(
            range(n),
            group.prompts,
            group.completions,
            self.reference,
            settings.schedule,
            settings.schedule_degree,
            self.rng,
            balanced=settings.second_order == "adaptive",
        )
        try:
            judgments, cost = await adaptive.run_async(self.judge_pairs, comparisons, settings)
        except Exception as e:  # noqa: BLE001  (every member gets the reason; the server keeps serving)
            reason = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            for f in group.futures:
                self._resolve(f, (None, {**info, "compared": 0, "failure": reason}))
            return
        if self.on_cost is not None:
            self.on_cost(cost)
        result = pairing.score_completions(n, comparisons, judgments, method=settings.aggregate)
        if settings.length_control:
            lengths = [pairing.text_length(c) for c in group.completions]
            result.probs = pairing.length_controlled(result.probs, lengths, [list(range(n))])
        for k, f in enumerate(group.futures):
            failure = None
            if result.probs[k] is None:
                first = result.first[k]
                failure = f"every comparison failed: {first.failure}" if first is not None else "not judged"
            self._resolve(f, (result.probs[k], {**info, "compared": result.compared[k], "failure": failure}))

    @staticmethod
    def _resolve(future, value) -> None:
        if not future.done():
            future.set_result(value)
