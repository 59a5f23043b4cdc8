"""Reward functions for verl that call a trl-gram reward server (``trl-gram serve``).

Point verl's reward loop at this file::

    custom_reward_function.path=$(python -c "import trl_gram.serving.verl as m; print(m.__file__)")
    custom_reward_function.name=compute_score               # naive reward manager: one call per response
    +custom_reward_function.reward_kwargs.url=http://judge-host:8000
    # or, all responses of a step at once (GRPO groups compared with each other):
    reward_model.reward_manager=batch custom_reward_function.name=compute_score_batch

The judge needs the question: put it in each row's ``extra_info`` under ``question`` (verl keeps ``extra_info`` from the
dataset parquet). With a non-empty ``ground_truth`` (a reference answer) a response scores its win probability
against it; otherwise ``compute_score_batch`` compares the responses to the same question with each other. The URL
and token can also come from ``TRL_GRAM_URL`` / ``TRL_GRAM_API_KEY``.
"""

from __future__ import annotations

import os


def _settings(url, api_key):
    url = url or os.environ.get("TRL_GRAM_URL")
    if not url:
        raise ValueError("No reward server URL: pass `url=` (reward_kwargs) or set TRL_GRAM_URL.")
    api_key = api_key or os.environ.get("TRL_GRAM_API_KEY")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return url.rstrip("/") + "/reward", headers


def _question(extra_info, key, i=None) -> str:
    if not isinstance(extra_info, dict) or not isinstance(extra_info.get(key), (str, list)):
        where = "extra_info" if i is None else f"extra_infos[{i}]"
        raise ValueError(f"`{where}` has no `{key}`: put the question in each row's extra_info for the judge.")
    return extra_info[key]


def _post(url, headers, payload, timeout, retries) -> list:
    import httpx

    last = None
    for _ in range(retries + 1):
        try:
            response = httpx.post(url, json=payload, headers=headers, timeout=timeout)
            if response.status_code == 200:
                return response.json()["rewards"]
            last = f"HTTP {response.status_code}: {response.text[:300]}"
            if response.status_code < 500 and response.status_code != 429:
                break
        except httpx.HTTPError as e:
            last = repr(e)
    raise RuntimeError(f"trl-gram reward server call failed: {last}")


def compute_score(
    data_source,
    solution_str,
    ground_truth,
    extra_info=None,
    *,
    url=None,
    api_key=None,
    question_key="question",
    failure_reward=0.5,
    timeout=300.0,
    retries=3,
    **kwargs,
) -> float:
    """verl ``compute_score`` for one response: its win probability against ``ground_truth``."""
    if not isinstance(ground_truth, str) or not ground_truth.strip():
        raise ValueError(
            "`compute_score` needs a reference answer in `ground_truth`; use `compute_score_batch` "
            "to compare responses with each other."
        )
    endpoint, headers = _settings(url, api_key)
    payload = {
        "prompts": [_question(extra_info, question_key)],
        "completions": [solution_str],
        "references": [ground_truth],
    }
    reward = _post(endpoint, headers, payload, timeout, retries)[0]
    return failure_reward if reward is None else float(reward)


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
    timeout=600.0,
    retries=3,
    **kwargs,
) -> list[float]:
    """verl ``compute_score`` for the batch reward manager: against references when every row has one, otherwise
    within groups of the same question."""
    endpoint, headers = _settings(url, api_key)
    questions = [_question(info, question_key, i) for i, info in enumerate(extra_infos)]
    payload = {"prompts": questions, "completions": list(solution_strs), "reference": reference}
    if ground_truths is not None and all(isinstance(g, str) and g.strip() for g in ground_truths):
        payload["references"] = list(ground_truths)
    rewards = _post(endpoint, headers, payload, timeout, retries)
    return [failure_reward if r is None else float(r) for r in rewards]
