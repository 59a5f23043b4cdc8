"""Micro-batching of judge work from concurrent callers, fairly.

Every caller submits its pairs and waits; one worker thread owns the judge. When work arrives the worker waits a short
window (``window_s``) for more callers, then builds a batch of at most ``max_pairs`` pairs **round-robin** over the
pending requests (each request gives an equal share, the rest goes to those with more left), so a request of
thousands of pairs is judged a slice at a time and a small request arriving meanwhile joins the next batch instead of
waiting behind all of it. Requests are batched only with others of the same judging options.

A judge error never fails a neighbour: a batch that raises is judged again request by request, then a request's slice
pair by pair; a pair that still raises gets a [`FailedPair`] carrying the error (probability NaN), which the caller
turns into a per-item reason.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from transformers.utils import logging

logger = logging.get_logger(__name__)


@dataclass
class FailedPair:
    """Stands for the judgment of a pair whose judging raised (duck-types [`~judge.PairJudgment`])."""

    failure: str
    prob: float = math.nan
    label: str | None = None
    agreement: bool | None = None
    runs: list = field(default_factory=list)
    rationale: str = ""


@dataclass(eq=False)
class _Request:
    questions: list
    first: list
    second: list
    options: tuple  # (mode, swap, votes)
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)
    taken: int = 0  # pairs handed to the judge so far
    results: list = field(default_factory=list)

    @property
    def left(self) -> int:
        return len(self.questions) - self.taken


class MicroBatcher:
    """Shares judge batches across concurrent callers, round-robin.

    Args:
        judge: A [`~judge.GramJudge`] (used from the worker thread only).
        window_s (`float`): How long the worker waits after the first pending request for others to join its batch.
        max_pairs (`int`): Pairs per judge call.
    """

    def __init__(self, judge, window_s: float = 0.01, max_pairs: int = 512):
        if window_s < 0 or max_pairs < 1:
            raise ValueError("`window_s` must be >= 0 and `max_pairs` >= 1.")
        self.judge = judge
        self.window_s = window_s
        self.max_pairs = max_pairs
        self._pending: list[_Request] = []
        self._cond = threading.Condition()
        self._stopped = False
        self.stats = {
            "requests": 0,
            "pairs": 0,
            "batches": 0,
            "max_requests_per_batch": 0,
            "errors": 0,
            "failed_pairs": 0,
        }
        self._thread = threading.Thread(target=self._work, name="trl-gram-judge", daemon=True)
        self._thread.start()

    def submit(
        self, questions, first, second, mode: str | None = None, swap: str | None = None, votes: int | None = None
    ) -> Future:
        """Queue pairs; the future resolves to one [`~judge.PairJudgment`] (or [`FailedPair`]) per pair. Pairs are
        batched with others of the same `(mode, swap, votes)`; `None` is the judge's own setting."""
        if not (len(questions) == len(first) == len(second)):
            raise ValueError("`questions`, `first` and `second` must have the same length.")
        request = _Request(list(questions), list(first), list(second), (mode, swap, votes))
        if not questions:
            request.future.set_result([])
            return request.future
        with self._cond:
            if self._stopped:
                raise RuntimeError("The judge batcher is stopped.")
            self._pending.append(request)
            self.stats["requests"] += 1
            self._cond.notify()
        return request.future

    async def judge_async(
        self, questions, first, second, mode: str | None = None, swap: str | None = None, votes: int | None = None
    ):
        """[`~MicroBatcher.submit`] for asyncio callers."""
        return await asyncio.wrap_future(self.submit(questions, first, second, mode, swap, votes))

    def stop(self, timeout: float | None = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout)

    # ---------------------------------------------------------------------------------------------------------------
    def _take(self) -> list[tuple[_Request, int, int]] | None:
        """Slices ``(request, start, stop)`` for the next judge call, shared round-robin."""
        with self._cond:
            while not self._pending and not self._stopped:
                self._cond.wait()
            if self._stopped and not self._pending:
                return None
            deadline = self._pending[0].arrived + self.window_s
            while not self._stopped and sum(r.left for r in self._pending) < self.max_pairs:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            options = self._pending[0].options
            queue = [r for r in self._pending if r.options == options]
            shares = {id(r): 0 for r in queue}
            room = self.max_pairs
            while room > 0:
                open_ = [r for r in queue if r.left - shares[id(r)] > 0]
                if not open_:
                    break
                quantum = max(1, room // len(open_))
                for r in open_:
                    give = min(quantum, r.left - shares[id(r)], room)
                    shares[id(r)] += give
                    room -= give
                    if room == 0:
                        break
            slices = []
            for r in queue:
                if shares[id(r)]:
                    slices.append((r, r.taken, r.taken + shares[id(r)]))
                    r.taken += shares[id(r)]
            self._pending = [r for r in self._pending if r.left > 0]
            return slices

    def _work(self) -> None:
        while True:
            slices = self._take()
            if slices is None:
                return
            options = slices[0][0].options
            self.stats["batches"] += 1
            self.stats["max_requests_per_batch"] = max(self.stats["max_requests_per_batch"], len(slices))
            results = self._judge_slices(slices, options)
            for (r, _, _), out in zip(slices, results):
                r.results.extend(out)
                if len(r.results) == len(r.questions) and not r.future.done():
                    r.future.set_result(r.results)

    def _call(self, q, a, b, options) -> list:
        mode, swap, votes = options
        self.stats["pairs"] += len(q)
        extra = {} if votes is None else {"votes": votes}
        return self.judge.judge(q, a, b, mode=mode, swap=swap, show_progress=False, **extra)

    def _judge_slices(self, slices, options) -> list[list]:
        q = [x for r, s, e in slices for x in r.questions[s:e]]
        a = [x for r, s, e in slices for x in r.first[s:e]]
        b = [x for r, s, e in slices for x in r.second[s:e]]
        try:
            judgments = self._call(q, a, b, options)
        except Exception as e:  # noqa: BLE001  (isolate: judge the slices, then the pairs, one by one)
            if len(slices) > 1:
                return [self._judge_slices([sl], options)[0] for sl in slices]
            return [self._one_by_one(slices[0], options, e)]
        out, at = [], 0
        for _, s, e in slices:
            out.append(judgments[at : at + e - s])
            at += e - s
        return out

    def _one_by_one(self, slice_, options, first_error) -> list:
        r, s, e = slice_
        if e - s == 1:
            return [self._failed(first_error)]
        out = []
        for k in range(s, e):
            try:
                out += self._call([r.questions[k]], [r.first[k]], [r.second[k]], options)
            except Exception as err:  # noqa: BLE001
                out.append(self._failed(err))
        return out

    def _failed(self, error: Exception) -> FailedPair:
        self.stats["errors"] += 1
        self.stats["failed_pairs"] += 1
        logger.warning(f"Judging a pair failed: {type(error).__name__}: {error}")
        return FailedPair(failure=f"judging failed: {type(error).__name__}: {error}")
