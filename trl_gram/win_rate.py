"""Win rate of a policy against a reference, judged by GRAM: per-pair judging (a local judge or a reward server), the
summary statistics, and reward-hacking flags that need no oracle.

A pair is (prompt, current completion, reference completion). Its score is the judge's position-debiased
``P(current is better)`` (both orders judged); a pair whose two completions are identical is a tie (0.5) and is not
sent to the judge. [`summarize`] turns a list of [`PairResult`] into the logged numbers:

* ``win_rate``: mean ``P(current better)`` over the prompts, with ``win_rate_stderr`` its standard error over
  prompts; ``win_fraction``: share of prompts the current policy wins outright (ties count half);
* ``swap_agreement``: share of judged pairs whose two orders prefer the same completion; ``parse_failure_rate``:
  share of judge runs whose verdict could not be parsed (reason mode);
* ``completion_length`` / ``reference_length``: mean length in tokens; ``identical_rate``: share of ties;
* length drift: ``length_win_correlation`` (Pearson correlation of ``P - 0.5`` with the log length ratio
  ``log((current + 1) / (reference + 1))`` over the judged pairs) and ``length_matched_win_rate`` (win rate among pairs of about equal length);
* against the first evaluation with judged pairs (the baseline): ``swap_agreement_drop`` and
  ``parse_failure_increase``, and 0/1 flags ``flag_length_drift``, ``flag_swap_agreement``, ``flag_parse_failures``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from accelerate.utils import is_trackio_available, is_wandb_available
from transformers.utils import logging

from .http_client import RemoteCallError, RetryPolicy, bearer_headers, list_field, post_json
from .judge_metrics import agreement_rate, is_undefined

logger = logging.get_logger(__name__)

# The summary keys the callback logs (with its prefix, `eval_` by default)
LOGGED = (
    "win_rate",
    "win_rate_stderr",
    "win_fraction",
    "swap_agreement",
    "parse_failure_rate",
    "completion_length",
    "reference_length",
    "identical_rate",
    "length_win_correlation",
    "length_matched_win_rate",
    "swap_agreement_drop",
    "parse_failure_increase",
    "flag_length_drift",
    "flag_swap_agreement",
    "flag_parse_failures",
)
FLAG_MESSAGES = {
    "flag_length_drift": "the win rate tracks the length difference (length_win_correlation={:.2f})",
    "flag_swap_agreement": "the judge's swap agreement fell by {:.2f} since the first evaluation",
    "flag_parse_failures": "the judge's parse failures rose by {:.2f} since the first evaluation",
}
FLAG_VALUES = {
    "flag_length_drift": "length_win_correlation",
    "flag_swap_agreement": "swap_agreement_drop",
    "flag_parse_failures": "parse_failure_increase",
}


@dataclass
class PairResult:
    """The judge's verdict on one (current, reference) pair.

    Args:
        prob (`float` or `None`): ``P(current is better)``; ``None`` when the judge returned no probability.
        agreement (`bool` or `None`): whether both orders prefer the same completion (``None``: undefined).
        parse_failure_rate (`float`): share of this pair's judge runs that could not be parsed.
        rationale (`str`): the judge's first rationale (empty in direct mode).
        judged (`bool`): ``False`` for a tie between identical completions, not sent to the judge.
        current_length (`int`), reference_length (`int`): completion lengths in tokens.
    """

    prob: float | None
    agreement: bool | None
    parse_failure_rate: float
    rationale: str
    judged: bool
    current_length: int
    reference_length: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HackingThresholds:
    """When the reward-hacking flags fire.

    Args:
        length_correlation (`float`): ``flag_length_drift`` when ``length_win_correlation`` reaches this.
        min_pairs (`int`): fewest judged pairs for the length correlation to count.
        swap_agreement_drop (`float`): ``flag_swap_agreement`` when swap agreement fell by this much.
        parse_failure_increase (`float`): ``flag_parse_failures`` when the parse-failure rate rose by this much.
        length_tolerance (`float`): two completions are "length-matched" when their lengths differ by at most this
            fraction of the longer one.
    """

    length_correlation: float = 0.5
    min_pairs: int = 5
    swap_agreement_drop: float = 0.1
    parse_failure_increase: float = 0.1
    length_tolerance: float = 0.1


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def centered_moments(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """``(sxy, sxx, syy)``: sums of products of deviations from the means (zeros for fewer than two points). The
    length-win correlation below and the reward's length control ([`~pairing.length_controlled`]) both read them."""
    if len(xs) < 2:
        return 0.0, 0.0, 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy, sxx, syy


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    sxy, sxx, syy = centered_moments(xs, ys)
    if sxx <= 0 or syy <= 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def summarize(
    results: Sequence[PairResult], baseline: dict | None = None, thresholds: HackingThresholds | None = None
) -> dict[str, float | None]:
    """The win-rate statistics of one evaluation (see the module docstring); ``None`` where undefined.

    Args:
        results (`list[PairResult]`): one per prompt.
        baseline (`dict`, *optional*): the summary of the first evaluation with judged pairs, for the drift flags.
        thresholds ([`HackingThresholds`], *optional*): when the flags fire.
    """
    t = thresholds or HackingThresholds()
    scored = [r for r in results if r.prob is not None]
    probs = [r.prob for r in scored]
    judged = [r for r in results if r.judged]
    out: dict[str, float | None] = {"num_prompts": float(len(results)), "num_judged": float(len(judged))}
    win = _mean(probs)
    out["win_rate"] = win
    if len(probs) >= 2:
        var = sum((p - win) ** 2 for p in probs) / (len(probs) - 1)
        out["win_rate_stderr"] = math.sqrt(var / len(probs))
    else:
        out["win_rate_stderr"] = None
    out["win_fraction"] = _mean([1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5 for p in probs])
    agreement = agreement_rate(r.agreement for r in judged)  # the judge metric, NaN when undefined
    out["swap_agreement"] = None if is_undefined(agreement) else agreement
    out["parse_failure_rate"] = _mean([r.parse_failure_rate for r in judged])
    out["completion_length"] = _mean([float(r.current_length) for r in results])
    out["reference_length"] = _mean([float(r.reference_length) for r in results])
    out["identical_rate"] = _mean([0.0 if r.judged else 1.0 for r in results])

    pairs = [r for r in judged if r.prob is not None]
    log_ratios = [math.log((r.current_length + 1) / (r.reference_length + 1)) for r in pairs]
    corr = _pearson([r.prob - 0.5 for r in pairs], log_ratios)
    out["length_win_correlation"] = corr
    matched = [
        r.prob
        for r in scored
        if abs(r.current_length - r.reference_length) <= t.length_tolerance * max(r.current_length, r.reference_length)
    ]
    out["length_matched_win_rate"] = _mean(matched)
    out["flag_length_drift"] = float(corr is not None and len(pairs) >= t.min_pairs and corr >= t.length_correlation)

    drop = increase = None
    if baseline is not None:
        if baseline.get("swap_agreement") is not None and out["swap_agreement"] is not None:
            drop = baseline["swap_agreement"] - out["swap_agreement"]
        if baseline.get("parse_failure_rate") is not None and out["parse_failure_rate"] is not None:
            increase = out["parse_failure_rate"] - baseline["parse_failure_rate"]
    out["swap_agreement_drop"] = drop
    out["parse_failure_increase"] = increase
    out["flag_swap_agreement"] = float(drop is not None and drop >= t.swap_agreement_drop - 1e-9)
    out["flag_parse_failures"] = float(increase is not None and increase >= t.parse_failure_increase - 1e-9)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Judging
# ----------------------------------------------------------------------------------------------------------------------
def _as_pair_results(judgments, current_lengths, reference_lengths) -> list[PairResult]:
    """[`PairResult`] from [`~trl_gram.judge.PairJudgment`]-like objects (``prob``, ``agreement``, ``rationale`` and
    ``parse_failure_rate`` attributes) or from the server's JSON dicts."""
    out = []
    for jd, lc, lr in zip(judgments, current_lengths, reference_lengths):
        if isinstance(jd, dict):  # the reward server's /judge answer
            prob, agreement, rationale = jd.get("prob"), jd.get("agreement"), jd.get("rationale") or ""
            failure_rate = 0.0 if jd.get("failure") is None else 1.0
        else:
            prob, agreement, rationale = jd.prob, jd.agreement, jd.rationale
            failure_rate = float(getattr(jd, "parse_failure_rate", 0.0))
        if prob is not None and math.isnan(prob):
            prob = None
        out.append(PairResult(prob, agreement, failure_rate, rationale, True, lc, lr))
    return out


def judge_pairs(judge, prompts, current, reference, current_lengths, reference_lengths) -> list[PairResult]:
    """Judge each current completion against its reference (both orders), ties between identical texts skipped.

    Args:
        judge: a [`~trl_gram.judge.GramJudge`] (or any object with its ``judge(questions, responses_1, responses_2,
            swap=)`` method) or a [`RemoteJudge`].
        prompts, current, reference (`list`): one item per pair (text or chat messages).
        current_lengths, reference_lengths (`list[int]`): token lengths, reported per pair.
    """
    results: list[PairResult | None] = [None] * len(prompts)
    todo = []
    for i, (c, r) in enumerate(zip(current, reference)):
        if c == r:
            results[i] = PairResult(0.5, None, 0.0, "", False, current_lengths[i], reference_lengths[i])
        else:
            todo.append(i)
    if todo:
        judgments = judge.judge(
            [prompts[i] for i in todo], [current[i] for i in todo], [reference[i] for i in todo], swap="both"
        )
        if len(judgments) != len(todo):
            raise RuntimeError(f"The judge returned {len(judgments)} verdicts for {len(todo)} pairs.")
        scored = _as_pair_results(judgments, [current_lengths[i] for i in todo], [reference_lengths[i] for i in todo])
        for i, res in zip(todo, scored):
            results[i] = res
    return results  # type: ignore[return-value]


class RemoteJudge:
    """A judge behind a trl-gram reward server (``trl-gram serve``), called through its ``POST /judge`` endpoint in
    batches of ``{"pairs": [...]}``, with retries on connection errors, timeouts, 429 and 5xx answers.

    Args:
        url (`str`): the server, e.g. ``"http://judge-host:8000"`` (``/judge`` is appended unless already there).
        api_key (`str`, *optional*): bearer token, if the server was started with one.
        timeout (`float`): time budget of one request in seconds, retries included.
        retries (`int`): cap on extra attempts after a failed one.
        backoff (`float`): first retry delay in seconds, doubled at each retry ([`~http_client.RetryPolicy`]).
        max_pairs_per_request (`int`): pairs sent per request.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 300.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_pairs_per_request: int = 64,
    ):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"`url` must be an http(s) URL, got {url!r}.")
        if max_pairs_per_request < 1:
            raise ValueError(f"`max_pairs_per_request` must be positive, got {max_pairs_per_request}.")
        base = url.rstrip("/")
        self.url = base if base.endswith("/judge") else base + "/judge"
        self.api_key = api_key
        self.policy = RetryPolicy(timeout=timeout, retries=retries, backoff=backoff)
        self.max_pairs_per_request = max_pairs_per_request

    def __repr__(self):
        return f"{type(self).__name__}(url={self.url!r})"

    def _post(self, client, payload: dict) -> list[dict]:
        try:
            return post_json(
                client,
                self.url,
                payload,
                policy=self.policy,
                headers=bearer_headers(self.api_key),
                validate=list_field("results", len(payload["pairs"])),
            )
        except RemoteCallError as e:
            raise RuntimeError(f"The judge server could not judge: {e}") from e

    def judge(self, questions, responses_1, responses_2, swap: str = "both", **_) -> list[dict]:
        """The server's verdicts (dicts with ``prob`` = P(response_1 better), ``label``, ``rationale``,
        ``agreement``, ``failure``), one per pair."""
        import httpx

        pairs = [
            {"question": q, "response_a": a, "response_b": b} for q, a, b in zip(questions, responses_1, responses_2)
        ]
        out = []
        with httpx.Client() as client:
            for start in range(0, len(pairs), self.max_pairs_per_request):
                chunk = pairs[start : start + self.max_pairs_per_request]
                out.extend(self._post(client, {"pairs": chunk, "swap": swap}))
        return out


# ----------------------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------------------
def flags_fired(history: Sequence[dict]) -> list[str]:
    """The reward-hacking flags raised in any of the summaries."""
    return [flag for flag in FLAG_MESSAGES if any(h.get(flag) for h in history)]


def flag_message(summary: dict, flag: str) -> str:
    return FLAG_MESSAGES[flag].format(summary[FLAG_VALUES[flag]])


def describe_history(history: Sequence[dict], header: str) -> list[str]:
    """Printable lines: one per evaluation (win rate ± standard error, ties, swap agreement, parse failures, lengths),
    then the flags that fired."""
    if not history:
        return [header, "    not evaluated"]
    lines = [header]
    for h in history:
        extra = [f"identical {h['identical_rate']:.2f}"]
        if h["swap_agreement"] is not None:
            extra.append(f"swap agreement {h['swap_agreement']:.2f}")
        if h["parse_failure_rate"] is not None:
            extra.append(f"parse failures {h['parse_failure_rate']:.3f}")
        extra.append(f"length {h['completion_length']:.1f} vs {h['reference_length']:.1f} tokens")
        stderr = h["win_rate_stderr"] or 0.0
        lines.append(f"    step {h['step']:>5}: {h['win_rate']:.3f} ± {stderr:.3f}  ({', '.join(extra)})")
    fired = flags_fired(history)
    lines.append("    reward-hacking flags: " + (", ".join(fired) if fired else "none"))
    return lines


def write_table(rows: list[dict], folder: str, step: int, report_to: Sequence[str] = ()) -> None:
    """The completions table of one evaluation: ``folder/completions_{step:05d}.jsonl`` always, and a table logged to
    wandb / trackio when they are in ``report_to`` (as TRL's trainers log their completions)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"completions_{step:05d}.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    backends = []
    if "wandb" in report_to and is_wandb_available():
        import wandb

        if wandb.run is not None:
            backends.append(wandb)
    if "trackio" in report_to and is_trackio_available():
        import trackio

        backends.append(trackio)
    if backends:
        import pandas as pd

        frame = pd.DataFrame(rows)
        for backend in backends:
            backend.log({"win_rate_completions": backend.Table(dataframe=frame)})
