"""[`RemoteGenerativeRewardFunction`]: a GRAM judge served over HTTP (``trl-gram serve``) as an async TRL reward.

For ``GRPOTrainer`` / ``RLOOTrainer`` (TRL runs async reward functions concurrently on its event loop): the batch is
split into requests that keep each group of completions of one prompt together (equal prompts, [`~pairing.groups`]),
the requests are sent concurrently (``max_concurrency``) to the server's ``/reward`` endpoint and retried, with
exponential backoff and jitter, on connection errors, timeouts, 408/425/429 and 5xx answers (a server restarting or
still loading its judge answers 503 or refuses connections) until the time budget ``timeout`` is spent. Completions
whose request finally fails get ``None`` (TRL then ignores them for this reward); the server itself returns ``None``
for completions it could not score. A step where no completion got a reward is logged as a warning and as the metric
``<name>/no_rewards`` = 1.
"""

from __future__ import annotations

import asyncio
import time

from transformers.utils import logging

from .. import pairing
from ..http_client import RemoteCallError, RetryPolicy, apost_json, bearer_headers, list_field
from ..pairing import groups as _groups

logger = logging.get_logger(__name__)


class RemoteGenerativeRewardFunction:
    """Async TRL reward function calling a trl-gram reward server ([`~serving.server.create_app`]).

    Args:
        url (`str`): The server, e.g. ``"http://judge-host:8000"`` (``/reward`` is appended unless the URL already
            ends with an endpoint path).
        api_key (`str`, *optional*): Bearer token, if the server was started with one.
        reference (`str`): ``"group"`` (every pair within a prompt's completions) or ``"pivot"`` (each against the
            first); ignored when references are given.
        reference_column (`str`, *optional*): Dataset column holding one reference response per completion (else
            ``references=`` passed by the trainer, else ``reference``).
        timeout (`float`): Time budget of one request in seconds, retries included: attempts go on (each limited to
            the time left) until it is spent.
        retries (`int`, *optional*): Cap on extra attempts after a failed one (``None``: as many as ``timeout``
            allows).
        backoff (`float`): First retry delay in seconds; doubled at each retry (with jitter), at most
            ``max_backoff`` ([`~http_client.RetryPolicy`]).
        max_backoff (`float`): Longest delay between two attempts (short, so that a restarting server is used as
            soon as it is back).
        max_concurrency (`int`): Requests in flight at once.
        max_completions_per_request (`int`): Requests are cut at group boundaries to hold at most this many
            completions (a larger group still goes whole).
        name (`str`): The reward's name in TRL logs.
        schedule, schedule_degree, aggregate, second_order, second_order_margin, max_judge_calls_per_group,
        length_control, schedule_seed: Group-comparison settings sent with each request ([`~pairing.ComparisonConfig`];
            ``None``: the server's own).
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        reference: str = "group",
        reference_column: str | None = None,
        timeout: float = 300.0,
        retries: int | None = None,
        backoff: float = 0.5,
        max_backoff: float = 2.0,
        max_concurrency: int = 8,
        max_completions_per_request: int = 64,
        name: str = "gram_remote_reward",
        schedule: str | None = None,
        schedule_degree: int | None = None,
        aggregate: str | None = None,
        second_order: str | None = None,
        second_order_margin: float | None = None,
        max_judge_calls_per_group: int | None = None,
        length_control: bool | None = None,
        schedule_seed: int | None = None,
    ):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"`url` must be an http(s) URL, got {url!r}.")
        if reference not in ("group", "pivot"):
            raise ValueError(f"`reference` must be 'group' or 'pivot', got {reference!r}.")
        if max_concurrency < 1 or max_completions_per_request < 1:
            raise ValueError(
                f"`max_concurrency` and `max_completions_per_request` must be positive, got {max_concurrency} and "
                f"{max_completions_per_request}."
            )
        self.policy = RetryPolicy(timeout=timeout, retries=retries, backoff=backoff, max_backoff=max_backoff)
        self.comparison = pairing.comparison_overrides(
            schedule=schedule,
            schedule_degree=schedule_degree,
            aggregate=aggregate,
            second_order=second_order,
            second_order_margin=second_order_margin,
            max_judge_calls_per_group=max_judge_calls_per_group,
            length_control=length_control,
            schedule_seed=schedule_seed,
        )
        base = url.rstrip("/")
        self.url = base if base.rsplit("/", 1)[-1] in ("reward", "get_reward") else base + "/reward"
        self.api_key = api_key
        self.reference = reference
        self.reference_column = reference_column
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.max_completions_per_request = max_completions_per_request
        self.__name__ = name
        self.last_stats: dict = {}

    def __repr__(self):
        return f"{type(self).__name__}(url={self.url!r}, reference={self.reference!r})"

    # ---------------------------------------------------------------------------------------------------------------
    def _chunks(self, prompts, with_references: bool) -> list[list[int]]:
        units = [[i] for i in range(len(prompts))] if with_references else _groups(prompts)
        chunks, cur = [], []
        for unit in units:
            if cur and len(cur) + len(unit) > self.max_completions_per_request:
                chunks.append(cur)
                cur = []
            cur = cur + unit
        return chunks + ([cur] if cur else [])

    async def _post(self, client, payload) -> list | None:
        def log_retry(attempt, error):
            logger.info(f"Reward request failed ({error}); retry {attempt}.")

        try:
            return await apost_json(
                client,
                self.url,
                payload,
                policy=self.policy,
                headers=bearer_headers(self.api_key),
                validate=list_field("rewards", len(payload["completions"])),
                on_retry=log_retry,
            )
        except RemoteCallError as e:
            logger.warning(f"Reward request gave up after {e.attempts} attempt(s) in a {self.timeout:g}s budget: {e}")
            return None

    async def score(self, prompts, completions, references=None) -> list[float | None]:
        """Rewards for ``completions`` (one per completion, ``None`` where the server could not be reached or could
        not score it)."""
        import httpx

        if len(prompts) != len(completions):
            raise ValueError(f"`prompts` has {len(prompts)} items but `completions` has {len(completions)}.")
        if references is not None and len(references) != len(completions):
            raise ValueError(f"`references` has {len(references)} items for {len(completions)} completions.")
        out: list[float | None] = [None] * len(completions)
        chunks = self._chunks(prompts, references is not None)
        semaphore = asyncio.Semaphore(self.max_concurrency)
        started = time.monotonic()

        async def run(client, idx):
            payload = {
                "prompts": [prompts[i] for i in idx],
                "completions": [completions[i] for i in idx],
                "reference": self.reference,
                "group_across_requests": False,  # each request holds whole groups
                **self.comparison,
            }
            if references is not None:
                payload["references"] = [references[i] for i in idx]
            async with semaphore:
                rewards = await self._post(client, payload)
            if rewards is not None:
                for i, r in zip(idx, rewards):
                    out[i] = None if r is None else float(r)
            return rewards is not None

        limits = httpx.Limits(max_connections=self.max_concurrency)
        async with httpx.AsyncClient(limits=limits) as client:
            ok = await asyncio.gather(*(run(client, idx) for idx in chunks))
        self.last_stats = {
            "requests": len(chunks),
            "failed_requests": sum(not x for x in ok),
            "seconds": time.monotonic() - started,
            "unscored": sum(r is None for r in out),
        }
        return out

    async def __call__(
        self,
        prompts,
        completions,
        completion_ids=None,
        trainer_state=None,
        log_extra=None,
        log_metric=None,
        references=None,
        **columns,
    ) -> list[float | None]:
        if references is None and self.reference_column is not None:
            if self.reference_column not in columns:
                raise ValueError(
                    f"`reference_column={self.reference_column!r}` is not among the dataset columns passed to the "
                    f"reward: {sorted(columns)}."
                )
            references = columns[self.reference_column]
        rewards = await self.score(list(prompts), list(completions), references)
        nothing = len(rewards) > 0 and all(r is None for r in rewards)
        if nothing:
            logger.warning(
                f"{self.__name__}: no completion of this step got a reward ({self.last_stats['failed_requests']} of "
                f"{self.last_stats['requests']} requests to {self.url} failed); the step trains on no reward signal."
            )
        if log_metric is not None:
            log_metric(f"{self.__name__}/no_rewards", float(nothing))
            log_metric(f"{self.__name__}/failed_requests", float(self.last_stats["failed_requests"]))
            log_metric(f"{self.__name__}/unscored", float(self.last_stats["unscored"]))
            log_metric(f"{self.__name__}/seconds", float(self.last_stats["seconds"]))
        return rewards
