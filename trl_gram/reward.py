"""``GenerativeRewardFunction``: a GRAM judge as a reward in TRL's ``reward_funcs`` contract.

Works with ``GRPOTrainer``, ``RLOOTrainer``, the experimental ``OnlineDPOTrainer`` and our ``GramPPOTrainer``: it is a
plain callable (not an ``nn.Module``, which TRL would mistake for a classifier), returns one float or ``None`` per
completion, and accepts ``prompts``, ``completions``, ``completion_ids``, dataset columns, ``trainer_state``,
``log_extra`` and ``log_metric``.

How a completion gets a scalar (its win probability against something):

* ``references=[...]`` passed by the trainer (our PPO passes the policy's greedy responses) or
  ``reference_column="col"`` (a dataset column such as a reference answer): one comparison per completion.
* ``reference="group"``: every pair within a group of completions of the same prompt (equal prompts wherever they
  are in the batch, see [`~pairing.groups`]); a completion scores its mean win probability against the rest of its
  group. Cost per group of G: G(G-1)/2 pairs, i.e. G(G-1) judge passes with ``swap="both"`` (56 for G = 8).
* ``reference="pivot"``: the cheaper variant: each completion against the group's first one (G-1 pairs, 2(G-1)
  passes); the pivot scores its mean win probability against the others.
* ``reference="pairs"``: completion i against completion i + N/2, the layout of ``OnlineDPOTrainer`` (which calls
  with the prompts doubled). ``"group"`` gives the same comparisons there, since each prompt appears twice.

Fewer comparisons per group (see ``docs/reward.md``): ``schedule="sparse"`` (each completion meets
``schedule_degree`` others instead of all), ``aggregate="bradley_terry"`` (one ranking model fitted to the whole
group's verdicts), ``second_order="adaptive"`` (the second order only where the first is uncertain or decisive) and
``length_control=True`` ([`~pairing.ComparisonConfig`]). The judge passes spent are logged as
``<name>/judge_calls`` and the share saved against all pairs in both orders as ``<name>/judge_calls_saved``.

Pairing, aggregation and output scales live in [`~pairing`], shared with the reward server; the orders in
[`~adaptive`].
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Sequence

from transformers.utils import logging

from . import adaptive, pairing
from .judge import GramJudge, PairJudgment
from .judge_metrics import is_undefined, judgment_summary

logger = logging.get_logger(__name__)

REFERENCES = (None, "references", "group", "pivot", "pairs")
OUTPUTS = pairing.OUTPUTS


class GenerativeRewardFunction:
    r"""
    A GRAM judge as a TRL reward function (`reward_funcs=[...]` of `GRPOTrainer`, [`~trl_gram.GramPPOTrainer`], ...).

    Args:
        judge ([`~trl_gram.judge.GramJudge`], [`~trl_gram.judge.JudgeSpec`], `str` or `None`, *optional*):
            A loaded judge; a spec, a model path or Hub id (loaded on first call by [`~trl_gram.judge.load_judge`]);
            or `None` for the embedded default model (loaded on first call).
        reference (`str`, *optional*):
            How completions are compared (see the module docstring): `None` (use `references` passed by the trainer,
            else `reference_column`), `"group"`, `"pivot"`, `"pairs"`.
        reference_column (`str`, *optional*):
            Dataset column holding, per row, the response to compare each completion with.
        output (`str`, *optional*, defaults to `"prob"`):
            `"prob"` (win probability in [0, 1]), `"logit"` (its log-odds) or `"centered"` (prob − 0.5).
        on_failure (`str` or `float`, *optional*):
            What a completion gets when none of its comparisons could be parsed (reason mode): `None` (TRL then
            ignores it for this reward), a float, `"prob"` (use the probability read at the forced answer slot anyway)
            or `"retry"` (judge again with `retry_votes` sampled rationales, then `None`).
        retry_votes (`int`, *optional*, defaults to `3`):
            Sampled rationales per order when retrying.
        judge_kwargs (`dict`, *optional*):
            [`~trl_gram.judge.JudgeSpec`] fields when `judge` is a path or `None` (e.g.
            `{"mode": "direct", "load_in_4bit": True}`; `{"backend": "vllm", "tensor_parallel_size": 2}` judges on
            `vllm.LLM`).
        mode (`str`, *optional*):
            Per-call override of the judge's mode.
        swap (`str`, *optional*):
            Per-call override of the judge's swap.
        votes (`int`, *optional*):
            Per-call override of the judge's votes.
        gather_groups (`bool`, *optional*, defaults to `True`):
            Under several processes a group can be split across ranks: gather the whole batch so groups are complete
            (`True`), or raise (`False`). Never judges a partial group.
        log_rationales (`bool`, *optional*, defaults to `True`):
            Send each completion's first rationale to `log_extra` (the completions table).
        name (`str`, *optional*, defaults to `"gram_reward"`):
            The reward's name (`__name__`), used by TRL in logs.

        schedule, schedule_degree, aggregate, second_order, second_order_margin, max_judge_calls_per_group,
        extra_votes, length_control, schedule_seed (*optional*):
            How a group is compared and its verdicts aggregated (see [`~pairing.ComparisonConfig`]; the defaults are
            all pairs, both orders, mean win probability). `schedule` applies to `reference="group"`; the others to
            every comparison.

    Example:

    ```python
    >>> from trl_gram import GenerativeRewardFunction
    >>> reward = GenerativeRewardFunction(judge_kwargs={"mode": "direct"}, reference="group")
    >>> prompts = ["What is 2 + 2?", "What is 2 + 2?"]
    >>> rewards = reward(prompts, ["4", "5"])  # one per completion: its mean win probability in its group
    >>> len(rewards), sum(rewards)  # within a group of two, the win probabilities sum to one
    (2, 1.0)
    ```
    """

    def __init__(
        self,
        judge: GramJudge | str | None = None,
        *,
        reference: str | None = None,
        reference_column: str | None = None,
        output: str = "prob",
        on_failure: str | float | None = None,
        retry_votes: int = 3,
        judge_kwargs: dict | None = None,
        mode: str | None = None,
        swap: str | None = None,
        votes: int | None = None,
        gather_groups: bool = True,
        log_rationales: bool = True,
        name: str = "gram_reward",
        schedule: str = "all",
        schedule_degree: int = 4,
        aggregate: str = "mean",
        second_order: str = "always",
        second_order_margin: float = 0.2,
        max_judge_calls_per_group: int | None = None,
        extra_votes: int = 0,
        length_control: bool = False,
        schedule_seed: int = 0,
    ):
        if reference not in REFERENCES:
            raise ValueError(f"`reference` must be one of {REFERENCES}, got {reference!r}.")
        if reference in ("group", "pivot", "pairs") and reference_column is not None:
            raise ValueError(f"Pass either `reference={reference!r}` or `reference_column`, not both.")
        if output not in OUTPUTS:
            raise ValueError(f"`output` must be one of {OUTPUTS}, got {output!r}.")
        if not (on_failure in (None, "none", "prob", "retry") or isinstance(on_failure, (int, float))):
            raise ValueError(f"`on_failure` must be None, a number, 'prob' or 'retry', got {on_failure!r}.")
        from .judge.spec import JudgeSpec

        if not (judge is None or isinstance(judge, (str, JudgeSpec)) or callable(getattr(judge, "judge", None))):
            raise ValueError(
                f"`judge` must be a GramJudge, a JudgeSpec, a model path/id or None, got {type(judge).__name__}."
            )
        self.comparison = pairing.ComparisonConfig(
            schedule=schedule,
            schedule_degree=schedule_degree,
            aggregate=aggregate,
            second_order=second_order,
            second_order_margin=second_order_margin,
            max_judge_calls_per_group=max_judge_calls_per_group,
            extra_votes=extra_votes,
            length_control=length_control,
            schedule_seed=schedule_seed,
        )
        if schedule != "all" and reference not in ("group", None):
            raise ValueError(f"`schedule={schedule!r}` thins the pairs of `reference='group'`, not of {reference!r}.")
        if second_order == "adaptive" and swap not in (None, "both"):
            raise ValueError(f"`second_order='adaptive'` chooses the orders itself; leave `swap` unset, not {swap!r}.")
        self._rng = random.Random(schedule_seed)
        self.last_cost: adaptive.JudgeCost | None = None
        self.reference = reference
        self.reference_column = reference_column
        self.output = output
        self.on_failure = None if on_failure == "none" else on_failure
        self.retry_votes = retry_votes
        self.judge_kwargs = dict(judge_kwargs or {})
        self.call_overrides = {k: v for k, v in (("mode", mode), ("swap", swap), ("votes", votes)) if v is not None}
        self.gather_groups = gather_groups
        self.log_rationales = log_rationales
        self.__name__ = name
        loaded = judge is not None and not isinstance(judge, (str, JudgeSpec))
        self._judge_spec = None if loaded else judge
        self._judge = judge if loaded else None
        self._owns_judge = self._judge is None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------------------------------------
    @property
    def judge(self) -> GramJudge:
        """The judge, loaded on first use."""
        if self._judge is None:
            from .judge import load_judge

            self._judge = load_judge(self._judge_spec, **self.judge_kwargs)
        return self._judge

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_lock"] = None
        if self._owns_judge:
            state["_judge"] = None  # loaded from the spec: reloaded lazily in the new process
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self):
        ref = (
            self.reference_column and f"reference_column={self.reference_column!r}" or f"reference={self.reference!r}"
        )
        changed = {
            f: getattr(self.comparison, f)
            for f in pairing.COMPARISON_FIELDS
            if getattr(self.comparison, f) != getattr(pairing.ComparisonConfig(), f)
        }
        extra = "".join(f", {k}={v!r}" for k, v in changed.items())
        return f"{type(self).__name__}(name={self.__name__!r}, {ref}, output={self.output!r}{extra})"

    # ---------------------------------------------------------------------------------------------------------------
    def __call__(
        self,
        prompts: Sequence,
        completions: Sequence,
        completion_ids: Sequence | None = None,
        trainer_state=None,
        log_extra=None,
        log_metric=None,
        references: Sequence | None = None,
        **columns,
    ) -> list[float | None]:
        """Score completions (TRL's reward-function call).

        Args:
            prompts (`list`):
                One prompt per completion (text or chat messages).
            completions (`list`):
                The completions (text or chat messages).
            references (`list`, *optional*):
                One reference response per completion to compare it with (else `reference` / `reference_column`).
            log_extra (`callable`, *optional*):
                Provided by the trainer: logs the rationales to the completions table.
            log_metric (`callable`, *optional*):
                Provided by the trainer: logs parse-failure rate, swap agreement and judged pairs
                ([`~trl_gram.judge_metrics.judgment_summary`]).
            **columns:
                The dataset's other columns (e.g. `reference_column`).

        Returns:
            `list[float | None]`: one reward per completion on the `output` scale; `None` where it could not be
            scored (see `on_failure`).
        """
        with self._lock:
            return self._score(prompts, completions, references, columns, log_extra, log_metric)

    def _score(self, prompts, completions, references, columns, log_extra, log_metric) -> list[float | None]:
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"`prompts` has {len(prompts)} items but `completions` has {n}; pass one per completion.")
        for i, c in enumerate(completions):
            if c is None:
                raise ValueError(f"`completions[{i}]` is None.")
        if n == 0:
            return []

        comparisons, how, total = self._plan(prompts, completions, references, columns)
        judgments = self._judge_all(comparisons)
        probs, failed, first_pair = self._aggregate(total, comparisons, judgments)
        if self.comparison.length_control:
            texts = {**{c[4]: c[3] for c in comparisons if c[4] is not None}, **{c[0]: c[2] for c in comparisons}}
            lengths = [pairing.text_length(texts[k]) if k in texts else 0 for k in range(total)]
            probs = pairing.length_controlled(
                probs, lengths, pairing.components(total, [(c[0], c[4]) for c in comparisons])
            )
        if how == "gathered":
            probs, failed, first_pair = self._local_slice(probs, failed, first_pair)
        self._log(first_pair, judgments, log_extra, log_metric)
        numeric = isinstance(self.on_failure, (int, float)) and not isinstance(self.on_failure, bool)
        out = []
        for p, f in zip(probs, failed):
            if p is not None:
                out.append(self._transform(p))
            else:
                out.append(float(self.on_failure) if (f and numeric) else None)
        return out

    # ---------------------------------------------------------------------------------------------------------------
    def _plan(self, prompts, completions, references, columns):
        """The comparisons ``(i, question, response_i, other, j)`` (``other`` the text compared with, ``j`` the index
        of the other completion or ``None``), ``"local"``/``"gathered"``, and the number of completions indexed."""
        reference = self.reference
        if reference in (None, "references") and references is not None:
            if len(references) != len(completions):
                raise ValueError(
                    f"`references` has {len(references)} items but there are {len(completions)} completions."
                )
            return self._against(prompts, completions, references, "references"), "local", len(completions)
        if self.reference_column is not None:
            if self.reference_column not in columns:
                raise ValueError(
                    f"`reference_column={self.reference_column!r}` is not among the dataset columns passed to the "
                    f"reward: {sorted(columns)}."
                )
            refs = columns[self.reference_column]
            if len(refs) != len(completions):
                raise ValueError(
                    f"Column {self.reference_column!r} has {len(refs)} values for {len(completions)} completions."
                )
            return (
                self._against(prompts, completions, refs, f"column {self.reference_column!r}"),
                "local",
                len(completions),
            )
        if reference in (None, "references"):
            raise ValueError(
                "Nothing to compare the completions with: pass `reference='group'|'pivot'|'pairs'`, a "
                "`reference_column`, or call with `references=[...]`."
            )
        how = "local"
        if reference in ("group", "pivot"):
            prompts, completions, how = self._maybe_gather(prompts, completions)
        n = len(completions)
        if reference == "pairs":
            if n % 2:
                raise ValueError(f"`reference='pairs'` needs an even number of completions, got {n}.")
            half = n // 2
            return [(i, prompts[i], completions[i], completions[i + half], i + half) for i in range(half)], how, n
        # OnlineDPO's doubled prompts need no special case: equal prompts anywhere form a group, so the groups are
        # exactly the pairs (i, i + N/2).
        return pairing.plan(prompts, completions, reference=reference, settings=self.comparison, rng=self._rng), how, n

    @staticmethod
    def _against(prompts, completions, refs, what):
        out = []
        for i, ref in enumerate(refs):
            if ref is None or (isinstance(ref, str) and not ref.strip()):
                raise ValueError(
                    f"Reference {i} ({what}) is empty; every completion needs a reference to compare with."
                )
            out.append((i, prompts[i], completions[i], ref, None))
        return out

    def _maybe_gather(self, prompts, completions):
        from accelerate import PartialState

        state = PartialState()
        if state.num_processes <= 1:
            return prompts, completions, "local"
        if not self.gather_groups:
            raise RuntimeError(
                f"reference={self.reference!r} under {state.num_processes} processes: a group of completions may be "
                "split across ranks and would be judged partially. Set `gather_groups=True`."
            )
        from accelerate.utils import gather_object

        self._local_n = len(completions)
        self._local_counts = gather_object([len(completions)])
        self._rank = state.process_index
        return gather_object(list(prompts)), gather_object(list(completions)), "gathered"

    def _local_slice(self, *columns):
        start = sum(self._local_counts[: self._rank])
        end = start + self._local_n
        return tuple(c[start:end] for c in columns)

    # ---------------------------------------------------------------------------------------------------------------
    def _judge_all(self, comparisons) -> list[PairJudgment]:
        self.last_cost = None
        if not comparisons:
            return []
        judge = self.judge
        q = [c[1] for c in comparisons]
        a = [c[2] for c in comparisons]
        b = [c[3] for c in comparisons]
        judgments, self.last_cost = adaptive.run_sync(
            judge, comparisons, self.comparison, self.call_overrides, use_failed=self.on_failure == "prob"
        )
        if self.on_failure == "retry":
            failed = [k for k, jd in enumerate(judgments) if jd.failure is not None]
            if failed:
                again = judge.judge(
                    [q[k] for k in failed],
                    [a[k] for k in failed],
                    [b[k] for k in failed],
                    **{**self.call_overrides, "votes": self.retry_votes},
                )
                for k, jd in zip(failed, again):
                    judgments[k] = jd
        return judgments

    def _aggregate(self, n, comparisons, judgments):
        """Mean win probability per completion over its usable comparisons (``None`` when it has none), whether it
        had comparisons that all failed, and the first judgment involving each completion."""
        result = pairing.score_completions(
            n, comparisons, judgments, use_failed=self.on_failure == "prob", method=self.comparison.aggregate
        )
        return result.probs, result.failed, result.first

    def _transform(self, value: float) -> float:
        return pairing.transform(value, self.output)

    def _log(self, first_pair, judgments, log_extra, log_metric):
        if log_extra is not None and self.log_rationales:
            log_extra(f"{self.__name__}_rationale", [jd.rationale if jd is not None else "" for jd in first_pair])
        if log_metric is not None and judgments:
            summary = judgment_summary(judgments)
            for key in ("parse_failure_rate", "swap_agreement"):
                if not is_undefined(summary[key]):  # no run, or no pair judged in both orders: not logged
                    log_metric(f"{self.__name__}/{key}", summary[key])
            log_metric(f"{self.__name__}/judged_pairs", float(len(judgments)))
            if self.last_cost is not None:
                log_metric(f"{self.__name__}/judge_calls", float(self.last_cost.judge_calls))
                log_metric(f"{self.__name__}/judge_calls_saved", float(self.last_cost.saved))


class AsyncGenerativeRewardFunction(GenerativeRewardFunction):
    """[`GenerativeRewardFunction`] with ``async def __call__``: TRL runs it concurrently with other async
    rewards; judging happens in a worker thread so the event loop stays free."""

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
    ):
        return await asyncio.to_thread(
            GenerativeRewardFunction.__call__,
            self,
            prompts,
            completions,
            completion_ids,
            trainer_state,
            log_extra,
            log_metric,
            references,
            **columns,
        )
