"""A scripted judge for the evaluation tests: each response text carries its quality as ``q<number>``; the judge
prefers the higher quality (probability 1, 0, or one half on equal quality). A response containing ``biased`` makes
the judge prefer whichever response is shown first (a position-biased verdict)."""

from __future__ import annotations

import json
import re

from trl_gram.judge import JudgeRun, combine_runs
from trl_gram.templates import GRAM_R2_TEMPLATE


def _quality(text) -> int:
    if isinstance(text, list):
        text = " ".join(m.get("content", "") for m in text)
    m = re.search(r"q(\d+)", text)
    return int(m.group(1)) if m else 0


class ScriptedJudge:
    template = GRAM_R2_TEMPLATE

    def __init__(self):
        self.calls = 0

    def _run(self, order, first, second):
        if "biased" in first or "biased" in second:
            p = 1.0
        else:
            qa, qb = _quality(first), _quality(second)
            p = 1.0 if qa > qb else 0.0 if qa < qb else 0.5
        return JudgeRun(order=order, prob_first=p, label="A" if p >= 0.5 else "B")

    def judge(self, questions, responses_1, responses_2, swap="both", show_progress=None, **_):
        self.calls += 1
        out = []
        for a, b in zip(responses_1, responses_2):
            runs = [self._run("AB", a, b)]
            if swap == "both":
                runs.append(self._run("BA", b, a))
            out.append(combine_runs(runs, ("A", "B")))
        return out


def write_rows(path, rows, kind="jsonl"):
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path
