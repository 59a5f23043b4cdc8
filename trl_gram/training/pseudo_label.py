"""Pseudo-labels of a self-training round: the current judge labels unlabeled pairs, the denoising rules keep the
trustworthy ones, and the kept pairs become training rows with a rationale.

Each record of [`pseudo_label`] (a line of ``predictions.jsonl``) holds the judge's label, its confidence, the label of
every run, and the judge's own rationale of a run that agrees with the label (written for the pair's order).
[`select`] applies [`~trl_gram.training.denoise.denoise`] and counts why each dropped pair was dropped.
"""

from __future__ import annotations

from collections.abc import Callable

from .denoise import Candidate, DenoiseRules, denoise, swap_label_mentions


def pair_row(question, first, second, label: int, rationale: str | None, label_words) -> dict:
    """A training row of the judge: the pair in the order shown, its label word and (optionally) a rationale."""
    row = {"prompt": question, "response_a": first, "response_b": second, "label": label_words[label]}
    if rationale is not None:
        row["rationale"] = rationale
    return row


def pseudo_label(judge, batch: list[dict], label_words) -> list[dict]:
    """Judge each pair of ``batch`` (validated pairs: ``question``/``first``/``second``) and record its pseudo-label.

    Args:
        judge ([`~trl_gram.GramJudge`]):
            The current judge, set up with the round's swap, votes and temperature.
        batch (`list[dict]`):
            The round's unlabeled pairs.
        label_words (`tuple[str, str]`):
            The template's label words (first response, second response).
    """
    judgments = judge.judge([p["question"] for p in batch], [p["first"] for p in batch], [p["second"] for p in batch])
    records = []
    for p, j in zip(batch, judgments):
        label = j.label
        conf = None if j.prob != j.prob else (j.prob if label == label_words[0] else 1.0 - j.prob)
        votes = [None if run.winner is None else label_words[run.winner - 1] for run in j.runs]
        rationale = None
        for run in j.runs:  # the judge's own rationale, from a run agreeing with the label, in pair order
            if run.failure is None and run.winner is not None and label_words[run.winner - 1] == label:
                text = run.rationale
                rationale = swap_label_mentions(text, label_words) if run.order == "BA" else text
                break
        records.append(
            {
                "prompt": p["question"],
                "response_a": p["first"],
                "response_b": p["second"],
                "label": label,
                "confidence": conf,
                "votes": votes,
                "judge_rationale": rationale,
            }
        )
    return records


def select(
    records: list[dict],
    rules: DenoiseRules,
    label_words,
    count_tokens: Callable[[str], int],
    source: str,
    prove: Callable | None = None,
) -> tuple[list[dict], dict]:
    """The kept training rows of a round's records, and the count of each drop reason.

    Args:
        records (`list[dict]`):
            The records of [`pseudo_label`].
        rules ([`~trl_gram.training.denoise.DenoiseRules`]):
            The denoising rules.
        label_words (`tuple[str, str]`):
            The template's label words.
        count_tokens (`Callable[[str], int]`):
            Tokens of a rationale (the length rule).
        source (`str`):
            Where the kept rows' rationales come from: ``"judge"`` (its own), ``"prover"`` (a proof of the
            pseudo-label: `prove` is required) or ``"none"`` (direct judges).
        prove (`Callable`, *optional*):
            [`~trl_gram.training.prover.PreferenceProver.prove`] of the prover.
    """
    cands = [
        Candidate(rec["label"], rec["confidence"], rec["votes"], rec["judge_rationale"] if source == "judge" else None)
        for rec in records
    ]
    reasons, counts = denoise(cands, rules, label_words, count_tokens)
    keep = [i for i, reason in enumerate(reasons) if reason is None]
    rows = []
    if source == "prover" and keep:
        proofs = prove(
            [records[i]["prompt"] for i in keep],
            [records[i]["response_a"] for i in keep],
            [records[i]["response_b"] for i in keep],
            [records[i]["label"] for i in keep],
        )
        counts["no_valid_proof"] = 0
        for i, proof in zip(keep, proofs):
            if proof.rationale is None:
                counts["no_valid_proof"] += 1
                continue
            rec = records[i]
            label = label_words.index(rec["label"])
            rows.append(
                pair_row(rec["prompt"], rec["response_a"], rec["response_b"], label, proof.rationale, label_words)
            )
    else:
        for i in keep:
            rec = records[i]
            rationale = rec["judge_rationale"] if source == "judge" else None
            label = label_words.index(rec["label"])
            rows.append(pair_row(rec["prompt"], rec["response_a"], rec["response_b"], label, rationale, label_words))
    counts["kept"] = len(rows)
    counts["candidates"] = len(records)
    return rows, counts
