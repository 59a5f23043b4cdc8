"""One way to call an HTTP service: POST a JSON body, retry what is worth retrying, inside a time budget.

Every remote call trl-gram makes goes through here: the remote reward ([`~serving.remote_reward.RemoteGenerativeRewardFunction`]),
the verl functions ([`~serving.verl`]), the remote win-rate judge ([`~win_rate.RemoteJudge`]) and the engine backends.

* **What is retried**: connection errors, timeouts, the statuses in [`RETRYABLE_STATUS`] (408, 425, 429 and the 5xx
  answers of a server that is restarting or overloaded) and answers that fail the caller's `validate`. Any other status
  fails at once: resending a request the server refused would only be refused again.
* **When**: after a delay that starts at `backoff`, doubles at every retry and never exceeds `max_backoff`, drawn
  uniformly from the upper half of that value (jitter, so that many clients do not retry in step). A `Retry-After`
  header shorter than `max_backoff` is honoured. The cap keeps the wait short once a restarting server is back.
* **How long**: until `timeout` seconds are spent (each attempt gets at most the time left), or `retries` extra
  attempts, whichever comes first.
* **One error**: [`RemoteCallError`], naming the URL, the attempts, the last status and the last error.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class RemoteCallError(RuntimeError):
    """A remote call that did not succeed within its budget, or that the server refused.

    Attributes:
        url (`str`): The URL called.
        attempts (`int`): Attempts made.
        status (`int` or `None`): The last HTTP status received (`None` when no answer came).
        refused (`bool`): `True` when the server answered a status that is not retried (4xx other than 408/425/429).
    """

    def __init__(self, url: str, attempts: int, error: str, status: int | None = None, refused: bool = False):
        self.url, self.attempts, self.status, self.refused, self.error = url, attempts, status, refused, error
        what = "refused the request" if refused else f"failed {attempts} time{'s' if attempts != 1 else ''}"
        super().__init__(f"{url} {what}: {error}")


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often a call is retried.

    Args:
        timeout (`float`, *optional*, defaults to `300.0`):
            Time budget of the whole call in seconds, retries and waits included.
        retries (`int`, *optional*):
            Cap on the extra attempts after a failed one (`None`: as many as `timeout` allows).
        backoff (`float`, *optional*, defaults to `0.5`):
            First retry delay in seconds, doubled at each retry.
        max_backoff (`float`, *optional*, defaults to `2.0`):
            Longest wait between two attempts.
    """

    timeout: float = 300.0
    retries: int | None = None
    backoff: float = 0.5
    max_backoff: float = 2.0

    def __post_init__(self):
        if self.timeout <= 0:
            raise ValueError(f"`timeout` must be positive, got {self.timeout}.")
        if self.retries is not None and self.retries < 0:
            raise ValueError(f"`retries` must be >= 0 or None, got {self.retries}.")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(f"`backoff` and `max_backoff` must be >= 0, got {self.backoff} and {self.max_backoff}.")

    def delay(self, attempt: int, left: float, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1` (0-based `attempt` failed), at most `left`."""
        cap = min(self.max_backoff, self.backoff * 2 ** min(attempt, 30))
        wait = cap * (0.5 + 0.5 * random.random())
        if retry_after is not None and 0 <= retry_after <= self.max_backoff:
            wait = max(wait, retry_after)
        return max(0.0, min(wait, left))

    def more(self, attempt: int, deadline: float) -> bool:
        """Whether another attempt may follow the failed attempt `attempt` (0-based) before `deadline`."""
        return (self.retries is None or attempt < self.retries) and deadline - time.monotonic() > 0


def _retry_after(response) -> float | None:
    try:
        return float(response.headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


def _judge_answer(response, url: str, attempt: int, validate: Callable[[Any], Any] | None):
    """`(result, error, status)` of one answer: a result, a retryable error, or a `RemoteCallError` raised."""
    status = response.status_code
    if status == 200:
        try:
            body = response.json()
            return (validate(body) if validate is not None else body), None, status
        except ValueError as e:  # invalid JSON, or the caller's check failed
            return None, f"malformed answer ({e}): {response.text[:200]!r}", status
    error = f"HTTP {status}: {response.text[:300]}"
    if status not in RETRYABLE_STATUS:
        raise RemoteCallError(url, attempt + 1, error, status=status, refused=True)
    return None, error, status


def _attempts(url: str, policy: RetryPolicy, validate, on_retry):
    """The retry loop, as a generator the sync and async drivers run: it yields `("post", seconds_left)` and is sent
    the response (or the `httpx.HTTPError` raised), yields `("sleep", seconds)` between attempts, and returns the
    result or raises [`RemoteCallError`]."""
    deadline = time.monotonic() + policy.timeout
    attempt, error, status = 0, "no attempt made", None
    while (left := deadline - time.monotonic()) > 0:
        outcome = yield "post", left
        response = None if isinstance(outcome, Exception) else outcome
        if response is None:
            error = f"{type(outcome).__name__}: {outcome}"
        else:
            result, error, status = _judge_answer(response, url, attempt, validate)
            if error is None:
                return result
        if not policy.more(attempt, deadline):
            break
        if on_retry is not None:
            on_retry(attempt + 1, error)
        yield "sleep", policy.delay(attempt, deadline - time.monotonic(), response and _retry_after(response))
        attempt += 1
    raise RemoteCallError(url, attempt + 1, error, status=status)


def post_json(
    client,
    url: str,
    payload: Any,
    *,
    policy: RetryPolicy,
    headers: dict | None = None,
    validate: Callable[[Any], Any] | None = None,
    on_retry: Callable[[int, str], None] | None = None,
) -> Any:
    """POST `payload` as JSON with an `httpx.Client`, retried under `policy`.

    Args:
        client (`httpx.Client`): The client (its connection pool is reused).
        url (`str`): Full URL of the endpoint.
        payload: The JSON body.
        policy ([`RetryPolicy`]): Budget and backoff.
        headers (`dict`, *optional*): Extra headers (e.g. `Authorization`).
        validate (`Callable`, *optional*): Takes the decoded answer, returns what the call returns; raises
            `ValueError` for a malformed answer (retried).
        on_retry (`Callable`, *optional*): Called with `(attempt, error)` before each wait (for logs and counters).

    Returns:
        The decoded JSON answer, or what `validate` made of it.

    Raises:
        [`RemoteCallError`]: when the server refused the request or the budget ran out.

    Example:

    ```python
    >>> import httpx
    >>> from trl_gram.http_client import RetryPolicy, post_json
    >>> with httpx.Client() as client:
    ...     answer = post_json(client, "http://127.0.0.1:8000/reward", {...}, policy=RetryPolicy(timeout=60))
    ```
    """
    import httpx

    steps = _attempts(url, policy, validate, on_retry)
    try:
        kind, value = next(steps)
        while True:
            if kind == "sleep":
                time.sleep(value)
                kind, value = steps.send(None)
                continue
            try:
                outcome = client.post(url, json=payload, headers=headers or {}, timeout=value)
            except httpx.HTTPError as e:
                outcome = e
            kind, value = steps.send(outcome)
    except StopIteration as done:
        return done.value


async def apost_json(
    client,
    url: str,
    payload: Any,
    *,
    policy: RetryPolicy,
    headers: dict | None = None,
    validate: Callable[[Any], Any] | None = None,
    on_retry: Callable[[int, str], None] | None = None,
) -> Any:
    """[`post_json`] for an `httpx.AsyncClient`: the same arguments, answers and errors."""
    import httpx

    steps = _attempts(url, policy, validate, on_retry)
    try:
        kind, value = next(steps)
        while True:
            if kind == "sleep":
                await asyncio.sleep(value)
                kind, value = steps.send(None)
                continue
            try:
                outcome = await client.post(url, json=payload, headers=headers or {}, timeout=value)
            except httpx.HTTPError as e:
                outcome = e
            kind, value = steps.send(outcome)
    except StopIteration as done:
        return done.value


def list_field(name: str, length: int) -> Callable[[Any], list]:
    """A `validate` for [`post_json`]: the answer's list `name`, which must hold `length` items (else `ValueError`,
    so the malformed answer is retried)."""

    def read(answer) -> list:
        value = answer.get(name) if isinstance(answer, dict) else None
        if not isinstance(value, list) or len(value) != length:
            raise ValueError(f"expected {length} {name}")
        return value

    return read


def bearer_headers(api_key: str | None) -> dict:
    """`{"Authorization": "Bearer <key>"}`, or `{}` without a key."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}
