"""Groups that form across requests: per-sample clients (current OpenRLHF, verl's reward loop) send the n responses of
one prompt as n separate requests, often spread over time (a sample is scored as soon as it is generated); the server
collects them into one group and judges it as a batched client's group would be judged.

A group is keyed by its prompt (the question as the judge reads it, [`~pairing.prompt_key`]).

* **When it closes**: when ``group_size`` members have arrived (OpenRLHF's ``--n_samples_per_prompt``, verl's
  ``rollout.n``), or at its deadline. The deadline follows the arrivals: ``timeout_s`` after the *latest* member, but
  never later than ``max_wait_s`` after the first (so samples that finish generating minutes apart still meet, and
  no group waits forever).
* **Unreadable members count**: a request whose response cannot be read still names its prompt; it joins the group
  as a member that is not judged (it gets its own error), so its siblings do not wait the deadline for it.
* **Member order**: members are ordered by a hash of their content, not by arrival, so the comparisons made (and,
  with ``swap="none"`` and a position-biased judge, the rewards) do not depend on which request came first.
* **Groups that close short** get a WARNING line each and a counter in ``/stats`` and ``/metrics``: ``short`` (at the
  deadline with fewer than ``group_size`` members), ``alone`` (a single readable member: nothing to compare with, it
  gets ``None`` and a reason) and ``split`` (a group of the same prompt opened right after one closed complete: the
  client sends more samples per prompt than ``group_size``). A batched request whose samples per prompt differ from
  ``group_size`` is logged once per count ([`GroupCollector.note_client_n`]).

At the deadline a group is judged with what arrived: every pair among the readable members (``"group"``, or the pairs
of a sparse schedule) or each against the first in member order (``"pivot"``), with the group-comparison settings of
the request that opened the group. A response that arrives after its group closed starts a new group.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass, field

from transformers.utils import logging

from .. import adaptive, pairing

logger = logging.get_logger(__name__)

CLOSED_HOW = ("complete", "short", "alone", "split")
"""How a group closed (the `groups_closed` counters): ``split`` counts groups opened right after a complete one of the
same prompt; the others are exclusive."""


def member_order(key: str, completion) -> str:
    """The sort key of a member inside its group: a hash of its content (timing-independent)."""
    text = completion if isinstance(completion, str) else pairing.prompt_key(completion)
    return hashlib.sha256(f"{key}\x00{text}".encode()).hexdigest()


@dataclass(eq=False)
class _Group:
    key: str
    prompts: list = field(default_factory=list)
    completions: list = field(default_factory=list)  # None: an unreadable member (counts, not judged)
    futures: list = field(default_factory=list)
    first: float = 0.0
    timer: asyncio.TimerHandle | None = None
    settings: pairing.ComparisonConfig | None = None


class GroupCollector:
    """Collects the responses of one prompt from concurrent requests and judges them together.

    Args:
        judge_pairs: ``async (questions, first, second) -> judgments`` (the server's batcher).
        group_size (`int`, *optional*): Responses per prompt; a group closes as soon as it has that many.
            ``None``: groups close only at their deadline.
        timeout_s (`float`): Deadline of a group after its latest member.
        reference (`str`): ``"group"`` or ``"pivot"``.
        max_wait_s (`float`, *optional*): Cap on a group's deadline after its first member (default: ``4 *
            timeout_s``).
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
        max_wait_s: float | None = None,
        settings: pairing.ComparisonConfig | None = None,
        rng: random.Random | None = None,
        on_cost=None,
    ):
        if group_size is not None and group_size < 1:
            raise ValueError(f"`group_size` must be positive or None, got {group_size}.")
        self.judge_pairs = judge_pairs
        self.group_size = group_size
        self.timeout_s = timeout_s
        self.max_wait_s = 4 * timeout_s if max_wait_s is None else max(max_wait_s, timeout_s)
        self.reference = reference
        self.settings = settings or pairing.ComparisonConfig()
        self.rng = rng or random.Random(self.settings.schedule_seed)
        self.on_cost = on_cost
        self._open: dict[str, _Group] = {}
        self._recent_complete: dict[str, float] = {}
        self._tasks: set = set()
        self._hinted = False
        self._told_n: set = set()
        self.stats = {
            "groups": 0,
            "complete": 0,
            "at_deadline": 0,
            "short": 0,
            "alone": 0,
            "split": 0,
            "nothing_to_compare": 0,
            "unreadable_members": 0,
            "pending": 0,
        }

    def complete_in(self, count: int) -> bool:
        """Whether ``count`` responses of one prompt in one request already make a whole group."""
        return count >= (2 if self.group_size is None else self.group_size)

    def note_client_n(self, count: int) -> None:
        """A request carried ``count`` samples of one prompt: log once per count when it disagrees with
        ``group_size`` (the client's n and the server's group size should be equal)."""
        if self.group_size is None or count in (1, self.group_size) or count in self._told_n:
            return
        self._told_n.add(count)
        logger.warning(
            f"A request carried {count} samples of one prompt but the server's `--group_size` is {self.group_size}: "
            "set `--group_size` to the client's samples per prompt (OpenRLHF n_samples_per_prompt, verl rollout.n), "
            "or groups formed across requests close at the wrong size."
        )

    async def add(
        self, prompts, completions, key: str | None = None, settings=None
    ) -> list[tuple[float | None, dict]]:
        """Add responses of one prompt (a `None` completion: an unreadable member, counted but not judged; `key`:
        the group key, default [`~pairing.prompt_key`] of the first prompt; `settings`: a
        [`~pairing.ComparisonConfig`] that counts when it opens the group); returns, once their group is judged,
        ``(prob, info)`` for each."""
        loop = asyncio.get_running_loop()
        key = pairing.prompt_key(prompts[0]) if key is None else key
        group = self._open.get(key)
        now = loop.time()
        if group is None:
            group = self._open[key] = _Group(key, first=now, settings=settings or self.settings)
            closed = self._recent_complete.pop(key, None)
            if closed is not None and now - closed <= self.timeout_s:
                self.stats["split"] += 1
                logger.warning(
                    f"A group of {self.group_size} closed complete and more samples of the same prompt arrived right "
                    f"after ({self.stats['split']} split groups so far): the client sends more samples per prompt than "
                    "`--group_size`; they are judged as separate groups."
                )
        futures = [loop.create_future() for _ in completions]
        group.prompts += list(prompts)
        group.completions += list(completions)
        group.futures += futures
        self.stats["unreadable_members"] += sum(c is None for c in completions)
        self._update_pending()
        if self.group_size is not None and len(group.futures) >= self.group_size:
            self._close(group, "complete")
        else:
            if group.timer is not None:
                group.timer.cancel()
            deadline = min(now + self.timeout_s, group.first + self.max_wait_s)
            group.timer = loop.call_at(deadline, self._close, group, "deadline")
        return list(await asyncio.gather(*futures))

    def _update_pending(self) -> None:
        self.stats["pending"] = sum(len(g.futures) for g in self._open.values())

    def _close(self, group: _Group, why: str) -> None:
        if self._open.get(group.key) is not group:
            return
        del self._open[group.key]
        if group.timer is not None:
            group.timer.cancel()
        loop = asyncio.get_running_loop()
        readable = sum(c is not None for c in group.completions)
        self.stats["groups"] += 1
        if why == "complete":
            self.stats["complete"] += 1
            self._recent_complete[group.key] = loop.time()
            for k in [k for k, t in self._recent_complete.items() if loop.time() - t > self.timeout_s]:
                del self._recent_complete[k]
        else:
            self.stats["at_deadline"] += 1
            if readable <= 1:
                self.stats["alone"] += 1
            elif self.group_size is not None:
                self.stats["short"] += 1
                logger.warning(
                    f"A group closed short at its deadline: {len(group.futures)} of {self.group_size} members "
                    f"({self.stats['short']} short groups so far); its rewards compare fewer responses than a whole "
                    "group's."
                )
        if why == "deadline" and self.group_size is None and not self._hinted:
            self._hinted = True
            logger.warning(
                f"Groups of per-sample requests close only at their deadline ({self.timeout_s:g} s after the latest "
                "member): start the server with `--group_size` = the client's samples per prompt so complete groups "
                "are judged at once."
            )
        self._update_pending()
        task = loop.create_task(self._judge(group, why))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _judge(self, group: _Group, why: str) -> None:
        order = sorted(range(len(group.futures)), key=lambda k: member_order(group.key, group.completions[k]))
        members = [k for k in order if group.completions[k] is not None]
        unreadable = [k for k in order if group.completions[k] is None]
        info = {"group": len(group.futures), "group_closed": why}
        for k in unreadable:  # their own request tells why; here they only counted toward the group
            self._resolve(group.futures[k], (None, {**info, "compared": 0, "failure": "unreadable"}))
        if len(members) == 1:
            self.stats["nothing_to_compare"] += 1
            reason = (
                f"nothing to compare with: no other readable response to this prompt arrived within the group's "
                f"deadline ({self.timeout_s:g} s after the latest) and it has no reference (set the server's group "
                "size to the client's samples per prompt)"
            )
            logger.warning(
                f"A group closed with one readable response: nothing to compare with "
                f"({self.stats['nothing_to_compare']} so far)."
            )
            self._resolve(group.futures[members[0]], (None, {**info, "compared": 0, "failure": reason}))
            return
        if not members:
            return
        settings = group.settings
        comparisons = pairing.comparisons_within(
            members,
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
            for k in members:
                self._resolve(group.futures[k], (None, {**info, "compared": 0, "failure": reason}))
            return
        if self.on_cost is not None:
            self.on_cost(cost)
        result = pairing.score_completions(len(group.futures), comparisons, judgments, method=settings.aggregate)
        if settings.length_control:
            lengths = [0 if c is None else pairing.text_length(c) for c in group.completions]
            result.probs = pairing.length_controlled(result.probs, lengths, [members])
        agreed = {k: [] for k in members}  # swap agreement of each member's comparisons (judge health)
        for (i, _, _, _, j), jd in zip(comparisons, judgments):
            if jd is not None and getattr(jd, "agreement", None) is not None:
                for k in (i, j):
                    agreed[k].append(float(jd.agreement))
        for k in members:
            failure = None
            if result.probs[k] is None:
                first = result.first[k]
                failure = f"every comparison failed: {first.failure}" if first is not None else "not judged"
            agreement = sum(agreed[k]) / len(agreed[k]) if agreed[k] else None
            out = {**info, "compared": result.compared[k], "failure": failure, "agreement": agreement}
            self._resolve(group.futures[k], (result.probs[k], out))

    @staticmethod
    def _resolve(future, value) -> None:
        if not future.done():
            future.set_result(value)
