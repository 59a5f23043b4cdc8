"""Reward functions for verl that call a trl-gram reward server (``trl-gram serve``); configurations in
``docs/serving.md``.

* [`compute_score`] (``async``): for verl's **reward loop** (its default since v0.7, ``reward_model.reward_manager=
  naive``), which calls the reward function once per response, all responses of a step concurrently. Responses
  without a reference join their prompt's group on the server (start it with ``--group_size`` = ``rollout.n``).
* [`compute_score_batch`]: for the **legacy** ``batch`` reward manager (``reward_model.use_reward_loop=False
  reward_model.reward_manager=batch``), which passes a whole step at once. The step is split into requests that keep
  each prompt's group whole and stay under the server's limits (read from ``/ready``), sent concurrently.

The judge needs the question: put it in each row's ``extra_info`` under ``question`` (verl's own preprocessing scripts
do). A non-empty ``ground_truth`` is a reference answer (the response scores its win probability against it);
otherwise responses to the same question are compared with each other, with the group-comparison settings of
[`~pairing.ComparisonConfig`] (``schedule``, ``schedule_degree``, ``aggregate``, ``second_order``...) when given in
``reward_kwargs`` (else the server's). URL and key can also come from
``TRL_GRAM_URL`` / ``TRL_GRAM_API_KEY``. Requests are retried with exponential backoff and jitter until ``timeout``
seconds are spent; then a ``RuntimeError`` says what failed.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from transformers.utils import logging

# Absolute imports: verl loads this file by its path (`custom_reward_function.path`) as a module outside the package.
from trl_gram import schedules
from trl_gram.http_client import RemoteCallError, RetryPolicy, apost_json, bearer_headers, post_json
from trl_gram.pairing import COMPARISON_FIELDS, comparison_overrides, groups, has_reference
from trl_gram.serving.verl_result import verl_result

logger = logging.get_logger(__name__)


def _settings(url, api_key):
    url = url or os.environ.get("TRL_GRAM_URL")
    if not url:
        raise ValueError(
            "No reward server URL: pass `url=` (custom_reward_function.reward_kwargs) or set TRL_GRAM_URL."
        )
    return url.rstrip("/"), bearer_headers(api_key or os.environ.get("TRL_GRAM_API_KEY"))


def _question(extra_info, key, where="extra_info") -> object:
    if not isinstance(extra_info, dict) or not isinstance(extra_info.get(key), (str, list)):
        raise ValueError(f"`{where}` has no `{key}`: put the question in each row's extra_info for the judge.")
    return extra_info[key]


def _failed(error: RemoteCallError) -> RuntimeError:
    hint = "" if error.refused else "; is `trl-gram serve` running and reachable from the workers?"
    return RuntimeError(f"trl-gram reward server: {error}{hint}")


def _reference(ground_truth):
    """verl's ``ground_truth`` as a reference: text or a number; empty or ``None`` means "compare within the group"."""
    if isinstance(ground_truth, bool) or ground_truth is None:
        return None
    if isinstance(ground_truth, (int, float)):
        return str(ground_truth)
    return ground_truth if not isinstance(ground_truth, str) or has_reference(ground_truth) else None


def _warn_unscored(failures, count) -> None:
    reasons = [f for f in failures if f]
    if reasons:
        logger.warning(
            f"The reward server could not score {count} response(s), given the failure reward: {reasons[0]}"
        )


_CLIENTS: dict = {}  # one connection pool and concurrency limit per event loop (verl runs one per reward worker)


def _client_for_loop(max_concurrency):
    import httpx

    loop = asyncio.get_running_loop()
    entry = _CLIENTS.get(id(loop))
    if entry is None or entry[0] is not loop:
        limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
        entry = _CLIENTS[id(loop)] = (loop, httpx.AsyncClient(limits=limits), asyncio.Semaphore(max_concurrency))
    return entry[1], entry[2]


async def compute_score(
    data_source=None,
    solution_str=None,
    ground_truth=None,
    extra_info=None,
    *,
    url=None,
    api_key=None,
    question_key="question",
    failure_reward=0.5,
    timeout=600.0,
    backoff=0.5,
    max_concurrency=1024,
    **kwargs,
) -> dict:
    """verl reward-loop ``compute_score`` for one response: a dict of ``score`` and the judge's health (``compared``,
    ``swap_agreement``, ``parse_failure``; see [`~trl_gram.serving.verl_result.verl_result`]), which verl's reward
    loop logs beside the score, whichever route judged it.

    Args:
        data_source, solution_str, ground_truth, extra_info: What verl passes (``ground_truth``: reference answer or
            empty; ``extra_info[question_key]``: the question).
        url (`str`): The server (``custom_reward_function.reward_kwargs.url``), else ``TRL_GRAM_URL``. Without
            either, when verl passes ``reward_router_address`` (it launched the GRAM checkpoint as its reward model):
            judged through verl's router by [`~trl_gram.serving.verl_genrm.compute_score_via_router`] (a dict
            with ``score``; its ``reward_kwargs``: ``group_size``, ``group_timeout_s``, ``mode``, ...).
        api_key (`str`, *optional*): Else ``TRL_GRAM_API_KEY``.
        failure_reward (`float`): Reward for a response the server could not score (the reason is in its answer).
        timeout (`float`): Time budget of the call, retries included.
        max_concurrency (`int`): Requests in flight at once per reward worker. Groups form from the requests in
            flight, so keep it well above ``rollout.n`` (verl sends a prompt's responses one after the other).
        **kwargs: Group-comparison settings (``schedule="sparse"``, ``second_order="adaptive"``...): those of the
            request that opens a group on the server are its group's; other keys verl passes are ignored.
    """
    if kwargs.get("reward_router_address") and not (url or os.environ.get("TRL_GRAM_URL")):
        # verl launched the judge itself: judge through its router (returns a dict with judge-health keys)
        from trl_gram.serving.verl_genrm import compute_score_via_router

        return await compute_score_via_router(
            data_source,
            solution_str,
            ground_truth,
            extra_info,
            question_key=question_key,
            failure_reward=failure_reward,
            **kwargs,
        )
    base, headers = _settings(url, api_key)
    reference = _reference(ground_truth)
    payload = {
        "prompts": [_question(extra_info, question_key)],
        "completions": [solution_str if isinstance(solution_str, str) else str(solution_str)],
        "references": [reference],
        **comparison_overrides(**{k: kwargs[k] for k in COMPARISON_FIELDS if k in kwargs}),
    }
    client, semaphore = _client_for_loop(max_concurrency)
    async with semaphore:
        try:
            answer = await apost_json(
                client,
                base + "/reward",
                payload,
                policy=RetryPolicy(timeout=timeout, backoff=backoff),
                headers=headers,
            )
        except RemoteCallError as e:
            raise _failed(e) from e
    reward = answer["rewards"][0]
    if reward is None:
        _warn_unscored(answer.get("failures") or [], 1)
    agreement = (answer.get("swap_agreement") or [None])[0]
    return verl_result(reward, (answer.get("compared") or [0])[0], agreement, failure_reward)


def server_limits(url=None, api_key=None, timeout=10.0) -> dict:
    """The server's limits (``/ready``): ``max_pairs_per_request``, ``max_request_bytes``, ``group_size``..."""
    import httpx

    base, headers = _settings(url, api_key)
    try:
        response = httpx.get(base + "/ready", headers=headers, timeout=timeout)
        if response.status_code == 200:
            return response.json().get("limits") or {}
    except httpx.HTTPError:
        pass
    return {}


def split_step(
    questions, references, reference="group", max_pairs=4096, max_items=None, schedule="all", schedule_degree=4
) -> list[list[int]]:
    """Requests for one step: lists of indices, each prompt's group whole, at most ``max_pairs`` comparisons (and
    ``max_items`` responses) per request (a group's comparisons under ``schedule``, [`~schedules.cost`])."""
    referenced = [i for i in range(len(questions)) if has_reference(references[i])]
    rest = [i for i in range(len(questions)) if not has_reference(references[i])]
    units = [([i], 1) for i in referenced]
    for g in groups(questions, rest):
        n = len(g)
        cost = schedules.cost(n, schedule, schedule_degree) if reference == "group" else n - 1
        if cost > max_pairs:
            raise ValueError(
                f"A group of {n} responses to one question needs {cost} comparisons, more than the server's "
                f"{max_pairs} per request: use reference='pivot' or raise the server's --max_pairs_per_request."
            )
        units.append((g, cost))
    chunks, cur, cost_now = [], [], 0
    for idx, cost in units:
        if cur and (cost_now + cost > max_pairs or (max_items and len(cur) + len(idx) > max_items)):
            chunks.append(cur)
            cur, cost_now = [], 0
        cur, cost_now = cur + idx, cost_now + cost
    return chunks + ([cur] if cur else [])


def compute_score_batch(
    data_sources,
    solution_strs,
    ground_truths,
    extra_infos,
    *,
    url=None,
    api_key=None,
    question_key="question",
    reference="group",
    failure_reward=0.5,
    timeout=1800.0,
    backoff=0.5,
    max_concurrency=8,
    max_pairs_per_request=None,
    **kwargs,
) -> list[float]:
    """verl ``compute_score`` for the legacy ``batch`` reward manager: one step, split into requests.

    Args:
        data_sources, solution_strs, ground_truths, extra_infos: What the batch manager passes.
        url, api_key, question_key, failure_reward: As for [`compute_score`].
        reference (`str`): ``"group"`` or ``"pivot"`` within a question's responses.
        timeout (`float`): Time budget of each request, retries included.
        max_concurrency (`int`): Requests in flight at once.
        max_pairs_per_request (`int`, *optional*): Comparisons per request (default: the server's limit).
        **kwargs: Group-comparison settings sent with each request (see [`compute_score`]).
    """
    import httpx

    base, headers = _settings(url, api_key)
    n = len(solution_strs)
    questions = [_question(info, question_key, f"extra_infos[{i}]") for i, info in enumerate(extra_infos)]
    refs = [_reference(g) for g in (list(ground_truths) if ground_truths is not None else [None] * n)]
    comparison = comparison_overrides(**{k: kwargs[k] for k in COMPARISON_FIELDS if k in kwargs})
    limit = max_pairs_per_request or server_limits(url, api_key).get("max_pairs_per_request") or 4096
    schedule = (comparison.get("schedule", "all"), comparison.get("schedule_degree", 4))
    chunks = split_step(questions, refs, reference, limit, None, *schedule)
    out = [failure_reward] * n
    policy = RetryPolicy(timeout=timeout, backoff=backoff)

    def send(idx):
        payload = {
            "prompts": [questions[i] for i in idx],
            "completions": [solution_strs[i] for i in idx],
            "references": [refs[i] for i in idx],
            "reference": reference,
            "group_across_requests": False,
            **comparison,
        }
        try:
            answer = post_json(client, base + "/reward", payload, policy=policy, headers=headers)
        except RemoteCallError as e:
            raise _failed(e) from e
        rewards = answer["rewards"]
        if any(r is None for r in rewards):
            _warn_unscored(answer.get("failures") or [], sum(r is None for r in rewards))
        for i, r in zip(idx, rewards):
            out[i] = failure_reward if r is None else float(r)

    with httpx.Client() as client, ThreadPoolExecutor(max_workers=max_concurrency) as pool:
        for future in [pool.submit(send, idx) for idx in chunks]:
            future.result()
    return out
