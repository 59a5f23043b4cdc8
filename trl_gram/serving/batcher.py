"""Micro-batching of judge requests from concurrent callers.

Every caller submits its pairs and waits; one worker thread owns the judge. When work arrives the worker waits a short
window (``window_s``) for more callers, then judges everything pending (up to ``max_pairs`` pairs per batch, grouped
by judging options) in one :meth:`~trl_gram.judge.GramJudge.judge` call, so the engine sees large batches with shared
prefixes across callers, and hands each caller its own results.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from transformers.utils import logging

logger = logging.get_logger(__name__)


@dataclass(eq=False)
class _Request:
    questions: list
    first: list
    second: list
    options: tuple  # (mode, swap)
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """Shares judge batches across concurrent callers.

    Args:
        judge: A :class:`~trl_gram.judge.GramJudge` (used from the worker thread only).
        window_s: How long the worker waits after the first pending request for others to join its batch.
        max_pairs: Pairs per judge call; a single larger request is judged alone.
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
        self.stats = {"requests": 0, "pairs": 0, "batches": 0, "max_requests_per_batch": 0, "errors": 0}
        self._thread = threading.Thread(target=self._work, name="trl-gram-judge", daemon=True)
        self._thread.start()

    def submit(self, questions, first, second, mode: str | None = None, swap: str | None = None) -> Future:
        """Queue pairs; the future resolves to one :class:`~trl_gram.judge.PairJudgment` per pair."""
        if not (len(questions) == len(first) == len(second)):
            raise ValueError("`questions`, `first` and `second` must have the same length.")
        request = _Request(list(questions), list(first), list(second), (mode, swap))
        if not questions:
            request.future.set_result([])
            return request.future
        with self._cond:
            if self._stopped:
                raise RuntimeError("The judge batcher is stopped.")
            self._pending.append(request)
            self._cond.notify()
        return request.future

    async def judge_async(self, questions, first, second, mode: str | None = None, swap: str | None = None):
        """``submit`` for asyncio callers."""
        return await asyncio.wrap_future(self.submit(questions, first, second, mode, swap))

    def stop(self, timeout: float | None = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout)

    # ---------------------------------------------------------------------------------------------------------------
    def _take(self) -> list[_Request] | None:
        with self._cond:
            while not self._pending and not self._stopped:
                self._cond.wait()
            if self._stopped and not self._pending:
                return None
            deadline = self._pending[0].arrived + self.window_s
            while not self._stopped and sum(len(r.questions) for r in self._pending) < self.max_pairs:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, size = [], 0
            while self._pending and (not batch or size + len(self._pending[0].questions) <= self.max_pairs):
                request = self._pending.pop(0)
                batch.append(request)
                size += len(request.questions)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            by_options: dict[tuple, list[_Request]] = {}
            for request in batch:
                by_options.setdefault(request.options, []).append(request)
            for (mode, swap), requests in by_options.items():
                self._run(requests, mode, swap)

    def _run(self, requests: list[_Request], mode, swap) -> None:
        questions = [q for r in requests for q in r.questions]
        first = [x for r in requests for x in r.first]
        second = [x for r in requests for x in r.second]
        self.stats["requests"] += len(requests)
        self.stats["pairs"] += len(questions)
        self.stats["batches"] += 1
        self.stats["max_requests_per_batch"] = max(self.stats["max_requests_per_batch"], len(requests))
        try:
            judgments = self.judge.judge(questions, first, second, mode=mode, swap=swap, show_progress=False)
        except Exception as e:  # noqa: BLE001  (every waiting caller gets the error, the worker keeps serving)
            if len(requests) > 1:  # one bad request must not fail its neighbours: judge them one by one
                for r in requests:
                    self._run([r], mode, swap)
                return
            self.stats["errors"] += 1
            logger.warning(f"Judging a request failed: {e!r}")
            requests[0].future.set_exception(e)
            return
        at = 0
        for r in requests:
            r.future.set_result(judgments[at : at + len(r.questions)])
            at += len(r.questions)
