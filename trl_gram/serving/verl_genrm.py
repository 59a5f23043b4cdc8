"""verl without a trl-gram server: verl launches the GRAM checkpoint as its own generative reward model (vLLM or
SGLang servers behind its router) and hands ``compute_score`` a ``reward_router_address`` and a
``reward_model_tokenizer`` (verl's reward loop, ``NaiveRewardManager.run_single``). [`compute_score_via_router`]
judges through that router with the ``openai`` backend ([`~trl_gram.judge.backends.openai.OpenAIBackend`]): the same
token prompts, label log-probabilities and debiasing as every other trl-gram judge.

* **Groups**: the responses of one prompt that reach the same reward-loop worker (one event loop, one process) are
  collected into a group ([`~trl_gram.serving.grouping.GroupCollector`]) and compared with each other; a group closes
  at ``group_size`` members (set it to ``rollout.n``) or ``group_timeout_s`` after its latest member. Responses of one
  prompt that verl hands to *different* workers cannot meet: each worker judges the part it received as a smaller
  group, logged as a short group (WARNING line); with one worker (the default) every group is whole.
* **A ``ground_truth``** (non-empty) is a reference answer: the response is judged against it alone, no grouping.
* **What verl logs**: the answer is a dict, ``score`` plus ``compared`` (comparisons behind the score),
  ``swap_agreement`` (share of its comparisons whose two orders agreed, ``nan`` when not judged in both orders) and
  ``parse_failure`` (1.0 when the response could not be scored and got ``failure_reward``); verl averages each key
  into its step metrics.

This module uses absolute imports: verl loads ``trl_gram/serving/verl.py`` by file path.
"""

from __future__ import annotations

import asyncio
import math
import threading

from transformers.utils import logging

from trl_gram.pairing import transform
from trl_gram.serving.grouping import GroupCollector
from trl_gram.serving.verl_result import verl_result

logger = logging.get_logger(__name__)

_STATE: dict = {}  # per event loop (one per verl reward worker): judges and group collectors
_LOCK = threading.Lock()  # one judge per router even when a step's first calls connect at once


def router_url(address: str) -> str:
    """verl's router address (``ip:port`` or ``[ipv6]:port``, no scheme) as a base URL."""
    address = str(address).strip()
    return address if address.startswith(("http://", "https://")) else f"http://{address}"


def _judge_for(address, tokenizer, options: dict):
    from trl_gram.judge import GramJudge

    key = ("judge", address, id(tokenizer), tuple(sorted(options.items())))
    with _LOCK:
        judges = _STATE.setdefault("judges", {})
        if key not in judges:
            # cache_size=0: groups of one worker are judged concurrently from executor threads, and the judge's run
            # cache is not made for concurrent callers
            fields = {"cache_size": 0, **{k: v for k, v in options.items() if k != "served_model_name"}}
            judges[key] = GramJudge.from_openai(
                [router_url(address)],
                tokenizer=tokenizer,
                served_model_name=options.get("served_model_name"),
                **fields,
            )
        return judges[key]


def _collector_for(judge, group_size, group_timeout_s, reference) -> GroupCollector:
    loop = asyncio.get_running_loop()
    key = (id(loop), id(judge), group_size, group_timeout_s, reference)
    collectors = _STATE.setdefault("collectors", {})
    entry = collectors.get(key)
    if entry is None or entry[0] is not loop:

        async def judge_pairs(q, a, b):
            return await loop.run_in_executor(None, lambda: judge.judge(q, a, b))

        entry = collectors[key] = (loop, GroupCollector(judge_pairs, group_size, group_timeout_s, reference))
    return entry[1]


async def compute_score_via_router(
    data_source=None,
    solution_str=None,
    ground_truth=None,
    extra_info=None,
    *,
    reward_router_address: str,
    reward_model_tokenizer,
    question_key: str = "question",
    group_size: int | None = None,
    group_timeout_s: float = 60.0,
    reference: str = "group",
    output: str = "prob",
    failure_reward: float = 0.5,
    served_model_name: str | None = None,
    mode: str | None = None,
    swap: str | None = None,
    max_new_tokens: int | None = None,
    **_ignored,
) -> dict:
    """One response's reward from the GenRM verl launched (see the module docstring).

    Args:
        reward_router_address, reward_model_tokenizer: What verl passes.
        question_key (`str`): Key of the question in ``extra_info``.
        group_size (`int`, *optional*): ``rollout.n`` (``None``: groups close at their deadline only).
        group_timeout_s (`float`): A group's deadline after its latest member.
        reference (`str`): ``"group"`` or ``"pivot"``.
        output (`str`): Reward scale (``"prob"``, ``"logit"``, ``"centered"``).
        failure_reward (`float`): Score of a response that could not be judged.
        served_model_name, mode, swap, max_new_tokens: The judge (``None``: the checkpoint's preset or the
            defaults).
    """
    from trl_gram.serving.verl import _question, _reference

    question = _question(extra_info, question_key)
    response = solution_str if isinstance(solution_str, str) else str(solution_str)
    options = {"served_model_name": served_model_name, "mode": mode, "swap": swap, "max_new_tokens": max_new_tokens}
    options = {k: v for k, v in options.items() if v is not None}
    loop = asyncio.get_running_loop()
    judge = await loop.run_in_executor(
        None, lambda: _judge_for(reward_router_address, reward_model_tokenizer, options)
    )
    ref = _reference(ground_truth)
    if ref is not None:
        (jd,) = await loop.run_in_executor(None, lambda: judge.judge([question], [response], [ref]))
        prob = None if math.isnan(jd.prob) or jd.failure is not None else jd.prob
        info = {"compared": 1, "failure": jd.failure, "agreement": jd.agreement}
    else:
        collector = _collector_for(judge, group_size, group_timeout_s, reference)
        ((prob, info),) = await collector.add([question], [response])
    reward = None if prob is None else transform(prob, output)
    return verl_result(reward, info.get("compared", 0), info.get("agreement"), failure_reward)
